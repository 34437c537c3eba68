"""Durable file primitives for the registry: atomic replace, durable append, advisory locks.

POSIX only (``fcntl.flock``). A lock taken with :class:`FileLock` is released by the kernel when
its process dies, which is what lets the registry tell a crashed writer's leftovers from a live
writer's work in progress.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: a reader sees the old bytes or the new ones, never a mix.

    Write a temporary file beside it, fsync it, ``os.replace`` it over ``path``, and (``durable``)
    fsync the directory. Without the directory fsync a power loss may undo the replacement (the
    old bytes come back, whole), which suits bookkeeping that is rebuilt from a durable source. A
    crash leaves at most a ``.<name>.tmp-*`` file, which :func:`remove_stale_temps` cleans.
    """
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def remove_stale_temps(directory: Path, name: str) -> None:
    """Remove temporaries left by a crashed :func:`write_atomic` of ``directory / name``.

    Call only while holding the lock that serialises writers of that file.
    """
    for tmp in directory.glob(f".{name}.tmp-*"):
        tmp.unlink(missing_ok=True)


def append_line(path: Path, line: str) -> None:
    """Append one line durably. A torn last line (crash mid-write) is terminated first, so it
    never glues onto the next record; readers skip it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        prefix = b""
        if size and os.pread(fd, 1, size - 1) != b"\n":
            prefix = b"\n"
        os.write(fd, prefix + line.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing), as a context manager.

    ``blocking=False`` raises :class:`BlockingIOError` when another holder has it.
    """

    def __init__(self, path: Path, *, blocking: bool = True) -> None:
        self.path = path
        self.blocking = blocking
        self._fd: int | None = None

    def acquire(self) -> "FileLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def still_linked(self) -> bool:
        """Whether ``path`` still names the file we locked (another process may have unlinked
        it between our open and our flock, leaving us a lock that protects nothing)."""
        if self._fd is None:
            return False
        try:
            return os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except FileNotFoundError:
            return False

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
