"""A durable, append-only event log: what was served and what users did with it.

Layout: a directory of segment files ``segment-<first offset, 20 digits>.log`` and a ``LOCK``
file. A record is ``u32 length | u32 crc32(payload) | payload`` (little endian); its *offset* is
its sequence number in the log (0, 1, 2, ...), so a segment's name says the offset of its first
record. One writer per directory (an exclusive ``flock`` on ``LOCK``, released by the kernel
even on kill -9); any number of readers.

Durability: :meth:`EventLog.append` returns only after the record is written *and* fsync'd.
Appends from many threads are group-committed, leader style (as LevelDB's writers): an appender
that finds no commit in flight becomes the leader, writes every record queued so far with one
``write`` and makes them durable with one ``fdatasync``, outside the lock, then acknowledges them
all; appenders that arrive meanwhile queue and wait, and one of them leads the next commit. So an
acknowledged record survives kill -9 (and power loss, as far as the disk honours fsync), and
throughput grows with concurrency instead of being one fsync per event. Why no writer thread: a
request thread handing its record to a writer and waiting to be woken costs two thread switches
per request, which under the GIL of a busy server cost more than the write itself; an uncontended
leader does its own write with none.

Recovery (:meth:`EventLog.open`): a crash can leave the last segment with a torn tail (a record
written in part, or written but never fsync'd and so never acknowledged). Opening scans the last
segment and truncates it after its last complete record whose CRC matches; nothing that was
acknowledged is before the first bad record, because records are acknowledged in order.

Readers (:class:`EventLogReader`) iterate records from an offset, stopping quietly at an
incomplete record at the very end (a write in progress) and raising
:class:`CorruptLogError` for a bad record anywhere else. A reader may see a record that is
written but not yet fsync'd; consumers are at-least-once anyway (:class:`CommittedOffset`).
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from recsys.errors import RecsysError

HEADER = struct.Struct("<II")  # payload length, crc32(payload)
MAX_RECORD_BYTES = 16 << 20
SEGMENT_PREFIX, SEGMENT_SUFFIX = "segment-", ".log"
LOCK_NAME = "LOCK"


class EventLogError(RecsysError):
    """The event log cannot take or give records (locked, closed, failed, timed out)."""


class CorruptLogError(EventLogError):
    """A record inside the log (not at its tail) is incomplete or fails its CRC."""


@dataclass(frozen=True)
class Record:
    offset: int
    payload: bytes


def segment_name(base: int) -> str:
    return f"{SEGMENT_PREFIX}{base:020d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """``(first offset, path)`` of every segment, ascending."""
    out = []
    for path in Path(directory).glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"):
        digits = path.name[len(SEGMENT_PREFIX):-len(SEGMENT_SUFFIX)]
        if digits.isdigit():
            out.append((int(digits), path))
    return sorted(out)


def _scan(data: bytes) -> tuple[int, int]:
    """``(complete valid records, bytes they span)`` from the start of a segment's bytes."""
    pos = count = 0
    while pos + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if length > MAX_RECORD_BYTES or end > len(data) or zlib.crc32(data[pos + HEADER.size:end]) != crc:
            break
        pos, count = end, count + 1
    return count, pos


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Pending:
    """One append's records and, once its commit ends, their offsets or the error."""

    __slots__ = ("payloads", "offsets", "error")

    def __init__(self, payloads: list[bytes]):
        self.payloads = payloads
        self.offsets: list[int] | None = None
        self.error: EventLogError | None = None

    @property
    def done(self) -> bool:
        return self.offsets is not None or self.error is not None


