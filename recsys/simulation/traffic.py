"""Closed-loop traffic: simulated users of the world call a running server and react by the truth.

Each session is one user at one simulated moment (the day after the simulated period, hours
drawn from the sampler's daily profile, only users signed up by then):

    RecommendRestaurants(user, k=feed_slots, request_time=ts)
      -> each shown restaurant is clicked with the TRUE probability
         ``truth.click_probability("feed", user, restaurant, position, ts)`` and, if clicked,
         ordered with ``truth.order_given_click``
      -> every clicked restaurant's menu is opened 30..300 s later:
         RecommendItems(user, restaurant, k=menu_slots, request_time=ts_menu), items clicked and
         ordered the same way
      -> one LogFeedback per session: a ``click`` (and an ``order``) per clicked (ordered) entry,
         naming the served ``request_id``.

This mirrors the sampler (``sampler.py``), with the server's policy in place of the legacy one,
so the logs it produces are comparable with the simulator's. Bounded: at most ``requests``
recommendation calls and ``max_seconds`` of wall time; loopback addresses only (it is a test
and benchmark tool, not a load generator for shared hosts); seeded: the same seed and the same
served lists give the same clicks.

The summary reports the true expected CTR of what was served (the mean click probability over
shown slots, at their served positions and times: the policy's value without sampling noise),
the clicks and orders drawn, and the share of lists answered by a flagged fallback.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from recsys.errors import RecsysError
from recsys.serving.domain import Feedback, RankedList, RequestContext
from recsys.simulation.sampler import HOUR_US, HOURLY
from recsys.simulation.truth import GroundTruth, Surface
from recsys.simulation.world import DAY_US


class TrafficError(RecsysError):
    """Traffic settings or target refused (e.g. a non-loopback address)."""

    exit_code = 2


@dataclass(frozen=True)
class TrafficSettings:
    """What to send. ``requests`` bounds the recommendation calls (feed + menu) of the run."""

    users: int = 50
    requests: int = 200
    seed: int = 0
    feed_k: int = 10
    menu_k: int = 8
    max_seconds: float = 60.0
    timeout: float = 2.0  # per call, seconds
    explain: bool = False  # ask for explanations (greedy ranks), e.g. to check propensities
    keep_lists: bool = False  # keep every served list in the summary

    def __post_init__(self) -> None:
        for name in ("users", "requests", "feed_k", "menu_k"):
            if getattr(self, name) < 1:
                raise TrafficError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.max_seconds > 0 or not self.timeout > 0:
            raise TrafficError(f"max_seconds={self.max_seconds} and timeout={self.timeout} must be > 0")


@dataclass(frozen=True)
class Served:
    """One served list and what the simulated user did with it."""

    surface: Surface
    user_id: int
    ts: datetime
    ranked: RankedList
    p_click: tuple[float, ...]  # true click probability per shown entry
    clicked: tuple[bool, ...]
    ordered: tuple[bool, ...]


@dataclass
class TrafficSummary:
    requests: int = 0
    feed_requests: int = 0
    menu_requests: int = 0
    sessions: int = 0
    slots: int = 0
    clicks: int = 0
    orders: int = 0
    expected_clicks: float = 0.0  # sum of true click probabilities over shown slots
    degraded: int = 0
    degraded_reasons: Counter = field(default_factory=Counter)
    feedback_sent: int = 0
    feedback_accepted: int = 0
    errors: Counter = field(default_factory=Counter)  # by error type (calls that failed)
    foreign_entries: int = 0  # shown ids that are not entities of the world (not scored)
    seconds: float = 0.0
    served: list[Served] = field(default_factory=list)
    _by_surface: dict = field(default_factory=lambda: {"feed": [0, 0.0], "menu": [0, 0.0]})

    @property
    def true_ctr(self) -> float:
        """True expected CTR per shown slot of everything served."""
        return self.expected_clicks / self.slots if self.slots else float("nan")

    def true_ctr_of(self, surface: Surface) -> float:
        slots, expected = self._by_surface[surface]
        return expected / slots if slots else float("nan")

    @property
    def degraded_share(self) -> float:
        return self.degraded / self.requests if self.requests else float("nan")

    def to_dict(self) -> dict:
        return {
            "requests": self.requests, "feed_requests": self.feed_requests, "menu_requests": self.menu_requests,
            "sessions": self.sessions, "slots": self.slots, "clicks": self.clicks, "orders": self.orders,
            "true_ctr": self.true_ctr, "true_ctr_feed": self.true_ctr_of("feed"),
            "true_ctr_menu": self.true_ctr_of("menu"), "degraded_share": self.degraded_share,
            "degraded_reasons": dict(self.degraded_reasons), "feedback_sent": self.feedback_sent,
            "feedback_accepted": self.feedback_accepted, "errors": dict(self.errors),
            "foreign_entries": self.foreign_entries, "seconds": self.seconds,
        }


def check_loopback(address: str) -> str:
    """``address`` (HOST:PORT) if HOST resolves only to loopback addresses, else TrafficError."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TrafficError(f"addr={address!r}: expected HOST:PORT")
    try:
        infos = socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise TrafficError(f"addr={address!r}: cannot resolve {host!r} ({exc})") from None
    if not infos or not all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos):
        raise TrafficError(f"addr={address!r}: traffic goes to loopback addresses only")
    return address


