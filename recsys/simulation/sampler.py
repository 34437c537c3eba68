"""The sampler: draws requests, lets the logging policy rank and explore, and samples clicks and
orders from the ground truth. Vectorised over chunks of requests (no Python loop per event).

Flow per chunk of feed requests (sorted by time):
  feed candidates -> legacy greedy score -> explore_rank (propensities) -> first ``feed_slots``
  -> clicks and orders from the truth -> every feed click opens that restaurant's menu a few
  minutes later -> menu candidates -> greedy -> explore -> first ``menu_slots`` -> clicks, orders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import polars as pl

from recsys.ranking.exploration import explore_rank
from recsys.simulation.truth import GroundTruth
from recsys.simulation.world import DAY_US, World

LOGGING_POLICY = "legacy-v0"
HOUR_US = 3_600 * 1_000_000
# Request arrivals: share of a day's requests per hour (lunch and dinner peaks), and weekday
# multipliers (Monday first). Activity seasonality, separate from taste seasonality in truth.py.
HOURLY = np.array([0.4, 0.2, 0.1, 0.1, 0.1, 0.2, 0.6, 1.2, 1.5, 1.2, 1.3, 2.5,
                   3.4, 2.8, 1.5, 1.2, 1.4, 2.2, 3.4, 3.8, 3.0, 2.0, 1.3, 0.8])
WEEKLY = np.array([0.85, 0.9, 0.95, 1.0, 1.2, 1.25, 1.1])
MENU_CATEGORY_PRIOR = np.array([1.0, 0.3, 0.5, 0.0, 0.2])  # main, side, starter, drink, dessert

IMPRESSION_SCHEMA = {
    "request_id": pl.Int64,
    "ts": pl.Datetime("us", "UTC"),
    "user_id": pl.Int64,
    "surface": pl.Utf8,
    "restaurant_id": pl.Int64,
    "item_id": pl.Int64,
    "position": pl.Int16,
    "propensity": pl.Float64,
    "policy": pl.Utf8,
    "clicked": pl.Boolean,
    "ordered": pl.Boolean,
    "n_candidates": pl.Int32,
}


@dataclass(frozen=True)
class LoggingSettings:
    epsilon: float
    feed_slots: int
    menu_slots: int


def draw_feed_requests(world: World, requests_per_user_day: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Feed request arrivals ``(user_id, ts_us)`` sorted by time: Poisson per user-day, scaled by
    activity and weekday, hour from the daily profile, only after the user's signup."""
    rng = np.random.default_rng([seed, 3])
    users, times = [], []
    hourly = HOURLY / HOURLY.sum()
    weekly = WEEKLY / WEEKLY.mean()
    for day in range(world.days):  # a loop over days, vectorised over users
        day_start = world.start_us + day * DAY_US
        weekday = (day_start // DAY_US + 3) % 7
        lam = requests_per_user_day * world.user_activity * weekly[weekday]
        counts = rng.poisson(lam)
        user = np.repeat(np.arange(world.n_users, dtype=np.int64), counts)
        hour = rng.choice(24, size=len(user), p=hourly)
        ts = day_start + hour * HOUR_US + rng.integers(0, HOUR_US, len(user))
        keep = ts >= world.user_signup_us[user]
        users.append(user[keep])
        times.append(ts[keep])
    user, ts = np.concatenate(users), np.concatenate(times)
    order = np.lexsort((user, ts))
    return user[order], ts[order]


def feed_greedy_score(world: World, truth: GroundTruth, user: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """The legacy production ranking: rating, a popularity estimate, closeness. Not personalised."""
    return world.rest_rating[rest] + 0.3 * world.rest_log_pop[rest] - 0.3 * truth.distance(user, rest)


def menu_greedy_score(world: World, item: np.ndarray) -> np.ndarray:
    return MENU_CATEGORY_PRIOR[world.item_category[item]] + 0.3 * world.item_log_pop[item]


def _log_surface(
    surface: str,
    truth: GroundTruth,
    rng: np.random.Generator,
    settings: LoggingSettings,
    request_id: np.ndarray,
    user: np.ndarray,
    ts: np.ndarray,
    restaurant: np.ndarray | None,
) -> pl.DataFrame:
    world = truth.world
    group, entity = truth.candidates(surface, user, ts, restaurant)
    if surface == "feed":
        greedy = feed_greedy_score(world, truth, user[group], entity)
        slots = settings.feed_slots
    else:
        greedy = menu_greedy_score(world, entity)
        slots = settings.menu_slots
    explore = rng.random(len(request_id)) < settings.epsilon
    ranked = explore_rank(group, greedy, entity, explore, rng)
    shown = ranked.shown_rank < slots
    g, e, pos = group[shown], entity[shown], ranked.shown_rank[shown]
    propensity = ranked.propensity(settings.epsilon)[shown]
    p_click = truth.click_probability(surface, user[g], e, pos, ts[g])
    clicked = rng.random(len(g)) < p_click
    p_order = truth.order_given_click(surface, user[g], e, ts[g])
    ordered = clicked & (rng.random(len(g)) < p_order)
    is_feed = surface == "feed"
    frame = pl.DataFrame(
        {
            "request_id": request_id[g],
            "ts": pl.Series(ts[g]).cast(pl.Datetime("us", "UTC")),
            "user_id": user[g],
            "restaurant_id": e if is_feed else restaurant[g],
            "item_id": e,
            "position": pos.astype(np.int16),
            "propensity": propensity,
            "clicked": clicked,
            "ordered": ordered,
            "n_candidates": ranked.group_size[shown],
        },
        schema={k: v for k, v in IMPRESSION_SCHEMA.items() if k not in ("surface", "policy")},
    ).with_columns(surface=pl.lit(surface), policy=pl.lit(LOGGING_POLICY))
    if is_feed:
        frame = frame.with_columns(item_id=pl.lit(None, dtype=pl.Int64))
    return frame.select(IMPRESSION_SCHEMA.keys())


def sample_impressions(
    truth: GroundTruth,
    feed_user: np.ndarray,
    feed_ts: np.ndarray,
    settings: LoggingSettings,
    seed: int,
    chunk_requests: int,
) -> Iterator[pl.DataFrame]:
    """Yield the impressions log chunk by chunk (feed rows, then the menus they opened)."""
    n_feed = len(feed_user)
    next_menu_id = n_feed  # feed request ids are 0..n_feed-1, menu ids follow
    for chunk, start in enumerate(range(0, n_feed, chunk_requests)):
        rng = np.random.default_rng([seed, 4, chunk])
        stop = min(start + chunk_requests, n_feed)
        rid = np.arange(start, stop, dtype=np.int64)
        user, ts = feed_user[start:stop], feed_ts[start:stop]
        feed = _log_surface("feed", truth, rng, settings, rid, user, ts, None)
        clicks = feed.filter(pl.col("clicked"))
        menu_ts = clicks["ts"].dt.epoch("us").to_numpy() + rng.integers(30, 300, len(clicks)) * 1_000_000
        menu_rid = np.arange(next_menu_id, next_menu_id + len(clicks), dtype=np.int64)
        next_menu_id += len(clicks)
        menu = _log_surface("menu", truth, rng, settings, menu_rid, clicks["user_id"].to_numpy(),
                            menu_ts, clicks["restaurant_id"].to_numpy())
        yield pl.concat([feed, menu]).sort("ts", "request_id", "position")
