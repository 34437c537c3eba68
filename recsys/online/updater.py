"""Fold fresh feedback into the online store: user embeddings and real-time restaurant state.

Input: event-log records (:class:`LogEvent`: the log directory's name, the record's offset and
the decoded record of ``recsys.serving.events``), in micro-batches. Output, per batch:

* ``user_embedding`` rows of the users with new menu feedback: implicit's exact user solve with
  the serving menu model's item factors fixed (:meth:`ALSModel.recalculate_user`) on the user's
  confidences = the training interactions (clean impressions before the model's
  ``trained_until``, :func:`build_interactions`) + the impressions served since then and clicked
  or ordered, weighted as in training (``click * clicked + order * ordered`` per impression; an
  order implies a click, as in the sink). ``model_version`` = the serving version.
* ``restaurant_realtime`` rows (this class is the view's single writer): per restaurant, its item
  ids (the version's ``restaurant_candidates`` list, then any other clicked item), ``clicks_1h``
  aligned with them (impressions first clicked within the hour before ``now``) and ``available``
  (all 1: the event log has no availability events yet).

Idempotent: a record is applied once per (log, offset) — records below the log's applied
watermark are skipped — and each impression (request id, item) counts once however many click
events refer to it. Rows are a pure function of the applied records and ``now``, so reprocessing
a batch (at-least-once delivery) writes the same values. After a restart, :meth:`replay` the
records before the committed offsets to rebuild the state without writing.

The constructor stores settings; :meth:`load` reads the registry, the model and the impressions.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.config import Config
from recsys.errors import NotFoundError, RecsysError
from recsys.serving import events

logger = logging.getLogger("recsys.online")

MENU_MODEL = "menu_als.npz"
CLICK_WINDOW = timedelta(hours=1)
USER_VIEW, REALTIME_VIEW = "user_embedding", "restaurant_realtime"


class OnlineUpdateError(RecsysError):
    """The online updater cannot run (no serving version, model missing, used before load)."""


@dataclass(frozen=True)
class LogEvent:
    """One event-log record: ``source`` names its log directory (e.g. ``worker-0``)."""

    source: str
    offset: int
    record: dict

    @classmethod
    def decode(cls, source: str, offset: int, payload: bytes) -> LogEvent:
        return cls(source, offset, events.decode(payload))


@dataclass
class BatchResult:
    """What one :meth:`OnlineUpdater.process` call did."""

    applied: int = 0  # records applied (new to the state)
    skipped: int = 0  # records already applied (redelivered)
    feedback: int = 0
    unmatched: int = 0  # feedback whose served list is unknown (or a non-integer id)
    users: list[int] = field(default_factory=list)  # embeddings written
    restaurants: list[int] = field(default_factory=list)  # realtime rows written
    # Freshness, per applied menu feedback that changed a user's interactions: from the server's
    # receipt of the event (``received_us``, just before it logged and acknowledged it) to the end
    # of this batch's online writes, wall-clock ms. An upper bound of ack -> visible in the store.
    freshness_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0  # wall time of process(): apply, solves, writes


@dataclass
class _Impression:
    user_id: int
    restaurant_id: int | None
    item_id: int
    served_us: int
    clicked_us: int | None = None  # first click (or order) event time
    ordered: bool = False


class OnlineUpdater:
    """Micro-batch updater of user embeddings and restaurant real-time state.

    Parameters
    ----------
    config : the application configuration (registry, clean data, feature store, weights).
    clock : returns the current UTC time (``event_timestamp`` of the rows, end of the click window).
    store : a Feast ``FeatureStore``; by default :func:`open_store` on :meth:`load`.
    """

    def __init__(self, config: Config, *, clock: Callable[[], datetime] | None = None, store=None):
        self.config = config
        self.weights = config.training.weights
        self.clock = clock or (lambda: datetime.now(UTC))
        self.store = store
        self.version: str | None = None
        self.trained_until_us: int | None = None
        self.model = None
        self.history = None  # InteractionMatrix of the model's training interactions
        self.items_of: dict[int, list[int]] = {}
        self.watermark: dict[str, int] = {}
        self._served: dict[str, tuple[int | None, str, int | None, int]] = {}  # request -> user, surface, rest., ts
        self._impressions: dict[tuple[str, int], _Impression] = {}
        self._by_user: dict[int, set[tuple[str, int]]] = defaultdict(set)
        self._written_rt: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    # ---------------------------------------------------------------- loading
    def load(self) -> OnlineUpdater:
        """Read the serving version's menu model, its training interactions and candidate lists."""
        from recsys.features.store import open_store
        from recsys.registry import Registry
        from recsys.registry.publish import read_version_outputs
        from recsys.training.als import ALSModel
        from recsys.training.interactions import build_interactions, scan_impressions

        registry = Registry.for_config(self.config).open()
        pointer = registry.serving()
        if pointer is None:
            raise OnlineUpdateError(f"no serving version in the registry at {registry.root}: run the nightly first")
        meta = registry.show(pointer.version)
        path = registry.version_dir(pointer.version) / MENU_MODEL
        if not path.exists():
            raise NotFoundError(f"version {pointer.version} has no {MENU_MODEL} at {path}")
        model = ALSModel.load(path)
        self.history = build_interactions(scan_impressions(self.config.clean_dir), "menu", self.weights,
                                          until=meta.trained_until, user_ids=model.users.ids,
                                          entity_ids=model.entities.ids)
        frame = read_version_outputs(registry, pointer.version)["restaurant_candidates"]
        self.items_of = {int(r): [int(i) for i in ids] for r, ids in zip(frame["restaurant_id"], frame["item_ids"])}
        self.model, self.version = model, pointer.version
        self.trained_until_us = events.to_us(meta.trained_until)
        if self.store is None:
            self.store = open_store(self.config)
        return self

    def _check_loaded(self) -> None:
        if self.model is None:
            raise OnlineUpdateError("OnlineUpdater used before load()")

    # ---------------------------------------------------------------- state
    def replay(self, batch: Iterable[LogEvent]) -> BatchResult:
        """Apply records to the state without writing (rebuild after a restart)."""
        self._check_loaded()
        result = BatchResult()
        self._apply(list(batch), result)
        return result

    def _apply(self, batch: Sequence[LogEvent], result: BatchResult) -> tuple[set[int], set[int], list[int]]:
        """Fold new records into the state; the users and restaurants they changed, and the
        receipt times (us) of the feedback that changed a user."""
        fresh = []
        for ev in batch:
            if ev.offset < self.watermark.get(ev.source, 0):
                result.skipped += 1
            else:
                fresh.append(ev)
        # served lists first: feedback in the same batch (possibly from another worker's log) finds them
        for ev in fresh:
            r = ev.record
            if r["type"] == events.SERVED:
                self._served[r["request_id"]] = (_int(r["user_id"]), r["surface"], _int(r.get("restaurant_id")),
                                                 int(r["ts_us"]))
        users, restaurants, received = set(), set(), []
        for ev in fresh:
            r = ev.record
            if r["type"] != events.FEEDBACK:
                continue
            result.feedback += 1
            served = self._served.get(r["request_id"])
            item = _int(r["entity_id"])
            if served is None or served[0] is None or item is None:
                result.unmatched += 1
                continue
            user, surface, restaurant, served_us = served
            if surface != "menu":
                continue
            key = (r["request_id"], item)
            imp = self._impressions.get(key)
            if imp is None:
                imp = self._impressions[key] = _Impression(user, restaurant, item, served_us)
                self._by_user[user].add(key)
            ts = int(r["ts_us"])
            before = (imp.clicked_us, imp.ordered)
            imp.clicked_us = ts if imp.clicked_us is None else min(imp.clicked_us, ts)
            imp.ordered = imp.ordered or r["kind"] == "order"
            if (imp.clicked_us, imp.ordered) != before:
                users.add(user)
                received.append(int(r["received_us"]))
                if restaurant is not None:
                    restaurants.add(restaurant)
        for ev in fresh:
            self.watermark[ev.source] = max(self.watermark.get(ev.source, 0), ev.offset + 1)
        result.applied += len(fresh)
        return users, restaurants, received

    # ---------------------------------------------------------------- processing
    def process(self, batch: Iterable[LogEvent], now: datetime | None = None) -> BatchResult:
        """Apply a micro-batch and write the rows it changes; returns once the writes succeeded."""
        from recsys.features.bulk_write import write_online

        self._check_loaded()
        started = time.perf_counter()
        now = now or self.clock()
        result = BatchResult()
        users, restaurants, received = self._apply(list(batch), result)
        if users:
            frame = self.embeddings(sorted(users), now)
            write_online(self.store, USER_VIEW, frame)
            result.users = frame["user_id"].to_list()
        rt = self.realtime(restaurants, now)
        if rt.height:
            write_online(self.store, REALTIME_VIEW, rt)
            for r, ids, clicks in zip(rt["restaurant_id"], rt["item_ids"], rt["clicks_1h"]):
                self._written_rt[int(r)] = (tuple(ids), tuple(clicks))
            result.restaurants = rt["restaurant_id"].to_list()
        written_us = time.time_ns() // 1000
        result.freshness_ms = [(written_us - us) / 1000 for us in received]
        result.seconds = time.perf_counter() - started
        return result

    def user_row(self, user_id: int) -> sp.csr_matrix:
        """The user's confidences (training + new impressions) in the model's item index space."""
        self._check_loaded()
        row = self.history.rows([user_id]).toarray()[0].astype(np.float64)
        cols = self.model.entities.index(np.array([self._impressions[k].item_id for k in self._by_user[user_id]]
                                                  or [], dtype=np.int64))
        for key, col in zip(self._by_user[user_id], cols):
            imp = self._impressions[key]
            if col < 0 or imp.served_us < self.trained_until_us:  # unknown item; or already in training
                continue
            row[col] += self.weights.click * (imp.clicked_us is not None) + self.weights.order * imp.ordered
        return sp.csr_matrix(row.astype(np.float32)[None, :])

    def embeddings(self, user_ids: Sequence[int], now: datetime) -> pl.DataFrame:
        """``user_embedding`` rows of these users, recomputed from their interactions."""
        rows = [self.user_row(u) for u in user_ids]
        vectors = self.model.recalculate_users(sp.vstack(rows, format="csr")).tolist() if rows else []
        return pl.DataFrame({
            "user_id": pl.Series(list(user_ids), dtype=pl.Int64),
            "embedding": pl.Series(vectors, dtype=pl.List(pl.Float32)),
            "model_version": [self.version] * len(user_ids),
            "event_timestamp": pl.Series([now] * len(user_ids), dtype=pl.Datetime("us", "UTC")),
        })

    def realtime(self, touched: Iterable[int], now: datetime) -> pl.DataFrame:
        """``restaurant_realtime`` rows of the touched restaurants and of those whose clicks changed."""
        end_us = events.to_us(now)
        start_us = end_us - int(CLICK_WINDOW.total_seconds() * 1_000_000)
        counts: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for imp in self._impressions.values():
            if imp.restaurant_id is not None and imp.clicked_us is not None and start_us < imp.clicked_us <= end_us:
                counts[imp.restaurant_id][imp.item_id] += 1
        rows = []
        for r in sorted(set(touched) | set(counts) | set(self._written_rt)):
            base = self.items_of.get(r, [])
            ids = base + sorted(set(counts[r]) - set(base)) if r in counts else list(base)
            clicks = [counts[r].get(i, 0) for i in ids] if r in counts else [0] * len(ids)
            if r not in touched and self._written_rt.get(r) == (tuple(ids), tuple(clicks)):
                continue
            rows.append((r, ids, [1] * len(ids), clicks))
        return pl.DataFrame({
            "restaurant_id": pl.Series([r[0] for r in rows], dtype=pl.Int64),
            "item_ids": pl.Series([r[1] for r in rows], dtype=pl.List(pl.Int64)),
            "available": pl.Series([r[2] for r in rows], dtype=pl.List(pl.Int64)),
            "clicks_1h": pl.Series([r[3] for r in rows], dtype=pl.List(pl.Int64)),
            "event_timestamp": pl.Series([now] * len(rows), dtype=pl.Datetime("us", "UTC")),
        })

    def clicks_1h(self, restaurant_id: int, now: datetime) -> dict[int, int]:
        """Item -> clicks in the hour before ``now`` (what :meth:`realtime` writes), nonzero only."""
        row = self.realtime([restaurant_id], now).filter(pl.col("restaurant_id") == restaurant_id)
        if not row.height:
            return {}
        return {int(i): int(c) for i, c in zip(row["item_ids"][0], row["clicks_1h"][0]) if c}


def _int(value) -> int | None:
    """An integer id, or None (missing or not an integer: the model's ids are int64)."""
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def summary(result: BatchResult) -> str:
    return json.dumps({"applied": result.applied, "skipped": result.skipped, "feedback": result.feedback,
                       "unmatched": result.unmatched, "users": len(result.users),
                       "restaurants": len(result.restaurants), "seconds": round(result.seconds, 4),
                       "freshness_ms_max": round(max(result.freshness_ms), 1) if result.freshness_ms else None})
