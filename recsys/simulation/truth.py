"""Ground truth: the true click and order probabilities of the simulated marketplace.

This module is the oracle, kept apart from the sampler (``sampler.py``) that draws logs from it.
It answers, for any (user, restaurant or item, position, time):

* ``click_probability`` = examination(position) x attractiveness(user, entity, time)
  (a position-based model), and ``order_probability`` = click x P(order | click);
* ``expected_reward`` of any policy given as policy lists (DATA_CONTRACTS.md), both surfaces;
* ``oracle_lists`` (the best possible lists) and ``random_reward`` (the uniform policy's value).

The generative story and every coefficient are written down in docs/SIMULATOR.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from scipy.special import expit, ndtri

from recsys.contracts.schemas import CUISINES, ITEM_CATEGORIES
from recsys.ranking.exploration import rank_within_groups
from recsys.simulation.world import DAY_US, World

Surface = Literal["feed", "menu"]
Reward = Literal["clicked", "ordered"]
HOUR_US = 3_600 * 1_000_000


@dataclass(frozen=True)
class ClickModel:
    """Coefficients of the click model (docs/SIMULATOR.md). Logit scale."""

    feed_bias: float = -2.6
    feed_taste: float = 3.0
    feed_pop: float = 0.6
    feed_rating: float = 0.8
    feed_price: float = 0.35
    feed_distance: float = 0.35
    menu_bias: float = -2.0
    menu_taste: float = 3.0
    menu_pop: float = 0.55
    menu_price: float = 0.7
    season: float = 1.0
    noise_sd: float = 0.3
    exam_eta: float = 0.8
    order_bias: float = -0.9
    order_taste: float = 1.5
    order_price: float = 0.6


def _season_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Taste seasonality: cuisine x hour and cuisine x weekend bonuses, category x hour for items."""
    hours = np.arange(24)
    cuisine_hour = np.zeros((len(CUISINES), 24))
    idx = {c: i for i, c in enumerate(CUISINES)}
    cuisine_hour[idx["breakfast"]] = np.where((hours >= 6) & (hours <= 10), 1.2, -0.8)
    cuisine_hour[idx["dessert"]] = np.where((hours >= 20) | ((hours >= 14) & (hours <= 16)), 0.6, -0.2)
    late = (hours >= 21) | (hours <= 2)
    for c in ("pizza", "burger", "kebab"):
        cuisine_hour[idx[c]] = np.where(late, 0.4, 0.0)
    lunch = (hours >= 11) & (hours <= 14)
    for c in ("sushi", "vegan", "thai"):
        cuisine_hour[idx[c]] = np.where(lunch, 0.3, -0.1)
    cuisine_weekend = np.zeros(len(CUISINES))
    for c, v in {"pizza": 0.3, "burger": 0.3, "sushi": 0.2, "breakfast": 0.4, "indian": 0.1, "vegan": -0.2}.items():
        cuisine_weekend[idx[c]] = v
    cat = {c: i for i, c in enumerate(ITEM_CATEGORIES)}
    category_hour = np.zeros((len(ITEM_CATEGORIES), 24))
    category_hour[cat["dessert"]] = np.where(hours >= 19, 0.5, -0.1)
    category_hour[cat["drink"]] = np.where((hours >= 13) & (hours <= 17), 0.3, 0.0)
    category_hour[cat["starter"]] = np.where(hours >= 18, 0.2, -0.1)
    return cuisine_hour, cuisine_weekend, category_hour