def session_times(truth: GroundTruth, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) session times (us): the day after the simulated period, hours by the daily profile."""
    w = truth.world
    day = w.start_us + w.days * DAY_US
    hour = rng.choice(24, size=n, p=HOURLY / HOURLY.sum())
    return day + hour * HOUR_US + rng.integers(0, HOUR_US, n)


def pick_users(truth: GroundTruth, n: int, before_us: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` distinct users signed up before ``before_us``, drawn uniformly."""
    eligible = np.flatnonzero(truth.world.user_signup_us < before_us)
    return rng.choice(eligible, size=min(n, len(eligible)), replace=False).astype(np.int64)


def _datetime(ts_us: int) -> datetime:
    return datetime.fromtimestamp(ts_us / 1_000_000, tz=timezone.utc)


class _Session:
    """One user's visit; collects the feedback to send."""

    def __init__(self, client, truth: GroundTruth, settings: TrafficSettings, summary: TrafficSummary,
                 rng: np.random.Generator, deadline: float):
        self.client, self.truth, self.settings, self.summary = client, truth, settings, summary
        self.rng, self.deadline = rng, deadline
        self.feedback: list[Feedback] = []

    def budget_left(self) -> bool:
        return self.summary.requests < self.settings.requests and time.monotonic() < self.deadline

    def call(self, surface: Surface, user: int, ts_us: int, restaurant: int | None = None) -> Served | None:
        s, ctx = self.settings, RequestContext(request_time=_datetime(ts_us))
        self.summary.requests += 1
        self.summary.feed_requests += surface == "feed"
        self.summary.menu_requests += surface == "menu"
        try:
            if surface == "feed":
                ranked = self.client.recommend_restaurants(str(user), k=s.feed_k, context=ctx, explain=s.explain,
                                                           timeout=s.timeout)
            else:
                ranked = self.client.recommend_items(str(user), str(restaurant), k=s.menu_k, context=ctx,
                                                     explain=s.explain, timeout=s.timeout)
        except RecsysError as exc:
            self.summary.errors[type(exc).__name__] += 1
            return None
        if ranked.degraded:
            self.summary.degraded += 1
            self.summary.degraded_reasons[ranked.degraded_reason] += 1
        return self.react(surface, user, ts_us, ranked, restaurant)

    def react(self, surface: Surface, user: int, ts_us: int, ranked: RankedList,
              restaurant: int | None = None) -> Served:
        """Clicks and orders on ``ranked`` drawn from the truth; feedback queued."""
        w = self.truth.world
        n_entities = w.n_restaurants if surface == "feed" else w.n_items
        ids = np.array([int(e.id) if e.id.isdigit() else -1 for e in ranked.entries], dtype=np.int64)
        known = (ids >= 0) & (ids < n_entities)
        if restaurant is not None:  # an item of another restaurant is not on this menu
            known &= w.item_restaurant[np.where(known, ids, 0)] == restaurant
        self.summary.foreign_entries += int((~known).sum())
        positions = np.array([e.position for e in ranked.entries], dtype=np.int64)
        users = np.full(len(ids), user, dtype=np.int64)
        times = np.full(len(ids), ts_us, dtype=np.int64)
        p_click = np.zeros(len(ids))
        p_order = np.zeros(len(ids))
        if known.any():
            p_click[known] = self.truth.click_probability(surface, users[known], ids[known], positions[known],
                                                          times[known])
            p_order[known] = self.truth.order_given_click(surface, users[known], ids[known], times[known])
        clicked = self.rng.random(len(ids)) < p_click
        ordered = clicked & (self.rng.random(len(ids)) < p_order)
        self.summary.slots += len(ids)
        self.summary.expected_clicks += float(p_click.sum())
        self.summary._by_surface[surface][0] += len(ids)
        self.summary._by_surface[surface][1] += float(p_click.sum())
        self.summary.clicks += int(clicked.sum())
        self.summary.orders += int(ordered.sum())
        when = _datetime(ts_us + 20_000_000)  # the user acts ~20 s after the list is shown
        for entry, c, o in zip(ranked.entries, clicked, ordered):
            if c:
                self.feedback.append(Feedback(ranked.request_id, entry.id, "click", when))
            if o:
                self.feedback.append(Feedback(ranked.request_id, entry.id, "order", when))
        served = Served(surface, user, _datetime(ts_us), ranked, tuple(p_click.tolist()), tuple(clicked.tolist()),
                        tuple(ordered.tolist()))
        if self.settings.keep_lists:
            self.summary.served.append(served)
        return served

    def run(self, user: int, ts_us: int) -> None:
        feed = self.call("feed", user, ts_us)
        if feed is not None:
            for entry, c in zip(feed.ranked.entries, feed.clicked):
                if not c or not self.budget_left():
                    continue
                menu_ts = ts_us + int(self.rng.integers(30, 300)) * 1_000_000
                self.call("menu", user, menu_ts, int(entry.id))
        self.send_feedback()

    def send_feedback(self) -> None:
        if not self.feedback:
            return
        self.summary.feedback_sent += len(self.feedback)
        try:
            self.summary.feedback_accepted += self.client.log_feedback(self.feedback, timeout=self.settings.timeout)
        except RecsysError as exc:
            self.summary.errors[f"LogFeedback:{type(exc).__name__}"] += 1
        self.feedback = []


