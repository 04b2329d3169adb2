"""Exceptions shown to users. Each names the file, key or plugin at fault."""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the CLI prints without a traceback (exit status 2)."""


class PluginError(HarnessError):
    """A plugin failed to load, registered a duplicate name, or is unknown."""


class BadInput(HarnessError):
    """The fault is in the user's input (a suite, a data file, a plugin's parameters), not a
    crash: a cell that fails with one is ``bad input`` and a run whose every failure is one
    exits 2. ``entry``: the suite entry (``harness.suite.Entry``) whose input it is, when known."""

    entry: object = None

    def __init__(self, *args: object, entry: object = None) -> None:
        super().__init__(*args)
        self.entry = entry


class Unsupported(PluginError):
    """This compression cannot take this model, which shows only once the model is loaded (it
    has no stack of transformer blocks; its layers are already shared). The core records the
    cell ``skipped`` with the message as its reason, not ``failed``; a chain step's keeps it."""


class ParameterError(PluginError, BadInput, ValueError):
    """A plugin rejected the parameters a suite entry gave it. ``key``: the key path below the
    entry's ``params`` (``"rank"``), ``""`` for a check across parameters. A ``ValueError`` too,
    as a plugin's own checks were before parameters were declared."""

    def __init__(self, *args: object, entry: object = None, key: str = "") -> None:
        super().__init__(*args, entry=entry)
        self.key = key


class SuiteError(BadInput):
    """A suite file is malformed or invalid. The message names the file and key path."""

    def __init__(self, message: str, *, path: object = None, key: str | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}"
            if key:
                where += f": {key}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.key = key


class DataError(BadInput):
    """A data file is missing or corrupt. The message names the file and line."""


class HarnessWarning(UserWarning):
    """Something went wrong that costs no measured result (the CLI prints it as one line)."""


class RunFailed(HarnessError):
    """A run could not go on for a reason outside the input (a full disk): one line, exit 1."""

    exit_status = 1


class FolderInUse(HarnessError):
    """Another process holds the results folder's lock (``harness run`` on the same ``--out``)."""
