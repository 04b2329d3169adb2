"""Exceptions shown to users. Each names the file, key or plugin at fault."""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the CLI prints without a traceback (exit status 2)."""


class PluginError(HarnessError):
    """A plugin failed to load, registered a duplicate name, or is unknown."""


class SuiteError(HarnessError):
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


class DataError(HarnessError):
    """A data file is missing or corrupt. The message names the file and line."""


class HarnessWarning(UserWarning):
    """Something went wrong that costs no measured result (the CLI prints it as one line)."""
