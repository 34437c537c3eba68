"""A small Python client of the Recommender service, speaking domain types.

Every call has a deadline (``timeout`` seconds, for the whole call including retries). Only
UNAVAILABLE is retried (the server was not reached or could not make the list durable), with
exponential backoff inside the deadline; every other status becomes a typed error:
NOT_FOUND -> ``NotFoundError``, INVALID_ARGUMENT -> ``InvalidArgumentError`` (with ``field``),
UNAUTHENTICATED / PERMISSION_DENIED -> ``PermissionDeniedError``, anything else ->
:class:`RpcError` with the status ``code``.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.errors import NotFoundError, RecsysError
from recsys.serving import convert
from recsys.serving.domain import (
    Feedback, InvalidArgumentError, PermissionDeniedError, RankedList, RequestContext, UnavailableError,
)
from recsys.serving.servicer import ADMIN_TOKEN_HEADER
from recsys.serving.v1 import recommender_pb2 as pb
from recsys.serving.v1 import recommender_pb2_grpc as pb_grpc


class RpcError(RecsysError):
    """A call failed with a status other than the typed ones."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code


def _typed(exc: grpc.RpcError) -> RecsysError:
    code, details = exc.code(), exc.details() or ""
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFoundError(details)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        field, _, message = details.partition(": ")
        return InvalidArgumentError(field, message) if message else InvalidArgumentError("request", details)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return PermissionDeniedError(details, authenticated=code is grpc.StatusCode.PERMISSION_DENIED)
    return RpcError(code, details)


class RecommenderClient:
    """``RecommenderClient("127.0.0.1:50051")``; use as a context manager or call :meth:`close`."""

    def __init__(self, address: str, *, timeout: float = 1.0, retries: int = 2, backoff: float = 0.05,
                 admin_token: str | None = None):
        self.address, self.timeout, self.retries, self.backoff = address, timeout, retries, backoff
        self.admin_token = admin_token
        self._channel = grpc.insecure_channel(address)  # lazy: connects on the first call
        self._stub = pb_grpc.RecommenderStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "RecommenderClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- calls
    def recommend_items(self, user_id: str, restaurant_id: str, k: int = 10, *, context: RequestContext | None = None,
                        explain: bool = False, timeout: float | None = None) -> RankedList:
        msg = pb.RecommendItemsRequest(user_id=str(user_id), restaurant_id=str(restaurant_id), k=k,
                                       context=convert.context_to_proto(context), explain=explain)
        return convert.response_from_proto(self._call(self._stub.RecommendItems, msg, timeout))

    def recommend_restaurants(self, user_id: str, k: int = 10, *, context: RequestContext | None = None,
                              explain: bool = False, timeout: float | None = None) -> RankedList:
        msg = pb.RecommendRestaurantsRequest(user_id=str(user_id), k=k, context=convert.context_to_proto(context),
                                             explain=explain)
        return convert.response_from_proto(self._call(self._stub.RecommendRestaurants, msg, timeout))

    def log_feedback(self, events: Sequence[Feedback], timeout: float | None = None) -> int:
        msg = pb.LogFeedbackRequest(events=[convert.feedback_to_proto(e) for e in events])
        return self._call(self._stub.LogFeedback, msg, timeout).accepted

    def model_info(self, timeout: float | None = None) -> dict[str, str]:
        return dict(self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout).info)

    def reload(self, token: str | None = None, timeout: float | None = None) -> str:
        return self._admin(self._stub.Reload, token, timeout)

    def rollback(self, token: str | None = None, timeout: float | None = None) -> str:
        return self._admin(self._stub.Rollback, token, timeout)

    def health(self, service: str = "", timeout: float | None = None) -> str:
        """The serving status name (``SERVING``, ``NOT_SERVING``, ...)."""
        reply = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def wait_until_serving(self, alive: Callable[[], bool], seconds: float = 60.0) -> None:
        """Poll health until SERVING; raise UnavailableError if ``alive()`` turns false (the server
        died while starting) or ``seconds`` pass."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not alive():
                raise UnavailableError(f"{self.address}: the server stopped while starting")
            try:
                if self.health(timeout=1.0) == "SERVING":
                    return
            except RecsysError:  # not listening yet
                pass
            time.sleep(0.1)
        raise UnavailableError(f"{self.address}: not serving after {seconds:g}s")

    def _admin(self, method, token: str | None, timeout: float | None) -> str:
        token = token or self.admin_token
        metadata = ((ADMIN_TOKEN_HEADER, token),) if token else ()
        return self._call(method, pb.AdminRequest(), timeout, metadata).model_version

    def _call(self, method, request, timeout: float | None, metadata=()):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        attempt = 0
        while True:
            try:
                return method(request, timeout=max(deadline - time.monotonic(), 0.0), metadata=metadata)
            except grpc.RpcError as exc:
                pause = self.backoff * (2 ** attempt)
                retry = (exc.code() is grpc.StatusCode.UNAVAILABLE and attempt < self.retries
                         and time.monotonic() + pause < deadline)
                if not retry:
                    raise _typed(exc) from None
                time.sleep(pause)
                attempt += 1
