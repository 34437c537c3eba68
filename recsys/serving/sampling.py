"""Feature samples, logged off the request path: a bounded queue and one thread that computes a
sampled request's ranker rows, encodes them and appends them to the event log.

Why a thread: recomputing the rows and encoding k shown items x ~30 features as JSON costs a
few hundred microseconds; with a 1% sample, doing it inline would put that cost into the request
path's p99. The served list is still made durable by the request itself, before the answer, as always;
a sample is best effort: when the queue is full (the log slower than the traffic) a sample is
dropped and counted, and a request never waits for one.
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import datetime

from recsys.serving import events
from recsys.serving.domain import FeatureSample
from recsys.serving.eventlog import EventLog
from recsys.serving.metrics import Metrics

logger = logging.getLogger("recsys.serving.samples")
_STOP = object()


class FeatureSampleLogger:
    """Appends ``features`` records for the lists that carry a :class:`FeatureSample`.

    The thread starts with the first sample (a server that samples nothing runs none);
    :meth:`close` logs what is queued and stops it, and must run before the event log closes.
    """

    def __init__(self, event_log: EventLog, metrics: Metrics, *, capacity: int = 1000, timeout: float = 5.0):
        self.event_log = event_log
        self.metrics = metrics
        self.timeout = timeout
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self._closed = False

    def submit(self, request_id: str, sample: FeatureSample, served_at: datetime) -> None:
        with self._guard:
            if self._closed:
                self.metrics.feature_samples.labels(outcome="dropped").inc()
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="feature-samples", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait((request_id, sample, served_at))
        except queue.Full:
            self.metrics.feature_samples.labels(outcome="dropped").inc()

    def close(self, timeout: float | None = None) -> None:
        with self._guard:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            request_id, sample, served_at = item
            try:
                ids, rows = sample.compute()
                record = events.features_record(request_id, sample, served_at, ids, rows)
                self.event_log.append(events.encode(record), self.timeout)
                outcome = "logged"
            except Exception as exc:  # a sample never takes serving down: counted, logged, skipped
                logger.warning("feature sample not logged", extra={"fields": {
                    "request_id": request_id, "error": f"{type(exc).__name__}: {exc}"}})
                outcome = "failed"
            self.metrics.feature_samples.labels(outcome=outcome).inc()
