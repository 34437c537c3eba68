"""The gRPC servicer: translate proto <-> domain, log what was served, map errors. Nothing more.

Each RPC method is a few lines; :meth:`RecommenderServicer._handle` wraps them all with the
same request id, deadline check, error mapping (``context.abort``), metrics and one JSON log
line. A served list is appended to the event log, durably, *before* the response is returned:
a list the client saw is a list the log holds. When the log cannot make it durable in time, the
call fails (UNAVAILABLE or DEADLINE_EXCEEDED) rather than answer unlogged. A list chosen for
feature sampling hands its sample to :class:`~recsys.serving.sampling.FeatureSampleLogger`, which
logs it after the answer, off the request's path.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
import uuid
from datetime import datetime, timezone
from typing import Callable

import grpc

from recsys.errors import NotFoundError, RecsysError
from recsys.serving import convert, events
from recsys.serving.domain import (
    FailedPreconditionError, InvalidArgumentError, PermissionDeniedError, RankedList, Recommender,
    UnavailableError,
)
from recsys.serving.eventlog import EventLog, EventLogError
from recsys.serving.metrics import Metrics
from recsys.serving.sampling import FeatureSampleLogger
from recsys.serving.settings import ServingConfig
from recsys.serving.v1 import recommender_pb2 as pb
from recsys.serving.v1 import recommender_pb2_grpc as pb_grpc

logger = logging.getLogger("recsys.serving.rpc")
ADMIN_TOKEN_HEADER = "x-admin-token"
REQUEST_ID_HEADER = "x-request-id"
NO_DEADLINE = 1e6  # grpc reports a call without deadline as ~infinite time remaining
LOG_TIMEOUT = 5.0  # seconds to wait for durability when the call has no deadline


class DeadlineExceeded(RecsysError):
    """The call's deadline passed (or is too close to do the work)."""


