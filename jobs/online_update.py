"""The online updater job: fold feedback into user embeddings and real-time restaurant state.

``python -m jobs.online_update [--once] [--batch 500] [--poll-seconds 1] [--data-dir DIR] [--config FILE]``

Reads every event log under ``<data_dir>/<serving.event_log_dir>`` (one ``worker-<i>`` directory
per server worker) from the consumer's committed offset of that log
(``<data_dir>/online_update/<log>.offset``), in micro-batches of at most ``--batch`` records per
log, and hands each batch to :class:`recsys.online.OnlineUpdater`. A log's offset is committed
only after the batch's online writes succeeded: at-least-once. On start, the records before the
committed offsets are replayed into the updater's state without writing, so a restart resumes
where it stopped and counts nothing twice. ``--once`` stops when every log is caught up.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from recsys.config import Config, load_config
from recsys.errors import RecsysError
from recsys.online import BatchResult, LogEvent, OnlineUpdater
from recsys.online.updater import summary
from recsys.serving.eventlog import CommittedOffset, EventLogReader
from recsys.serving.settings import resolve_dir
from recsys.serving.sink import log_dirs

logger = logging.getLogger("jobs.online_update")
CONSUMER_DIR = "online_update"
REPLAY_CHUNK = 10_000
FRESHNESS_WINDOW = 100_000  # the most recent freshness samples kept (a long run must not grow without bound)


@dataclass
class UpdateReport:
    batches: int = 0
    records: int = 0
    users_written: int = 0
    restaurants_written: int = 0
    unmatched: int = 0
    busy_seconds: float = 0.0  # in OnlineUpdater.process (not reading the logs, not idle)
    offsets: dict[str, int] = field(default_factory=dict)
    # receipt -> online write, ms, of the latest menu feedback (BatchResult.freshness_ms)
    freshness_ms: deque = field(default_factory=lambda: deque(maxlen=FRESHNESS_WINDOW), repr=False)


def log_root(config: Config) -> Path:
    return resolve_dir(config.data_dir, config.serving.event_log_dir)


def offset_file(config: Config, source: str) -> CommittedOffset:
    return CommittedOffset(config.data_dir / CONSUMER_DIR / f"{source}.offset")


def _read(directory: Path, source: str, start: int, limit: int) -> list[LogEvent]:
    return [LogEvent.decode(source, r.offset, r.payload) for r in EventLogReader(directory).read(start, limit)]


class OnlineUpdateJob:
    """Committed-offset consumption of the event logs into an :class:`OnlineUpdater`."""

    def __init__(self, config: Config, updater: OnlineUpdater, batch: int = 500):
        if batch < 1:
            raise ValueError(f"batch={batch}: must be >= 1")
        self.config, self.updater, self.batch = config, updater, batch
        self.report = UpdateReport()

    def start(self) -> OnlineUpdateJob:
        """Load the updater and replay every log up to its committed offset (no writes)."""
        if self.updater.model is None:
            self.updater.load()
        for source, directory in log_dirs(log_root(self.config)).items():
            committed = offset_file(self.config, source).load()
            start = 0
            while start < committed:
                chunk = _read(directory, source, start, min(REPLAY_CHUNK, committed - start))
                if not chunk:
                    break
                self.updater.replay(chunk)
                start = chunk[-1].offset + 1
            self.report.offsets[source] = committed
        return self

    def follow_serving(self) -> bool:
        """Reload (and replay) when the registry serves another version; True if it did.

        Rows are stamped with the serving version: writing the old one after a publish would
        make serving fall back for those users (version mismatch), so this runs before each batch.
        """
        from recsys.registry import Registry

        pointer = Registry.for_config(self.config).open().serving()
        if pointer is None or pointer.version == self.updater.version:
            return False
        logger.info("serving version %s -> %s: reloading", self.updater.version, pointer.version)
        self.updater = OnlineUpdater(self.config, clock=self.updater.clock, store=self.updater.store)
        self.start()
        return True

    def step(self) -> int:
        """One micro-batch per log (new logs included); returns the records consumed."""
        self.follow_serving()
        consumed = 0
        for source, directory in log_dirs(log_root(self.config)).items():
            committed = offset_file(self.config, source)
            start = committed.load()
            batch = _read(directory, source, start, self.batch)
            if not batch:
                continue
            result: BatchResult = self.updater.process(batch)  # returns after the writes succeeded
            end = batch[-1].offset + 1
            committed.commit(end)
            self.report.offsets[source] = end
            self.report.batches += 1
            self.report.records += len(batch)
            self.report.users_written += len(result.users)
            self.report.restaurants_written += len(result.restaurants)
            self.report.unmatched += result.unmatched
            self.report.busy_seconds += result.seconds
            self.report.freshness_ms.extend(result.freshness_ms)
            logger.info("batch %s [%d, %d): %s", source, start, end, summary(result))
            consumed += len(batch)
        return consumed

    def run(self, once: bool = False, poll_seconds: float = 1.0,
            stop: threading.Event | None = None) -> UpdateReport:
        """Consume until caught up (``once``) or until ``stop`` is set, sleeping ``poll_seconds``
        whenever every log is caught up."""
        stop = stop or threading.Event()
        while not stop.is_set():
            if self.step() == 0:
                if once:
                    break
                stop.wait(poll_seconds)
        return self.report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.online_update", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--once", action="store_true", help="stop when every log is caught up")
    parser.add_argument("--batch", type=int, default=500, help="records per micro-batch and log")
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(args.config, data_dir=args.data_dir)
        job = OnlineUpdateJob(config, OnlineUpdater(config), args.batch).start()
        report = job.run(once=args.once, poll_seconds=args.poll_seconds)
    except RecsysError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