def _hash_normal(seed: int, salt: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A fixed standard-normal draw per (a, b) pair: splitmix64 of the pair, then the inverse CDF.

    Written by hand because it must be a pure function of the ids (the truth API and the sampler
    see the same idiosyncratic noise without storing a users x entities matrix).
    """
    with np.errstate(over="ignore"):
        x = (np.asarray(a, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             ^ np.asarray(b, dtype=np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
             ^ np.uint64((seed * 1_000_003 + salt) & 0xFFFFFFFFFFFFFFFF))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    u = ((x >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)
    return ndtri(u)


class GroundTruth:
    """The oracle of one :class:`World`. Construction is pure (no I/O, no heavy work)."""

    def __init__(self, world: World, model: ClickModel = ClickModel()):
        self.world = world
        self.model = model
        self._cuisine_hour, self._cuisine_weekend, self._category_hour = _season_tables()
        self._neighbours: tuple[np.ndarray, np.ndarray] | None = None

    # ---- the click model ----
    def examination(self, position: np.ndarray) -> np.ndarray:
        """Probability that a user looks at a 0-based position (falls with position)."""
        return (1.0 + np.asarray(position, dtype=np.float64)) ** -self.model.exam_eta

    def taste(self, user_id: np.ndarray, ts_us: np.ndarray) -> np.ndarray:
        """Users' taste vectors at time ts (after drift_day, drifting users have a new taste)."""
        w = self.world
        if w.drift_day < 0:
            return w.user_taste[user_id]
        after = (np.asarray(ts_us) - w.start_us) >= w.drift_day * DAY_US
        return np.where(after[:, None], w.user_taste_drifted[user_id], w.user_taste[user_id])

    def _time_parts(self, ts_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ts_us = np.asarray(ts_us, dtype=np.int64)
        hour = (ts_us // HOUR_US) % 24
        weekday = (ts_us // DAY_US + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        return hour, weekday >= 5

    def distance(self, user_id: np.ndarray, restaurant_id: np.ndarray) -> np.ndarray:
        """Euclidean distance in grid cells between the user's home and the restaurant."""
        g = self.world.grid_size
        uc, rc = self.world.user_cell[user_id], self.world.rest_cell[restaurant_id]
        return np.hypot(uc // g - rc // g, uc % g - rc % g)

    def _feed_logit(self, user_id, restaurant_id, ts_us) -> np.ndarray:
        w, m = self.world, self.model
        hour, weekend = self._time_parts(ts_us)
        cuisine = w.rest_cuisine[restaurant_id]
        affinity = np.einsum("nd,nd->n", self.taste(user_id, ts_us), w.rest_taste[restaurant_id])
        price = (w.rest_price_level[restaurant_id] - 2.0) / 1.5
        return (
            m.feed_bias
            + m.feed_taste * affinity
            + m.feed_pop * w.rest_log_pop[restaurant_id]
            + m.feed_rating * (w.rest_rating[restaurant_id] - 4.0)
            - m.feed_price * w.user_price_sens[user_id] * price
            - m.feed_distance * self.distance(user_id, restaurant_id)
            + m.season * (self._cuisine_hour[cuisine, hour] + self._cuisine_weekend[cuisine] * weekend)
            + m.noise_sd * _hash_normal(w.seed, 11, user_id, restaurant_id)
        )

    def _menu_logit(self, user_id, item_id, ts_us) -> np.ndarray:
        w, m = self.world, self.model
        hour, _ = self._time_parts(ts_us)
        affinity = np.einsum("nd,nd->n", self.taste(user_id, ts_us), w.item_taste[item_id])
        return (
            m.menu_bias
            + m.menu_taste * affinity
            + m.menu_pop * w.item_log_pop[item_id]
            - m.menu_price * w.user_price_sens[user_id] * w.item_rel_price[item_id]
            + m.season * self._category_hour[w.item_category[item_id], hour]
            + m.noise_sd * _hash_normal(w.seed, 13, user_id, item_id)
        )

    def attractiveness(self, surface: Surface, user_id, entity_id, ts_us) -> np.ndarray:
        """P(click | examined): restaurant on the feed, item on the menu."""
        user_id, entity_id = np.asarray(user_id, np.int64), np.asarray(entity_id, np.int64)
        logit = self._feed_logit(user_id, entity_id, ts_us) if surface == "feed" else self._menu_logit(user_id, entity_id, ts_us)
        return expit(logit)

    def order_given_click(self, surface: Surface, user_id, entity_id, ts_us) -> np.ndarray:
        w, m = self.world, self.model
        user_id, entity_id = np.asarray(user_id, np.int64), np.asarray(entity_id, np.int64)
        taste = self.taste(user_id, ts_us)
        if surface == "feed":
            affinity = np.einsum("nd,nd->n", taste, w.rest_taste[entity_id])
            price = (w.rest_price_level[entity_id] - 2.0) / 1.5
        else:
            affinity = np.einsum("nd,nd->n", taste, w.item_taste[entity_id])
            price = w.item_rel_price[entity_id]
        return expit(m.order_bias + m.order_taste * affinity - m.order_price * w.user_price_sens[user_id] * price)

    def click_probability(self, surface: Surface, user_id, entity_id, position, ts_us) -> np.ndarray:
        return self.examination(position) * self.attractiveness(surface, user_id, entity_id, ts_us)

    def reward_probability(self, surface: Surface, reward: Reward, user_id, entity_id, position, ts_us) -> np.ndarray:
        p = self.click_probability(surface, user_id, entity_id, position, ts_us)
        if reward == "ordered":
            p = p * self.order_given_click(surface, user_id, entity_id, ts_us)
        return p

    # ---- candidates: what a request can show ----
    def _cell_neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR (offsets, restaurant ids) of restaurants delivering to each cell."""
        if self._neighbours is None:
            w, g, r = self.world, self.world.grid_size, self.world.delivery_radius
            order = np.argsort(w.rest_cell, kind="stable")
            start = np.r_[0, np.cumsum(np.bincount(w.rest_cell, minlength=w.n_cells))]
            lists = []
            for cell in range(w.n_cells):  # once per world, over cells (not events)
                row, col = divmod(cell, g)
                rows = np.arange(max(0, row - r), min(g, row + r + 1))
                cols = np.arange(max(0, col - r), min(g, col + r + 1))
                cells = (rows[:, None] * g + cols[None, :]).ravel()
                lists.append(np.sort(np.concatenate([order[start[c]:start[c + 1]] for c in cells])))
            offsets = np.r_[0, np.cumsum([len(x) for x in lists])].astype(np.int64)
            self._neighbours = (offsets, np.concatenate(lists).astype(np.int64))
        return self._neighbours

    def candidates(self, surface: Surface, user_id, ts_us, restaurant_id=None) -> tuple[np.ndarray, np.ndarray]:
        """Candidates of a batch of requests as ragged groups ``(group, entity_id)``.

        Feed: open restaurants that exist at ts and deliver to the user's cell.
        Menu: every item of the opened restaurant.
        """
        if surface == "feed":
            offsets, rest = self._cell_neighbours()
            cells = self.world.user_cell[np.asarray(user_id, np.int64)]
        else:
            offsets, rest = self.world.menu_offsets, np.arange(self.world.n_items, dtype=np.int64)
            cells = np.asarray(restaurant_id, np.int64)
        lo, hi = offsets[cells], offsets[cells + 1]
        counts = hi - lo
        group = np.repeat(np.arange(len(cells), dtype=np.int64), counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        entity = rest[np.repeat(lo, counts) + within]
        if surface == "feed":
            w = self.world
            ts = np.asarray(ts_us, np.int64)[group]
            hour = (ts // HOUR_US) % 24
            ok = (w.rest_open_hour[entity] <= hour) & (hour < w.rest_close_hour[entity]) & (w.rest_created_us[entity] <= ts)
            group, entity = group[ok], entity[ok]
        return group, entity

    # ---- policy values ----
    def expected_reward(self, lists: pl.DataFrame, requests: pl.DataFrame, surface: Surface,
                        reward: Reward = "clicked") -> float:
        """True expected reward per shown slot of a policy given as lists.

        lists: request_id, position, and restaurant_id (feed) or item_id (menu).
        requests: request_id, ts, user_id (context of each request).
        """
        per_slot = self.expected_reward_per_slot(lists, requests, surface, reward)
        return float(per_slot.mean()) if len(per_slot) else float("nan")

    def expected_reward_per_slot(self, lists: pl.DataFrame, requests: pl.DataFrame, surface: Surface,
                                 reward: Reward = "clicked") -> np.ndarray:
        entity_col = "restaurant_id" if surface == "feed" else "item_id"
        ctx = requests.select("request_id", "ts", "user_id").unique("request_id")
        joined = lists.select("request_id", "position", entity_col).join(ctx, on="request_id", how="left")
        if joined["user_id"].null_count():
            raise ValueError("policy lists name request_ids that are not in the requests table")
        ts_us = joined["ts"].dt.epoch("us").to_numpy()
        return self.reward_probability(surface, reward, joined["user_id"].to_numpy(), joined[entity_col].to_numpy(),
                                       joined["position"].to_numpy(), ts_us)

    def _request_arrays(self, requests: pl.DataFrame, surface: Surface):
        requests = requests.unique("request_id", keep="first", maintain_order=True)
        rid = requests["request_id"].to_numpy()
        user = requests["user_id"].to_numpy().astype(np.int64)
        ts = requests["ts"].dt.epoch("us").to_numpy()
        rest = requests["restaurant_id"].to_numpy().astype(np.int64) if surface == "menu" else None
        return rid, user, ts, rest

    def oracle_lists(self, requests: pl.DataFrame, surface: Surface, slots: int,
                     reward: Reward = "clicked", reverse: bool = False) -> pl.DataFrame:
        """The best lists: each request's candidates by true reward (worst first if reverse)."""
        rid, user, ts, rest = self._request_arrays(requests, surface)
        group, entity = self.candidates(surface, user, ts, rest)
        score = self.reward_probability(surface, reward, user[group], entity, np.zeros(len(entity)), ts[group])
        rank = rank_within_groups(group, score if reverse else -score, entity)
        keep = rank < slots
        entity_col = "restaurant_id" if surface == "feed" else "item_id"
        return pl.DataFrame({"request_id": rid[group[keep]], "position": rank[keep].astype(np.int16),
                             entity_col: entity[keep]}).sort("request_id", "position")

    def random_reward(self, requests: pl.DataFrame, surface: Surface, slots: int, reward: Reward = "clicked") -> float:
        """Exact value of the uniformly random policy: E over permutations, per shown slot."""
        rid, user, ts, rest = self._request_arrays(requests, surface)
        group, entity = self.candidates(surface, user, ts, rest)
        p0 = self.reward_probability(surface, reward, user[group], entity, np.zeros(len(entity)), ts[group])
        n = np.bincount(group, minlength=len(rid))
        mean_attr = np.bincount(group, weights=p0, minlength=len(rid)) / np.maximum(n, 1)
        shown = np.minimum(n, slots)
        exam_cum = np.r_[0.0, np.cumsum(self.examination(np.arange(slots)))]
        clicks = mean_attr * exam_cum[shown]
        return float(clicks.sum() / max(shown.sum(), 1))