class EventLog:
    """The single writer of one log directory.

    Parameters
    ----------
    directory : the log directory (created by :meth:`open`).
    segment_bytes : a segment is closed and a new one started once it holds this many bytes.
    max_batch : most records written and fsync'd together by one group commit.
    fsync : False only for benchmarks that measure the cost of fsync itself.

    The constructor only stores settings; :meth:`open` takes the lock and recovers.
    """

    def __init__(self, directory: str | Path, *, segment_bytes: int = 64 << 20, max_batch: int = 4096,
                 fsync: bool = True):
        if segment_bytes < HEADER.size + 1:
            raise ValueError(f"segment_bytes={segment_bytes}: too small")
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.max_batch = max_batch
        self.fsync = fsync
        self._waiting: deque[_Pending] = deque()  # queued for the next commit, in offset order
        self._committing = False  # a leader is writing (outside the lock)
        self._open = False
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._segment_size = 0
        self._next_offset = 0
        self._failure: BaseException | None = None
        self._closing = False
        self._changed = threading.Condition(threading.Lock())  # guards the fields above
        self.commits = 0  # group commits (fsyncs) so far
        self.appended = 0  # records acknowledged so far

    # ---------------------------------------------------------------- lifecycle
    def open(self) -> "EventLog":
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise EventLogError(f"event log {self.directory} is locked by another writer "
                                "(one writer per directory: give each worker its own)") from None
        self._lock_fd = lock_fd
        segments = list_segments(self.directory)
        if not segments:
            self._start_segment(0)
        else:
            base, path = segments[-1]
            data = path.read_bytes()
            count, valid = _scan(data)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            if valid < len(data):  # a torn or unacknowledged tail: cut it off, durably
                os.ftruncate(self._fd, valid)
                os.fsync(self._fd)
            self._segment_size = valid
            self._next_offset = base + count
        self._open = True
        return self

    def close(self) -> None:
        """Let the appends already queued commit, then stop; later appends raise."""
        with self._changed:
            if not self._open or self._closing:
                return
            self._closing = True
            while self._committing or self._waiting:  # their appenders lead the commits
                self._changed.wait()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> "EventLog":
        return self if self._open else self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def next_offset(self) -> int:
        """The offset the next record will get (records acknowledged so far, since the start)."""
        return self._next_offset

    # ---------------------------------------------------------------- appending
    def append(self, payload: bytes, timeout: float | None = None) -> int:
        """Append one record; return its offset once it is durable."""
        return self.append_many([payload], timeout)[0]

    def append_many(self, payloads: Sequence[bytes], timeout: float | None = None) -> list[int]:
        """Append records (contiguously); return their offsets once all are durable.

        Raises :class:`EventLogError` when the log is closed or failed, or when ``timeout``
        seconds pass first: records still queued then are withdrawn (never written); records
        already in a commit may still become durable (not acknowledged is not the same as not
        written).
        """
        for p in payloads:
            if len(p) > MAX_RECORD_BYTES:
                raise EventLogError(f"record of {len(p)} bytes > {MAX_RECORD_BYTES}")
        pending = _Pending(list(payloads))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            if not self._open or self._closing:
                raise EventLogError(f"event log {self.directory} is not open")
            if self._failure is not None:
                raise EventLogError(f"event log {self.directory} failed: {self._failure}")
            self._waiting.append(pending)
            while not pending.done:
                if not self._committing:
                    self._lead()
                    continue
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    if pending in self._waiting:
                        self._waiting.remove(pending)
                    raise EventLogError(f"event log {self.directory}: not durable within {timeout:.3f}s")
                self._changed.wait(left)
        if pending.error is not None:
            raise pending.error
        return pending.offsets

    # ---------------------------------------------------------------- committing (the leader)
    def _lead(self) -> None:
        """Commit the queued records. Called and returning with the lock held; it is released
        during the write and the fsync, so others can queue meanwhile."""
        batch, n = [], 0
        while self._waiting and (n == 0 or n + len(self._waiting[0].payloads) <= self.max_batch):
            batch.append(self._waiting.popleft())
            n += len(batch[-1].payloads)
        self._committing = True
        self._changed.release()
        try:
            self._commit(batch)
        finally:
            self._changed.acquire()
            for p in batch:  # an unexpected error in the commit: no appender waits forever
                if not p.done:
                    p.error = EventLogError(f"event log {self.directory}: commit did not finish")
            self._committing = False
            self._changed.notify_all()

    def _commit(self, batch: list[_Pending]) -> None:
        if self._failure is not None:
            for p in batch:
                p.error = EventLogError(f"event log {self.directory} failed: {self._failure}")
            return
        start_size = self._segment_size
        try:
            data = b"".join(HEADER.pack(len(x), zlib.crc32(x)) + x for p in batch for x in p.payloads)
            _write_all(self._fd, data)
            if self.fsync:
                os.fdatasync(self._fd)
        except OSError as exc:
            try:  # leave no partial batch behind: the log stays a prefix of what was acknowledged
                os.ftruncate(self._fd, start_size)
            except OSError:
                pass
            self._failure = exc
            for p in batch:
                p.error = EventLogError(f"event log {self.directory}: write failed: {exc}")
            return
        self._segment_size += len(data)
        self.commits += 1
        for p in batch:
            first = self._next_offset
            self._next_offset += len(p.payloads)
            self.appended += len(p.payloads)
            p.offsets = list(range(first, self._next_offset))
        if self._segment_size >= self.segment_bytes:
            try:
                os.close(self._fd)
                self._start_segment(self._next_offset)
            except OSError as exc:
                self._failure = exc

    def _start_segment(self, base: int) -> None:
        path = self.directory / segment_name(base)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fsync_dir(self.directory)  # the new file's name is durable before any record in it
        self._segment_size = 0
        self._next_offset = base


