"""The records of the event log: served lists, feedback and feature samples, as compact JSON.

One record per served list (not per entry: one append, one fsync share, per request), one per
feedback event, and one per sampled request's feature rows. Times are integer microseconds since
the epoch, UTC. ``v`` is the record format version; readers reject versions they do not know
rather than guess. The versions (:data:`TYPES` lists the record types each one has):

- v1: ``served`` and ``feedback``.
- v2: ``served`` gains ``arm`` (the user's A/B arm; a v1 list was served without arms, so it
  reads as ``control``); new type ``features`` (the ranker's input rows of a sampled request).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

import numpy as np
import orjson

from recsys.serving.domain import CONTROL, FeatureSample, Feedback, ItemsRequest, RankedList, RestaurantsRequest

VERSION = 2
SERVED, FEEDBACK, FEATURES = "served", "feedback", "features"
TYPES: dict[int, tuple[str, ...]] = {1: (SERVED, FEEDBACK), 2: (SERVED, FEEDBACK, FEATURES)}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_us(ts: datetime) -> int:
    return int(round(ts.timestamp() * 1_000_000))


def from_us(us: int) -> datetime:
    """Exact (integer arithmetic: no float rounding of the microseconds)."""
    return _EPOCH + timedelta(microseconds=us)


def served_record(request: ItemsRequest | RestaurantsRequest, ranked: RankedList, served_at: datetime) -> dict:
    return {
        "type": SERVED, "v": VERSION, "request_id": ranked.request_id, "ts_us": to_us(served_at),
        "surface": request.surface, "user_id": request.user_id,
        "restaurant_id": getattr(request, "restaurant_id", None),
        "policy": ranked.model_version, "arm": ranked.arm, "degraded": ranked.degraded,
        "degraded_reason": ranked.degraded_reason, "n_candidates": ranked.n_candidates,
        "platform": request.context.platform,
        # [id, position, propensity, score] per shown entry, in position order
        "entries": [[e.id, e.position, e.propensity, e.score] for e in ranked.entries],
    }


def feedback_record(event: Feedback, received_at: datetime) -> dict:
    return {
        "type": FEEDBACK, "v": VERSION, "request_id": event.request_id, "entity_id": event.entity_id,
        "kind": event.kind, "ts_us": to_us(event.ts), "received_us": to_us(received_at),
    }


def _values(column: np.ndarray) -> list[float | None]:
    """float64 values, NaN as null (JSON has no NaN); repr round-trips every float64 exactly."""
    return [None if math.isnan(v) else v for v in column.astype(np.float64, copy=False).tolist()]


def features_record(request_id: str, sample: FeatureSample, served_at: datetime, item_ids: np.ndarray,
                    rows: Mapping[str, np.ndarray]) -> dict:
    """A sampled request's ranker inputs: one value list per numeric feature, aligned with
    ``item_ids``. Strings (categories the ranker one-hot encodes) are left out, as in the samples
    contract (``recsys.monitoring.samples``). ``served_us`` places it in its list's day."""
    features = {name: _values(np.asarray(col)) for name, col in rows.items() if np.asarray(col).dtype.kind in "biuf"}
    return {
        "type": FEATURES, "v": VERSION, "request_id": request_id, "ts_us": to_us(sample.ts),
        "served_us": to_us(served_at), "policy": sample.model_version, "surface": "menu",
        "user_id": sample.user_id, "restaurant_id": sample.restaurant_id,
        "item_ids": np.asarray(item_ids, dtype=np.int64).tolist(), "features": features,
    }


def arm_of(record: Mapping[str, Any]) -> str:
    """A served record's arm (v1 records predate arms: control)."""
    return record.get("arm", CONTROL)


def encode(record: dict) -> bytes:
    """Compact JSON. orjson, not ``json.dumps``: this runs on every request and is 8x faster, with
    the same bytes for these records (floats in their shortest round-trip form). A non-finite
    float (none is expected: features records turn NaN into null themselves) is written as null."""
    return orjson.dumps(record)


def decode(payload: bytes) -> dict[str, Any]:
    record = json.loads(payload)
    kind, version = record.get("type"), record.get("v")
    if not isinstance(version, int) or kind not in TYPES.get(version, ()):
        raise ValueError(f"unknown event record (type={kind!r}, v={version!r})")
    return record
