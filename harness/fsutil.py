"""File-system helpers the core shares, and plugins may use: one way to replace a file atomically,
one way to publish a finished folder (a cache entry), one way to turn a name into a file or
folder name (:func:`safe_name`), one lock for a folder one process writes (:class:`FolderLock`).

A reader (or a process killed mid-write) sees the old file or the new one, never half of it:
the bytes go to a temporary file in the same folder, are flushed and fsynced, and then
``os.replace`` swaps it in (atomic on POSIX and on Windows within one volume).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

__all__ = ["FolderLock", "atomic_write", "atomic_write_text", "build_and_publish", "discard_dir",
           "no_space", "publish_dir", "safe_name"]


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


#: default bound of :func:`safe_name`: three names, two separators and a suffix stay well under
#: the 255-byte limit of a file name on every common file system
SAFE_NAME_LEN = 64
_HASH_LEN = 12
_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")
#: names Windows reserves for devices, whatever the extension
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
             *(f"LPT{i}" for i in range(1, 10))}


def safe_name(text: str, max_len: int = SAFE_NAME_LEN) -> str:
    """A file or folder name for ``text`` (a model, task, compression, suite or plugin name).

    A name that is already safe and short (ASCII letters, digits, ``_``, ``-``, single dots
    inside, at most ``max_len`` characters) is returned as it is, so readable names stay
    readable. Any other name becomes a readable ASCII prefix plus ``-`` and 12 hex digits of
    the sha256 of the full name: the same name always maps to the same file, two names that
    share a long prefix stay distinct, and the result has at most ``max_len`` characters (all
    ASCII, so as many bytes), no ``/``, ``\\``, NUL, leading dot or ``..``; it is never ``.``,
    ``..`` or a Windows device name, so it cannot leave the folder it is joined to.
    """
    if max_len < _HASH_LEN + 2:
        raise ValueError(f"safe_name: max_len must be at least {_HASH_LEN + 2}, got {max_len}")
    text = str(text)
    if (len(text) <= max_len and _SAFE.fullmatch(text)
            and text.split(".")[0].upper() not in _RESERVED):
        return text
    import hashlib
    import unicodedata

    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    prefix = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text)
    prefix = re.sub(r"\.{2,}", ".", prefix).lstrip(".-")
    prefix = prefix[: max_len - _HASH_LEN - 1].rstrip(".")
    return f"{prefix}-{digest}" if prefix else digest


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
        shutil.rmtree(tmp, ignore_errors=True)
        return False


def build_and_publish(final: str | Path, fill: Callable[[Path], None], *, complete: str) -> bool:
    """Write the folder ``final`` (a cache entry) so that no reader sees half of it: ``fill(tmp)``
    writes its files into ``tmp``, a fresh empty sibling folder under a temporary name, then
    :func:`publish_dir` renames it into place (False: another process published ``final`` first
    and theirs is kept). The temporary folder is gone afterwards, whatever happened."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}"
    tmp.mkdir()
    try:
        fill(tmp)
        return publish_dir(tmp, final, complete=complete)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def discard_dir(folder: str | Path) -> bool:
    """Take a folder (a corrupt cache entry) away: renamed in one step to a hidden name, so no
    reader sees half of it, then removed. True when ``folder`` is gone (also when another
    process took it first); False when it cannot be moved (a read-only cache)."""
    folder = Path(folder)
    trash = folder.parent / f".{folder.name}.discarded-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        os.replace(folder, trash)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    shutil.rmtree(trash, ignore_errors=True)
    return True


def no_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a full disk or quota."""
    import errno

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


LOCK_FILE = ".harness.lock"


class FolderLock:
    """An exclusive OS lock (``flock``) on ``folder/.harness.lock``, held while a process writes
    the folder. The kernel drops it when the holder exits, ``kill -9`` included, so no lock is
    ever stale; the file keeps the holder's pid and start time for the message of whoever waits.
    Where ``fcntl`` does not exist (Windows) the lock is a no-op."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def holder(self) -> str:
        """``pid N since T`` as the holder wrote it, or ``an unknown process``."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            text = ""
        return text or "an unknown process"

    def acquire(self, wait_s: float = 0.0, on_wait=None) -> bool:
        """Take the lock, waiting up to ``wait_s`` seconds (``on_wait(holder)`` is called once
        when it has to wait); False when another process still holds it."""
        import time

        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline, told = time.monotonic() + max(wait_s, 0.0), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                if on_wait is not None and not told:
                    on_wait(self.holder())
                    told = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
