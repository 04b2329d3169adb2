"""File-system helpers the core shares, and plugins may use: one way to replace a file atomically,
one way to publish a finished folder (a cache entry).

A reader (or a process killed mid-write) sees the old file or the new one, never half of it:
the bytes go to a temporary file in the same folder, are flushed and fsynced, and then
``os.replace`` swaps it in (atomic on POSIX and on Windows within one volume).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "publish_dir"]


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating its folder); return the path.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL on a fresh name (not mkstemp): the file gets the usual umask permissions
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write` for text."""
    return atomic_write(path, text.encode(encoding))


def publish_dir(tmp: str | Path, final: str | Path, *, complete: str) -> bool:
    """Rename the finished folder ``tmp`` to ``final`` in one step (a reader sees no folder or a
    complete one). If another process published ``final`` first (its ``complete`` file, e.g.
    ``meta.json``, exists), theirs is kept, ``tmp`` removed, and False returned; any other
    failure raises."""
    tmp, final = Path(tmp), Path(final)
    try:
        os.replace(tmp, final)
        return True
    except OSError:
        if not (final / complete).is_file():
            raise
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return False
