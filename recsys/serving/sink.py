"""Land the event log as an impressions log: partitioned Parquet in the impressions contract.

Input: the event log root (``<event_log_dir>``, one ``worker-<i>`` directory per server worker;
or a single log directory). Output: ``<sink_dir>/date=YYYY-MM-DD/part-0.parquet``, one row per
shown entry, with ``clicked`` / ``ordered`` joined from the feedback events that refer to the
served ``request_id`` and entry (an order counts as a click too: ordered implies clicked).

Lateness window. Feedback counts for a served list when the server *received* it within
``lateness`` of serving the list; later feedback is not joined (counted as ``feedback_late`` in
the report). A day is *closed*, and landed, once the newest event in the logs (the watermark,
in event time) is at least ``lateness`` past the day's end. Days still open stay in the log and
are read again by the next run. ``flush=True`` lands every day now (end of a test or of a
closed-loop run): feedback arriving later for a flushed day is then counted as late, not joined.

Idempotent. Partitions are a pure function of the events: rows sorted by (ts, request_id,
position), written to a temporary file, fsync'd and renamed. The state file (committed offset
per log, landed days) is written after the partitions, also atomically; a run killed between
the two rewrites the same bytes next time. Re-running over the same offsets gives the same files.

A/B arms. Each row carries its list's ``arm`` (``control`` / ``treatment``; lists logged before
arms existed are ``control``), and ``policy`` is the version (or fallback) that answered.

Feature samples. ``features`` records (the ranker's input rows of sampled requests) land with the
day of the list they belong to, in the samples contract (``recsys.monitoring.samples``, long
format) at ``<samples_dir>/date=YYYY-MM-DD/part-0.parquet`` (default: ``feature_samples`` beside
``out_dir``: never inside it, where impressions-log readers would take it for impressions).
A sample whose day was already landed is counted as late, not written.

Ids. With ``id_type="int64"`` (the simulator's ids) id columns are Int64; a request whose ids
are not integers goes to ``<sink_dir>_quarantine/date=.../part-0.parquet`` with the reason, never
silently dropped. ``id_type="string"`` keeps ids as strings.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import polars as pl

from recsys.errors import DataContractError
from recsys.monitoring import samples
from recsys.serving import events
from recsys.serving.eventlog import EventLogReader, list_segments

DAY_US = 86_400 * 1_000_000
ID_COLUMNS = ("request_id", "user_id", "restaurant_id", "item_id")
PART = "part-0.parquet"


@dataclass(frozen=True)
class SinkReport:
    days_written: tuple[str, ...]
    rows: int
    requests: int
    quarantined_requests: int
    feedback_joined: int
    feedback_late: int  # received after the lateness window, or for a day already landed
    feedback_pending: int  # for requests of days still open: read again next run
    pending_requests: int
    feature_samples: int  # sampled requests whose feature rows were landed
    feature_samples_late: int  # for a day already landed: not written
    watermark: str | None
    offsets: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


def log_dirs(root: Path) -> dict[str, Path]:
    """The log directories under ``root`` by name (``worker-0``, ...), or ``root`` itself."""
    root = Path(root)
    if list_segments(root):
        return {root.name: root}
    return {p.name: p for p in sorted(root.glob("worker-*")) if p.is_dir()}


def _day(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us // DAY_US * 86_400, tz=timezone.utc).date().isoformat()


def _day_start_us(day: str) -> int:
    d = date.fromisoformat(day)
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()) * 1_000_000


def _atomic_write_parquet(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.write_parquet(tmp, compression="zstd", statistics=True)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


def _atomic_write_json(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _load_state(path: Path) -> dict:
    if not path.exists():
        return {"offsets": {}, "landed": [], "read_to": {}}
    try:
        state = json.loads(path.read_text())
        return {"offsets": dict(state["offsets"]), "landed": list(state["landed"]),
                "read_to": dict(state.get("read_to", {}))}
    except (ValueError, KeyError, TypeError) as exc:
        raise DataContractError(f"sink state {path} is unreadable ({exc}); remove it to re-land from offset 0") from None


def _rows(served: Iterable[dict], clicks: dict, orders: dict) -> list[dict]:
    out = []
    for s in served:
        menu = s["surface"] == "menu"
        for entity, position, propensity, score in s["entries"]:
            key = (s["request_id"], entity)
            ordered = key in orders
            out.append({
                "request_id": s["request_id"], "ts": s["ts_us"], "user_id": s["user_id"], "surface": s["surface"],
                "restaurant_id": s["restaurant_id"] if menu else entity, "item_id": entity if menu else None,
                "position": position, "propensity": propensity, "policy": s["policy"], "arm": events.arm_of(s),
                "clicked": ordered or key in clicks, "ordered": ordered, "n_candidates": s["n_candidates"],
                "score": score, "degraded": s["degraded"], "degraded_reason": s["degraded_reason"],
                "platform": s.get("platform", "unknown"),
            })
    return out


SCHEMA = {
    "request_id": pl.Utf8, "ts": pl.Int64, "user_id": pl.Utf8, "surface": pl.Utf8, "restaurant_id": pl.Utf8,
    "item_id": pl.Utf8, "position": pl.Int16, "propensity": pl.Float64, "policy": pl.Utf8, "arm": pl.Utf8,
    "clicked": pl.Boolean, "ordered": pl.Boolean, "n_candidates": pl.Int32, "score": pl.Float64,
    "degraded": pl.Boolean, "degraded_reason": pl.Utf8, "platform": pl.Utf8,
}


def _frame(rows: list[dict], id_type: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(contract rows, quarantined rows with a ``reason``), both sorted deterministically."""
    frame = (pl.DataFrame(rows, schema=SCHEMA, orient="row")
             .with_columns(pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
             .sort(["ts", "request_id", "position"]))
    ids = ("user_id", "restaurant_id", "item_id")
    if id_type == "string":
        return frame, frame.head(0).with_columns(reason=pl.lit("", pl.Utf8))
    not_int = pl.any_horizontal([pl.col(c).is_not_null() & pl.col(c).cast(pl.Int64, strict=False).is_null()
                                 for c in ids])
    flagged = frame.with_columns(__bad=not_int.any().over("request_id"))
    bad = (flagged.filter("__bad").drop("__bad")
           .with_columns(reason=pl.lit("ids are not integers (sink_id_type=int64)")))
    good = flagged.filter(~pl.col("__bad")).drop("__bad").with_columns(pl.col(c).cast(pl.Int64) for c in ids)
    return good, bad


def _samples_frame(records: list[dict]) -> pl.DataFrame:
    """Feature records in the samples contract, ordered by (served time, request id)."""
    frames = [samples.sample_frame(
        request_id=r["request_id"], ts=events.from_us(r["ts_us"]), model_version=r["policy"], surface=r["surface"],
        user_id=r["user_id"], restaurant_id=r["restaurant_id"], item_ids=r["item_ids"],
        rows={name: np.asarray(values, dtype=np.float64) for name, values in r["features"].items()})
        for r in sorted(records, key=lambda r: (r["served_us"], r["request_id"]))]
    return pl.concat(frames) if frames else pl.DataFrame(schema=samples.SCHEMA)


def run_sink(log_root: Path, out_dir: Path, state_path: Path, *, lateness: timedelta,
             id_type: Literal["int64", "string"] = "int64", flush: bool = False,
             samples_dir: Path | None = None) -> SinkReport:
    """Land every closed day of the logs under ``log_root`` into ``out_dir`` (and feature samples
    into ``samples_dir``); see the module doc."""
    out_dir, state_path = Path(out_dir), Path(state_path)
    samples_dir = out_dir.with_name("feature_samples") if samples_dir is None else Path(samples_dir)
    quarantine_dir = out_dir.with_name(out_dir.name + "_quarantine")
    state = _load_state(state_path)
    landed = set(state["landed"])
    lateness_us = int(lateness.total_seconds() * 1_000_000)

    read: list[tuple[str, int, dict]] = []  # (log, offset, record)
    ends: dict[str, int] = {}
    for name, directory in log_dirs(log_root).items():
        start = int(state["offsets"].get(name, 0))
        ends[name] = start
        for rec in EventLogReader(directory).read(start):
            read.append((name, rec.offset, events.decode(rec.payload)))
            ends[name] = rec.offset + 1

    def event_time(r: dict) -> int:
        if r["type"] == events.SERVED:
            return r["ts_us"]
        return r["served_us"] if r["type"] == events.FEATURES else r["received_us"]

    watermark = max((event_time(r) for _, _, r in read), default=None)
    served_by_day: dict[str, list[dict]] = defaultdict(list)
    served_at: dict[str, int] = {}
    for _, _, r in read:
        if r["type"] == events.SERVED and _day(r["ts_us"]) not in landed:
            served_by_day[_day(r["ts_us"])].append(r)
            served_at[r["request_id"]] = r["ts_us"]
    closing = sorted(d for d in served_by_day
                     if flush or (watermark is not None and _day_start_us(d) + DAY_US + lateness_us <= watermark))
    closing_set = set(closing)

    clicks: set = set()
    orders: set = set()
    joined = late = pending = 0
    for name, offset, r in read:
        if r["type"] != events.FEEDBACK:
            continue
        t = served_at.get(r["request_id"])
        if t is None or r["received_us"] > t + lateness_us:
            # no open request (its day was landed, or never served), or outside the window;
            # counted once: records read by an earlier run (kept for open days) are not recounted
            late += offset >= int(state["read_to"].get(name, 0))
        elif _day(t) in closing_set:
            (orders if r["kind"] == "order" else clicks).add((r["request_id"], r["entity_id"]))
            joined += 1
        else:
            pending += 1

    sampled: dict[str, list[dict]] = defaultdict(list)
    samples_late = 0
    for name, offset, r in read:
        if r["type"] == events.FEATURES:
            if _day(r["served_us"]) in landed:
                samples_late += offset >= int(state["read_to"].get(name, 0))
            else:
                sampled[_day(r["served_us"])].append(r)

    rows = requests = quarantined = n_samples = 0
    for day in closing:
        good, bad = _frame(_rows(served_by_day[day], clicks, orders), id_type)
        _atomic_write_parquet(good, out_dir / f"date={day}" / PART)
        if bad.height:
            _atomic_write_parquet(bad, quarantine_dir / f"date={day}" / PART)
        if sampled[day]:
            _atomic_write_parquet(_samples_frame(sampled[day]), samples_dir / f"date={day}" / PART)
            n_samples += len(sampled[day])
        rows += good.height
        requests += good["request_id"].n_unique()
        quarantined += bad["request_id"].n_unique() if bad.height else 0

    open_days = sorted(set(served_by_day) - closing_set)
    offsets = dict(ends)
    if open_days:  # keep every record from the first open day on: read again next run
        keep_from = _day_start_us(open_days[0])
        for name in offsets:
            first = min((off for log, off, r in read if log == name and event_time(r) >= keep_from), default=None)
            if first is not None:
                offsets[name] = first
    read_to = {name: max(end, int(state["read_to"].get(name, 0))) for name, end in ends.items()}
    _atomic_write_json({"offsets": offsets, "landed": sorted(landed | closing_set), "read_to": read_to}, state_path)
    return SinkReport(
        days_written=tuple(closing), rows=rows, requests=requests, quarantined_requests=quarantined,
        feedback_joined=joined, feedback_late=late, feedback_pending=pending,
        pending_requests=sum(len(served_by_day[d]) for d in open_days),
        feature_samples=n_samples, feature_samples_late=samples_late,
        watermark=events.from_us(watermark).isoformat() if watermark is not None else None, offsets=offsets,
    )
