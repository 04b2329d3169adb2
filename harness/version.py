"""The harness version: the one source is the installed package's metadata (``pyproject.toml``).

A leaf module (it imports nothing of harness), so any module can import it without a cycle
through the package's ``__init__``."""

from __future__ import annotations


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("harness-bench")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


__version__ = _package_version()
