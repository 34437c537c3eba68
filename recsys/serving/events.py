"""The records of the event log: served lists and feedback, as compact JSON.

One record per served list (not per entry: one append, one fsync share, per request) and one
per feedback event. Times are integer microseconds since the epoch, UTC. ``v`` is the record
format version; readers reject versions they do not know rather than guess.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from recsys.serving.domain import Feedback, ItemsRequest, RankedList, RestaurantsRequest

VERSION = 1
SERVED, FEEDBACK = "served", "feedback"


def to_us(ts: datetime) -> int:
    return int(round(ts.timestamp() * 1_000_000))


def from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc)


def served_record(request: ItemsRequest | RestaurantsRequest, ranked: RankedList, served_at: datetime) -> dict:
    return {
        "type": SERVED, "v": VERSION, "request_id": ranked.request_id, "ts_us": to_us(served_at),
        "surface": request.surface, "user_id": request.user_id,
        "restaurant_id": getattr(request, "restaurant_id", None),
        "policy": ranked.model_version, "degraded": ranked.degraded,
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


def encode(record: dict) -> bytes:
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode()


def decode(payload: bytes) -> dict[str, Any]:
    record = json.loads(payload)
    if record.get("v") != VERSION or record.get("type") not in (SERVED, FEEDBACK):
        raise ValueError(f"unknown event record (type={record.get('type')!r}, v={record.get('v')!r})")
    return record