def run_traffic(address: str, truth: GroundTruth, settings: TrafficSettings = TrafficSettings(), *,
                client=None) -> TrafficSummary:
    """Send simulated sessions to the server at ``address`` (loopback) until a bound is hit.

    Users are drawn once (``settings.users`` distinct users) and take turns, one session each per
    round, each session at its own simulated time, until ``settings.requests`` calls were made
    or ``settings.max_seconds`` passed. ``client``: an object with the methods of
    :class:`~recsys.serving.client.RecommenderClient` (default: one connected to ``address``).
    """
    from recsys.serving.client import RecommenderClient

    check_loopback(address)
    rng = np.random.default_rng([settings.seed, 29])
    first_day = truth.world.start_us + truth.world.days * DAY_US
    users = pick_users(truth, settings.users, first_day, rng)
    if len(users) == 0:
        raise TrafficError("no user of the world has signed up before the traffic's day")
    summary = TrafficSummary()
    started = time.monotonic()
    deadline = started + settings.max_seconds
    own = client is None
    client = RecommenderClient(address, timeout=settings.timeout) if own else client
    try:
        session = _Session(client, truth, settings, summary, rng, deadline)
        while session.budget_left():
            for user, ts_us in zip(users.tolist(), session_times(truth, len(users), rng).tolist()):
                if not session.budget_left():
                    break
                summary.sessions += 1
                session.run(int(user), int(ts_us))
    finally:
        if own:
            client.close()
    summary.seconds = time.monotonic() - started
    return summary