# Typed errors -> status codes; the first matching class wins. Bad input is never INTERNAL.
STATUS = (
    (InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (EventLogError, grpc.StatusCode.UNAVAILABLE),
    (RecsysError, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_of(exc: Exception) -> grpc.StatusCode:
    if isinstance(exc, PermissionDeniedError):
        return grpc.StatusCode.PERMISSION_DENIED if exc.authenticated else grpc.StatusCode.UNAUTHENTICATED
    return next((code for cls, code in STATUS if isinstance(exc, cls)), grpc.StatusCode.INTERNAL)


class _Call:
    """Per-call state the methods need: request id, time left, fields for the log line."""

    def __init__(self, context: grpc.ServicerContext, min_left: float):
        self.request_id = uuid.uuid4().hex
        self.context = context
        self.min_left = min_left
        self.fields: dict = {}

    def time_left(self) -> float | None:
        left = self.context.time_remaining()
        if left is None or left > NO_DEADLINE:
            return None
        if left < self.min_left:
            raise DeadlineExceeded(f"deadline: {left * 1000:.2f} ms left, need at least {self.min_left * 1000:.2f} ms")
        return left


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(self, recommender: Recommender, event_log: EventLog, settings: ServingConfig,
                 metrics: Metrics | None = None, worker: int = 0, samples: FeatureSampleLogger | None = None):
        self.recommender = recommender
        self.event_log = event_log
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.worker = worker
        self.samples = samples or FeatureSampleLogger(event_log, self.metrics)

    # ---------------------------------------------------------------- RPCs
    def RecommendItems(self, request: pb.RecommendItemsRequest, context) -> pb.RecommendResponse:
        def run(call: _Call) -> pb.RecommendResponse:
            req = convert.items_request(request, self.settings, call.request_id, call.time_left())
            return self._serve(call, req, self.recommender.recommend_items(req))
        return self._handle("RecommendItems", context, run)

    def RecommendRestaurants(self, request: pb.RecommendRestaurantsRequest, context) -> pb.RecommendResponse:
        def run(call: _Call) -> pb.RecommendResponse:
            req = convert.restaurants_request(request, self.settings, call.request_id, call.time_left())
            return self._serve(call, req, self.recommender.recommend_restaurants(req))
        return self._handle("RecommendRestaurants", context, run)

    def LogFeedback(self, request: pb.LogFeedbackRequest, context) -> pb.LogFeedbackResponse:
        def run(call: _Call) -> pb.LogFeedbackResponse:
            now = datetime.now(timezone.utc)
            feedback = convert.feedback_events(request, self.settings, now)
            self._append(call, [events.feedback_record(f, now) for f in feedback])
            self.metrics.child(self.metrics.events, type=events.FEEDBACK).inc(len(feedback))
            call.fields["events"] = len(feedback)
            return pb.LogFeedbackResponse(accepted=len(feedback))
        return self._handle("LogFeedback", context, run)

    def GetModelInfo(self, request: pb.GetModelInfoRequest, context) -> pb.ModelInfo:
        def run(call: _Call) -> pb.ModelInfo:
            info = {**self.recommender.model_info(), "worker": str(self.worker), "pid": str(os.getpid())}
            return pb.ModelInfo(model_version=info.get("model_version", ""), info=info)
        return self._handle("GetModelInfo", context, run)

    def Reload(self, request: pb.AdminRequest, context) -> pb.AdminResponse:
        return self._handle("Reload", context, lambda call: self._admin(call, request, self.recommender.reload))

    def Rollback(self, request: pb.AdminRequest, context) -> pb.AdminResponse:
        return self._handle("Rollback", context, lambda call: self._admin(call, request, self.recommender.rollback))

    # ---------------------------------------------------------------- helpers
    def _serve(self, call: _Call, req, ranked: RankedList) -> pb.RecommendResponse:
        served_at = datetime.now(timezone.utc)
        self._append(call, [events.served_record(req, ranked, served_at)])
        self.metrics.child(self.metrics.events, type=events.SERVED).inc()
        if ranked.feature_sample is not None:
            self.samples.submit(ranked.request_id, ranked.feature_sample, served_at)
        if ranked.degraded:
            self.metrics.degraded.labels(method=req.surface, reason=ranked.degraded_reason).inc()
        call.fields.update(user_id=req.user_id, k=req.k, n=len(ranked.entries), model_version=ranked.model_version,
                           arm=ranked.arm, degraded=ranked.degraded)
        return convert.response_to_proto(ranked, req.explain)

    def _append(self, call: _Call, records: list[dict]) -> None:
        left = call.time_left()
        try:
            self.event_log.append_many([events.encode(r) for r in records], LOG_TIMEOUT if left is None else left)
        except EventLogError:
            if left is not None and call.context.time_remaining() <= 0:
                raise DeadlineExceeded("deadline passed while making the event durable") from None
            raise

    def _admin(self, call: _Call, request: pb.AdminRequest, action: Callable[[], str]) -> pb.AdminResponse:
        expected = self.settings.admin_token
        if expected is None:
            raise PermissionDeniedError("admin calls are disabled: no serving.admin_token configured",
                                        authenticated=True)
        given = dict(call.context.invocation_metadata()).get(ADMIN_TOKEN_HEADER) or request.token
        if not given:
            raise PermissionDeniedError(f"admin token missing: send metadata {ADMIN_TOKEN_HEADER!r} or "
                                        "AdminRequest.token", authenticated=False)
        if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
            raise PermissionDeniedError("admin token rejected", authenticated=True)
        version = action()
        self.metrics.set_model_version(version)
        self.metrics.set_arms(self.recommender.model_info())
        call.fields["model_version"] = version
        return pb.AdminResponse(model_version=version)

    def _handle(self, method: str, context, run: Callable[[_Call], object]):
        started = time.perf_counter()
        call = _Call(context, self.settings.min_time_left_ms / 1000)
        code, message = grpc.StatusCode.OK, ""
        try:
            call.time_left()
            return run(call)
        except Exception as exc:  # every failure is mapped; the unexpected ones are logged with a trace
            code, message = status_of(exc), str(exc)
            if code is grpc.StatusCode.INTERNAL:
                logger.exception("unexpected error", extra={"fields": {"method": method,
                                                                       "request_id": call.request_id}})
                message = f"internal error (request_id={call.request_id})"
        finally:
            seconds = time.perf_counter() - started
            self.metrics.child(self.metrics.latency, method=method).observe(seconds)
            if code is not grpc.StatusCode.OK:
                self.metrics.errors.labels(method=method, code=code.name).inc()
            logger.info("rpc", extra={"fields": {"method": method, "request_id": call.request_id,
                                                 "code": code.name, "latency_ms": round(seconds * 1000, 3),
                                                 **call.fields, **({"error": message} if message else {})}})
        context.set_trailing_metadata(((REQUEST_ID_HEADER, call.request_id),))
        context.abort(code, message)
