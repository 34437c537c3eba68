"""The serving domain: requests, ranked lists, feedback, and the :class:`Recommender` protocol.

The gRPC layer (``servicer.py``) translates protobuf messages to these types and back and
knows nothing else; a recommender (the model path in ``recommender.py``, the popularity
fallback in ``fallback.py``) takes these types and knows nothing about gRPC. Requests are
validated where they are built (``convert.py``); a recommender may rely on them.

Errors a recommender raises (mapped to gRPC codes by the servicer):
``recsys.errors.NotFoundError`` (an id that does not exist), :class:`InvalidArgumentError`
(a value the recommender cannot use), :class:`FailedPreconditionError` (e.g. no version to roll
back to); anything else is a bug and answers INTERNAL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Callable, Literal, Mapping, NamedTuple, Protocol, runtime_checkable

import numpy as np

from recsys.errors import RecsysError

Surface = Literal["feed", "menu"]
EventKind = Literal["click", "order"]
Arm = Literal["control", "treatment"]
CONTROL: Arm = "control"
TREATMENT: Arm = "treatment"
PLATFORMS: tuple[str, ...] = ("unknown", "ios", "android", "web")


class InvalidArgumentError(RecsysError):
    """A request field is missing or out of range; ``field`` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


class FailedPreconditionError(RecsysError):
    """The system is not in a state that allows the call (e.g. nothing to roll back to)."""


class UnavailableError(RecsysError):
    """A dependency needed to answer is down (e.g. the event log cannot make a list durable)."""


class PermissionDeniedError(RecsysError):
    """An admin call without the right token; ``authenticated`` tells missing from wrong."""

    def __init__(self, message: str, authenticated: bool):
        super().__init__(message)
        self.authenticated = authenticated


@dataclass(frozen=True)
class RequestContext:
    """What the app tells about the moment of the request; every field optional."""

    request_time: datetime | None = None
    local_hour: int | None = None  # 0..23
    lat: float | None = None
    lon: float | None = None
    cell: int | None = None
    platform: str = "unknown"


@dataclass(frozen=True, kw_only=True)
class _Request:
    request_id: str  # assigned by the server
    user_id: str
    k: int
    context: RequestContext = RequestContext()
    explain: bool = False
    # time.monotonic() by which the answer is due (None: no deadline); downstream calls use it.
    deadline: float | None = None

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


@dataclass(frozen=True, kw_only=True)
class RestaurantsRequest(_Request):
    """The home feed: ``k`` restaurants for ``user_id``."""

    surface: Surface = field(default="feed", init=False)


@dataclass(frozen=True, kw_only=True)
class ItemsRequest(_Request):
    """The menu: ``k`` items of ``restaurant_id`` for ``user_id``."""

    restaurant_id: str
    surface: Surface = field(default="menu", init=False)


class Entry(NamedTuple):
    """One shown entry: its id, greedy score, 0-based position and logging propensity.

    A NamedTuple, not a frozen dataclass: a request builds k of them, and a frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` per field) costs 6x a tuple's."""

    id: str
    score: float
    position: int
    propensity: float
    explanation: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True)
class Filtered:
    """A candidate removed before ranking, and why (``closed``, ``unavailable``, ...)."""

    id: str
    reason: str


@dataclass(frozen=True)
class FeatureSample:
    """The ranker inputs of one sampled request, to be logged off the request's critical path.

    ``compute()`` returns ``(item ids, {feature: (n,) values})``: the candidates the ranker scored
    and their input rows under the training names. It is a closure over the request's immutable
    inputs, so running it later (in the sampler's thread) gives exactly what the ranker used.
    """

    model_version: str
    user_id: int
    restaurant_id: int
    ts: datetime  # the request time the features were computed for
    compute: Callable[[], tuple[np.ndarray, Mapping[str, np.ndarray]]]


@dataclass(frozen=True)
class RankedList:
    """What a recommender answers: the shown entries in position order.

    ``model_version`` is the policy that produced the list (a model version, or a fallback
    policy's name): it is logged as the impressions log's ``policy``. ``n_candidates`` is the
    number of candidates the exploration ranked (the ``n`` of ``epsilon / n``). ``arm`` is the A/B
    arm of the user (``control`` when no experiment runs); whichever policy answered, the list
    counts for that arm. ``feature_sample`` is set on the requests chosen for feature sampling.
    """

    request_id: str
    model_version: str
    entries: tuple[Entry, ...]
    degraded: bool = False
    degraded_reason: str = ""
    filters: tuple[Filtered, ...] = ()
    n_candidates: int = 0
    arm: Arm = CONTROL
    feature_sample: FeatureSample | None = None


@dataclass(frozen=True)
class Feedback:
    """A click or an order on entry ``entity_id`` of the list served as ``request_id``."""

    request_id: str
    entity_id: str
    kind: EventKind
    ts: datetime


@runtime_checkable
class Recommender(Protocol):
    """What the server needs from a policy. Methods are called from many threads at once."""

    def recommend_items(self, request: ItemsRequest) -> RankedList: ...

    def recommend_restaurants(self, request: RestaurantsRequest) -> RankedList: ...

    def model_info(self) -> dict[str, str]: ...

    def reload(self) -> str:
        """Load the version the registry pointer names now; return the serving version."""
        ...

    def rollback(self) -> str:
        """Go back to the previous version; return the serving version."""
        ...