class EventLogReader:
    """Reads the records of one log directory from an offset (while a writer may append)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def read(self, start: int = 0, max_records: int | None = None) -> Iterator[Record]:
        """Records with offset >= ``start`` up to the current end, at most ``max_records``."""
        if start < 0:
            raise ValueError(f"start={start}: offsets are >= 0")
        left = max_records
        while True:
            segments = list_segments(self.directory)
            if not segments:
                return
            # the segment holding `start`: the last one whose first offset is <= start
            first = max((i for i, (b, _) in enumerate(segments) if b <= start), default=0)
            ended_in = segments[-1][0]
            for i in range(first, len(segments)):
                base, path = segments[i]
                for rec in self._read_segment(base, path, start, last=i == len(segments) - 1):
                    if left is not None:
                        if left <= 0:
                            return
                        left -= 1
                    start = rec.offset + 1
                    yield rec
            # the writer may have started a newer segment while the last one was read
            if list_segments(self.directory)[-1][0] == ended_in:
                return

    def end_offset(self) -> int:
        """The offset after the last complete record."""
        segments = list_segments(self.directory)
        if not segments:
            return 0
        base, path = segments[-1]
        return base + _scan(path.read_bytes())[0]

    def _read_segment(self, base: int, path: Path, start: int, last: bool) -> Iterator[Record]:
        with open(path, "rb") as f:
            offset, pos = base, 0
            while True:
                header = f.read(HEADER.size)
                if not header:
                    return
                bad = None
                if len(header) < HEADER.size:
                    bad = "incomplete header"
                else:
                    length, crc = HEADER.unpack(header)
                    if length > MAX_RECORD_BYTES:
                        bad = f"length {length} > {MAX_RECORD_BYTES}"
                    elif offset < start:
                        f.seek(length, os.SEEK_CUR)
                        if f.tell() > os.fstat(f.fileno()).st_size:
                            bad = "incomplete payload"
                    else:
                        payload = f.read(length)
                        if len(payload) < length:
                            bad = "incomplete payload"
                        elif zlib.crc32(payload) != crc:
                            bad = "CRC mismatch"
                if bad is not None:
                    if last:
                        return  # the tail: being written now, or torn (the writer's recovery cuts it)
                    raise CorruptLogError(f"{path}: record {offset} at byte {pos}: {bad}")
                if offset >= start:
                    yield Record(offset, payload)
                offset += 1
                pos += HEADER.size + length


class CommittedOffset:
    """A consumer's committed offset in a file: written atomically (temp, fsync, rename)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> int:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0
        if not text.isdigit():
            raise EventLogError(f"committed offset file {self.path} holds {text!r}, not an offset")
        return int(text)

    def commit(self, offset: int) -> None:
        if offset < 0:
            raise ValueError(f"offset={offset}: offsets are >= 0")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(f"{offset}\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        _fsync_dir(self.path.parent)
