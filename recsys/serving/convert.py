"""Protobuf <-> domain, with the boundary's validation.

Every check raises :class:`~recsys.serving.domain.InvalidArgumentError` naming the field
(``user_id``, ``k``, ``context.lat``, ``events[3].type``) and the value; the servicer maps it to
INVALID_ARGUMENT. Limits come from :class:`~recsys.serving.settings.ServingConfig`.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from types import MappingProxyType

from recsys.serving.domain import (
    Entry, Feedback, Filtered, InvalidArgumentError, ItemsRequest, RankedList, RequestContext,
    RestaurantsRequest,
)
from recsys.serving.settings import ServingConfig
from recsys.serving.v1 import recommender_pb2 as pb

# Timestamps outside these years are a client bug, not a time (seconds since the epoch).
MIN_TS, MAX_TS = 946_684_800, 4_102_444_800  # 2000-01-01, 2100-01-01
PLATFORM_NAMES = {pb.PLATFORM_UNSPECIFIED: "unknown", pb.PLATFORM_IOS: "ios",
                  pb.PLATFORM_ANDROID: "android", pb.PLATFORM_WEB: "web"}
PLATFORM_VALUES = {name: value for value, name in PLATFORM_NAMES.items()}
EVENT_KINDS = {pb.EVENT_TYPE_CLICK: "click", pb.EVENT_TYPE_ORDER: "order"}
EVENT_VALUES = {name: value for value, name in EVENT_KINDS.items()}


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} chars)"


def check_id(field: str, value: str, limits: ServingConfig) -> str:
    if not value or not value.strip():
        raise InvalidArgumentError(field, "must not be empty")
    if len(value) > limits.max_id_length:
        raise InvalidArgumentError(field, f"length {len(value)} > max_id_length {limits.max_id_length}")
    if not value.isprintable():
        raise InvalidArgumentError(field, f"{_short(value)} holds control characters")
    return value


def check_k(k: int, limits: ServingConfig) -> int:
    if not 1 <= k <= limits.k_max:
        raise InvalidArgumentError("k", f"{k} not in 1..{limits.k_max} (k_max)")
    return k


def _timestamp(field: str, ts) -> datetime:
    if not MIN_TS <= ts.seconds < MAX_TS or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgumentError(field, f"seconds={ts.seconds}, nanos={ts.nanos}: outside years 2000..2099")
    return ts.ToDatetime(tzinfo=timezone.utc)


def _coordinate(field: str, value: float, bound: float) -> float:
    if not math.isfinite(value) or not -bound <= value <= bound:
        raise InvalidArgumentError(field, f"{value!r} not a finite number in -{bound:g}..{bound:g}")
    return value


def context_from_proto(msg: pb.RequestContext) -> RequestContext:
    hour = msg.local_hour if msg.HasField("local_hour") else None
    if hour is not None and not 0 <= hour <= 23:
        raise InvalidArgumentError("context.local_hour", f"{hour} not in 0..23")
    cell = msg.cell if msg.HasField("cell") else None
    if cell is not None and cell < 0:
        raise InvalidArgumentError("context.cell", f"{cell} < 0")
    if msg.platform not in PLATFORM_NAMES:
        raise InvalidArgumentError("context.platform", f"unknown enum value {msg.platform}")
    return RequestContext(
        request_time=_timestamp("context.request_time", msg.request_time) if msg.HasField("request_time") else None,
        local_hour=hour,
        lat=_coordinate("context.lat", msg.lat, 90.0) if msg.HasField("lat") else None,
        lon=_coordinate("context.lon", msg.lon, 180.0) if msg.HasField("lon") else None,
        cell=cell,
        platform=PLATFORM_NAMES[msg.platform],
    )


def _check_size(msg, limits: ServingConfig) -> None:
    size = msg.ByteSize()
    if size > limits.max_request_bytes:
        raise InvalidArgumentError("request", f"{size} bytes > max_request_bytes {limits.max_request_bytes}")


def _deadline(time_left: float | None) -> float | None:
    return None if time_left is None else time.monotonic() + time_left


def items_request(msg: pb.RecommendItemsRequest, limits: ServingConfig, request_id: str,
                  time_left: float | None = None) -> ItemsRequest:
    out = ItemsRequest(
        request_id=request_id, user_id=check_id("user_id", msg.user_id, limits),
        restaurant_id=check_id("restaurant_id", msg.restaurant_id, limits), k=check_k(msg.k, limits),
        context=context_from_proto(msg.context), explain=msg.explain, deadline=_deadline(time_left),
    )
    _check_size(msg, limits)
    return out


def restaurants_request(msg: pb.RecommendRestaurantsRequest, limits: ServingConfig, request_id: str,
                        time_left: float | None = None) -> RestaurantsRequest:
    out = RestaurantsRequest(
        request_id=request_id, user_id=check_id("user_id", msg.user_id, limits), k=check_k(msg.k, limits),
        context=context_from_proto(msg.context), explain=msg.explain, deadline=_deadline(time_left),
    )
    _check_size(msg, limits)
    return out


def feedback_events(msg: pb.LogFeedbackRequest, limits: ServingConfig, received_at: datetime) -> list[Feedback]:
    n = len(msg.events)
    if not 1 <= n <= limits.max_feedback_events:
        raise InvalidArgumentError("events", f"{n} events not in 1..{limits.max_feedback_events}")
    out = []
    for i, ev in enumerate(msg.events):
        if ev.type not in EVENT_KINDS:
            raise InvalidArgumentError(f"events[{i}].type", f"{ev.type} is not CLICK or ORDER")
        out.append(Feedback(
            request_id=check_id(f"events[{i}].request_id", ev.request_id, limits),
            entity_id=check_id(f"events[{i}].entity_id", ev.entity_id, limits),
            kind=EVENT_KINDS[ev.type],
            ts=_timestamp(f"events[{i}].ts", ev.ts) if ev.HasField("ts") else received_at,
        ))
    _check_size(msg, limits)
    return out


# ---------------------------------------------------------------- domain -> proto
def response_to_proto(ranked: RankedList, explain: bool) -> pb.RecommendResponse:
    return pb.RecommendResponse(
        request_id=ranked.request_id, model_version=ranked.model_version,
        entries=[pb.Entry(id=e.id, score=e.score, position=e.position, propensity=e.propensity,
                          explanation=dict(e.explanation) if explain else None)
                 for e in ranked.entries],
        degraded=ranked.degraded, degraded_reason=ranked.degraded_reason,
        filters=[pb.FilteredEntry(id=f.id, reason=f.reason) for f in ranked.filters] if explain else [],
        n_candidates=ranked.n_candidates,
    )


# ---------------------------------------------------------------- proto -> domain (client side)
def response_from_proto(msg: pb.RecommendResponse) -> RankedList:
    return RankedList(
        request_id=msg.request_id, model_version=msg.model_version,
        entries=tuple(Entry(id=e.id, score=e.score, position=e.position, propensity=e.propensity,
                            explanation=MappingProxyType(dict(e.explanation))) for e in msg.entries),
        degraded=msg.degraded, degraded_reason=msg.degraded_reason,
        filters=tuple(Filtered(id=f.id, reason=f.reason) for f in msg.filters),
        n_candidates=msg.n_candidates,
    )


def context_to_proto(ctx: RequestContext | None) -> pb.RequestContext:
    msg = pb.RequestContext()
    if ctx is None:
        return msg
    if ctx.request_time is not None:
        msg.request_time.FromDatetime(ctx.request_time)
    for name in ("local_hour", "lat", "lon", "cell"):
        value = getattr(ctx, name)
        if value is not None:
            setattr(msg, name, value)
    msg.platform = PLATFORM_VALUES.get(ctx.platform, pb.PLATFORM_UNSPECIFIED)
    return msg


def feedback_to_proto(event: Feedback) -> pb.FeedbackEvent:
    msg = pb.FeedbackEvent(request_id=event.request_id, entity_id=event.entity_id, type=EVENT_VALUES[event.kind])
    msg.ts.FromDatetime(event.ts)
    return msg
