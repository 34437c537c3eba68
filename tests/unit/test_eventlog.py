"""The durable event log: round trip, group commit, segments, torn-tail recovery, corruption,
one writer per directory, committed offsets, and no acknowledged event lost on kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from recsys.serving.eventlog import (
    HEADER, CommittedOffset, CorruptLogError, EventLog, EventLogError, EventLogReader, list_segments,
)


def payloads(log_dir: Path, start: int = 0) -> list[bytes]:
    return [r.payload for r in EventLogReader(log_dir).read(start)]


def test_appended_records_read_back_in_order_with_offsets(tmp_path):
    with EventLog(tmp_path / "log") as log:
        assert [log.append(f"e{i}".encode()) for i in range(5)] == [0, 1, 2, 3, 4]
        assert log.append_many([b"x", b"y"]) == [5, 6]
    records = list(EventLogReader(tmp_path / "log").read())
    assert [r.offset for r in records] == list(range(7))
    assert payloads(tmp_path / "log", start=5) == [b"x", b"y"]
    assert [r.payload for r in EventLogReader(tmp_path / "log").read(2, max_records=2)] == [b"e2", b"e3"]


def test_concurrent_appends_share_fsyncs_and_get_distinct_offsets(tmp_path):
    offsets: list[int] = []
    lock = threading.Lock()
    with EventLog(tmp_path / "log") as log:
        def worker(t: int) -> None:
            for i in range(50):
                off = log.append(f"{t}:{i}".encode())
                with lock:
                    offsets.append(off)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        commits = log.commits
    assert sorted(offsets) == list(range(400))
    assert commits < 400  # group commit: fewer fsyncs than appends
    got = payloads(tmp_path / "log")
    assert sorted(got) == sorted(f"{t}:{i}".encode() for t in range(8) for i in range(50))


def test_segments_roll_and_reopening_continues_the_offsets(tmp_path):
    with EventLog(tmp_path / "log", segment_bytes=1024) as log:
        for i in range(100):
            log.append(b"%03d" % i + b"." * 40)
    assert len(list_segments(tmp_path / "log")) > 3
    with EventLog(tmp_path / "log", segment_bytes=1024) as log:
        assert log.next_offset == 100
        assert log.append(b"after") == 100
    got = payloads(tmp_path / "log")
    assert len(got) == 101 and got[-1] == b"after" and got[37].startswith(b"037")
    assert payloads(tmp_path / "log", start=60)[0].startswith(b"060")
    assert EventLogReader(tmp_path / "log").end_offset() == 101


def test_recovery_truncates_a_torn_tail_and_keeps_every_complete_record(tmp_path):
    with EventLog(tmp_path / "log") as log:
        for i in range(10):
            log.append(b"ok%d" % i)
    (_, segment), = list_segments(tmp_path / "log")
    size = segment.stat().st_size
    with open(segment, "ab") as f:  # a record cut short by a crash: header and half the payload
        f.write(HEADER.pack(100, 0) + b"half")
    assert payloads(tmp_path / "log") == [b"ok%d" % i for i in range(10)]  # readers stop at the tail
    with EventLog(tmp_path / "log") as log:
        assert segment.stat().st_size == size
        assert log.append(b"next") == 10
    assert payloads(tmp_path / "log")[-2:] == [b"ok9", b"next"]


def test_a_bad_crc_inside_a_sealed_segment_is_reported_not_skipped(tmp_path):
    with EventLog(tmp_path / "log", segment_bytes=256) as log:
        for i in range(40):
            log.append(b"record-%02d" % i + b"!" * 20)
    _, first = list_segments(tmp_path / "log")[0]
    data = bytearray(first.read_bytes())
    data[HEADER.size + 2] ^= 0xFF  # flip a payload byte of record 0
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="record 0 .*CRC"):
        list(EventLogReader(tmp_path / "log").read())


def test_one_writer_per_directory(tmp_path):
    with EventLog(tmp_path / "log"):
        with pytest.raises(EventLogError, match="locked by another writer"):
            EventLog(tmp_path / "log").open()
    EventLog(tmp_path / "log").open().close()  # the lock is released on close


def test_append_after_close_raises(tmp_path):
    log = EventLog(tmp_path / "log").open()
    log.close()
    with pytest.raises(EventLogError, match="not open"):
        log.append(b"late")


def test_committed_offset_round_trips_atomically(tmp_path):
    store = CommittedOffset(tmp_path / "consumer" / "offset")
    assert store.load() == 0
    store.commit(42)
    assert store.load() == 42 and not (tmp_path / "consumer" / "offset.tmp").exists()
    (tmp_path / "consumer" / "offset").write_text("garbage")
    with pytest.raises(EventLogError, match="not an offset"):
        store.load()


CHILD = textwrap.dedent("""
    import sys, threading
    from recsys.serving.eventlog import EventLog
    log = EventLog(sys.argv[1]).open()
    out_lock = threading.Lock()
    def writer(t):
        for i in range(100000):
            key = f"{t}-{i}"
            log.append(key.encode())
            with out_lock:  # printed only once the record is durable: an acknowledgement
                sys.stdout.write(key + "\\n"); sys.stdout.flush()
    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    [t.start() for t in threads]; [t.join() for t in threads]
""")


def test_no_acknowledged_event_is_lost_on_kill_9(tmp_path):
    log_dir = tmp_path / "log"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(log_dir)], stdout=subprocess.PIPE, text=True)
    acked = []
    deadline = time.monotonic() + 60
    while len(acked) < 300 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(line.strip())
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream: appends in flight, maybe a torn tail
    proc.wait()
    assert len(acked) >= 300, "the child stopped acknowledging before it was killed"
    stored = {p.decode() for p in payloads(log_dir)}
    assert set(acked) <= stored
    with EventLog(log_dir) as log:  # recovery after the crash, then the log goes on
        n = log.next_offset
        assert log.append(b"after-crash") == n
    assert set(acked) <= {p.decode() for p in payloads(log_dir)}
