"""The simulated marketplace: users, restaurants and items with their hidden latent parameters.

A :class:`World` is pure data (numpy arrays). It is built from a seed by :func:`build_world`,
saved as ``.npz`` (no pickles) next to the raw tables so the ground-truth API can be rebuilt
without re-simulating, and turned into the public tables (users, restaurants, items) that the
rest of the system sees. The latent parameters (taste vectors, price sensitivity, popularity)
never appear in those tables: they are what the model has to learn.

See docs/SIMULATOR.md for the generative story and the click model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from recsys.contracts.schemas import CUISINES, ITEM_CATEGORIES, PLATFORMS

DAY_US = 86_400 * 1_000_000

# Relative share of restaurants per cuisine (CUISINES order) and base item prices per category.
CUISINE_WEIGHTS = np.array([14, 12, 7, 8, 9, 6, 7, 9, 4, 6, 5, 8], dtype=np.float64)
CATEGORY_WEIGHTS = np.array([0.45, 0.2, 0.12, 0.13, 0.10])  # main, side, starter, drink, dessert
CATEGORY_BASE_PRICE = np.array([12.0, 4.5, 6.5, 3.0, 5.5])
PRICE_LEVEL_MULT = np.array([0.0, 0.7, 1.0, 1.45, 2.1])  # index by price level 1..4

_FIRST = np.array(["Ada", "Bo", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jun",
                   "Kemal", "Lena", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq"])
_LAST = np.array(["Abara", "Becker", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad",
                  "Ivanova", "Jansen", "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Petrov"])


@dataclass(frozen=True)
class World:
    """All hidden and public parameters of one simulated marketplace (arrays indexed by id)."""

    seed: int
    grid_size: int
    start_us: int  # simulation start, microseconds since epoch (UTC)
    days: int
    drift_day: int  # -1: no drift
    delivery_radius: int  # restaurants deliver to cells within this Chebyshev distance
    cuisine_centroids: np.ndarray  # (K, D) unit vectors
    # users
    user_cell: np.ndarray  # (U,) int32
    user_taste: np.ndarray  # (U, D) before drift
    user_taste_drifted: np.ndarray  # (U, D) after drift_day (== user_taste for non-drifting users)
    user_drifts: np.ndarray  # (U,) bool
    user_price_sens: np.ndarray  # (U,) >0
    user_activity: np.ndarray  # (U,) mean 1
    user_signup_us: np.ndarray  # (U,) int64
    user_platform: np.ndarray  # (U,) int8 index into PLATFORMS
    # restaurants
    rest_cell: np.ndarray  # (R,) int32
    rest_cuisine: np.ndarray  # (R,) int8 index into CUISINES
    rest_taste: np.ndarray  # (R, D)
    rest_price_level: np.ndarray  # (R,) int8 1..4
    rest_rating: np.ndarray  # (R,) float32
    rest_log_pop: np.ndarray  # (R,) standard normal
    rest_open_hour: np.ndarray  # (R,) int8
    rest_close_hour: np.ndarray  # (R,) int8
    rest_created_us: np.ndarray  # (R,) int64
    # items
    item_restaurant: np.ndarray  # (I,) int64, sorted
    item_category: np.ndarray  # (I,) int8 index into ITEM_CATEGORIES
    item_taste: np.ndarray  # (I, D)
    item_price: np.ndarray  # (I,) float32
    item_log_pop: np.ndarray  # (I,)
    item_rel_price: np.ndarray  # (I,) log(price / category median price)

    @property
    def n_users(self) -> int:
        return len(self.user_cell)

    @property
    def n_restaurants(self) -> int:
        return len(self.rest_cell)

    @property
    def n_items(self) -> int:
        return len(self.item_restaurant)

    @property
    def n_cells(self) -> int:
        return self.grid_size * self.grid_size

    @property
    def menu_offsets(self) -> np.ndarray:
        """CSR offsets: items of restaurant r are item ids menu_offsets[r]:menu_offsets[r+1]."""
        counts = np.bincount(self.item_restaurant, minlength=self.n_restaurants)
        return np.r_[0, np.cumsum(counts)].astype(np.int64)

    # ---- persistence: npz, never pickles ----
    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{k: np.asarray(v) for k, v in asdict(self).items()})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "World":
        with np.load(path, allow_pickle=False) as data:
            values = {}
            for f in fields(cls):
                arr = data[f.name]
                values[f.name] = arr.item() if arr.ndim == 0 else arr
        return cls(**values)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def build_world(
    *,
    seed: int,
    n_users: int,
    n_restaurants: int,
    items_per_restaurant: int,
    days: int,
    grid_size: int,
    start_date: date,
    taste_dim: int,
    drift_day: int | None,
    drift_share: float,
    delivery_radius: int,
) -> World:
    """Draw a marketplace. Same arguments, same world (bit for bit)."""
    rng = np.random.default_rng([seed, 1])
    n_cuisines = len(CUISINES)
    start_us = int(datetime(start_date.year, start_date.month, start_date.day, tzinfo=timezone.utc).timestamp() * 1e6)
    n_cells = grid_size * grid_size
    centroids = _unit(rng.standard_normal((n_cuisines, taste_dim)))
    cuisine_p = CUISINE_WEIGHTS / CUISINE_WEIGHTS.sum()

    # Users: a primary and a secondary cuisine, plus individual taste.
    def draw_taste(n: int) -> np.ndarray:
        primary = rng.choice(n_cuisines, size=n, p=cuisine_p)
        secondary = rng.choice(n_cuisines, size=n, p=cuisine_p)
        noise = rng.standard_normal((n, taste_dim)) / np.sqrt(taste_dim)
        return _unit(1.0 * centroids[primary] + 0.5 * centroids[secondary] + 0.9 * noise)

    user_taste = draw_taste(n_users)
    user_drifts = rng.random(n_users) < (drift_share if drift_day is not None else 0.0)
    drifted = draw_taste(n_users)
    user_taste_drifted = np.where(user_drifts[:, None], drifted, user_taste)
    user_cell = rng.integers(0, n_cells, n_users).astype(np.int32)
    user_price_sens = rng.lognormal(0.0, 0.5, n_users)
    activity = rng.lognormal(0.0, 0.8, n_users)
    user_activity = activity / activity.mean()
    # 85% signed up during the year before the start, 15% during the simulated period (new users).
    new_user = rng.random(n_users) < 0.15
    before = start_us - (rng.random(n_users) * 365 * DAY_US).astype(np.int64)
    during = start_us + (rng.random(n_users) * days * DAY_US).astype(np.int64)
    user_signup_us = np.where(new_user, during, before).astype(np.int64)
    user_platform = rng.choice(len(PLATFORMS), size=n_users, p=[0.45, 0.4, 0.15]).astype(np.int8)

    # Restaurants.
    rest_cuisine = rng.choice(n_cuisines, size=n_restaurants, p=cuisine_p).astype(np.int8)
    rest_taste = _unit(centroids[rest_cuisine] + 0.6 * rng.standard_normal((n_restaurants, taste_dim)) / np.sqrt(taste_dim))
    rest_cell = rng.integers(0, n_cells, n_restaurants).astype(np.int32)
    rest_price_level = rng.choice([1, 2, 3, 4], size=n_restaurants, p=[0.3, 0.35, 0.25, 0.1]).astype(np.int8)
    rest_rating = np.clip(np.round(rng.normal(4.1, 0.4, n_restaurants), 1), 1.0, 5.0).astype(np.float32)
    rest_log_pop = rng.standard_normal(n_restaurants)
    hours_kind = rng.choice(3, size=n_restaurants, p=[0.7, 0.2, 0.1])
    breakfast = np.asarray(CUISINES)[rest_cuisine] == "breakfast"
    hours_kind = np.where(breakfast, 2, hours_kind)
    rest_open_hour = np.array([0, 10, 6], dtype=np.int8)[hours_kind]
    rest_close_hour = np.array([24, 23, 15], dtype=np.int8)[hours_kind]
    new_rest = rng.random(n_restaurants) < 0.08
    rest_created_us = np.where(
        new_rest,
        start_us + (rng.random(n_restaurants) * days * DAY_US).astype(np.int64),
        start_us - (rng.random(n_restaurants) * 3 * 365 * DAY_US).astype(np.int64) - DAY_US,
    ).astype(np.int64)

    # Items: menus of at least 3, around the restaurant's taste.
    menu_size = np.maximum(3, rng.poisson(items_per_restaurant, n_restaurants))
    item_restaurant = np.repeat(np.arange(n_restaurants, dtype=np.int64), menu_size)
    n_items = len(item_restaurant)
    item_category = rng.choice(len(ITEM_CATEGORIES), size=n_items, p=CATEGORY_WEIGHTS).astype(np.int8)
    item_taste = _unit(rest_taste[item_restaurant] + 0.7 * rng.standard_normal((n_items, taste_dim)) / np.sqrt(taste_dim))
    raw_price = (
        CATEGORY_BASE_PRICE[item_category]
        * PRICE_LEVEL_MULT[rest_price_level[item_restaurant]]
        * rng.lognormal(0.0, 0.25, n_items)
    )
    item_price = np.maximum(0.5, np.round(raw_price * 2) / 2).astype(np.float32)
    median_by_cat = np.array([np.median(item_price[item_category == c]) if np.any(item_category == c) else 1.0
                              for c in range(len(ITEM_CATEGORIES))])
    item_rel_price = np.log(item_price / median_by_cat[item_category])
    item_log_pop = rng.standard_normal(n_items)

    return World(
        seed=seed,
        grid_size=grid_size,
        start_us=start_us,
        days=days,
        drift_day=-1 if drift_day is None else drift_day,
        delivery_radius=delivery_radius,
        cuisine_centroids=centroids,
        user_cell=user_cell,
        user_taste=user_taste,
        user_taste_drifted=user_taste_drifted,
        user_drifts=user_drifts,
        user_price_sens=user_price_sens,
        user_activity=user_activity,
        user_signup_us=user_signup_us,
        user_platform=user_platform,
        rest_cell=rest_cell,
        rest_cuisine=rest_cuisine,
        rest_taste=rest_taste,
        rest_price_level=rest_price_level,
        rest_rating=rest_rating,
        rest_log_pop=rest_log_pop,
        rest_open_hour=rest_open_hour,
        rest_close_hour=rest_close_hour,
        rest_created_us=rest_created_us,
        item_restaurant=item_restaurant,
        item_category=item_category,
        item_taste=item_taste,
        item_price=item_price,
        item_log_pop=item_log_pop,
        item_rel_price=item_rel_price,
    )


def _ts(us: np.ndarray) -> pl.Series:
    return pl.Series(us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))


def users_table(world: World) -> pl.DataFrame:
    """The public users table, with raw PII as real user exports carry it."""
    ids = np.arange(world.n_users, dtype=np.int64)
    rng = np.random.default_rng([world.seed, 2])
    first = _FIRST[rng.integers(0, len(_FIRST), world.n_users)]
    last = _LAST[rng.integers(0, len(_LAST), world.n_users)]
    phone_digits = rng.integers(0, 10_000_000, world.n_users)
    return pl.DataFrame(
        {
            "user_id": ids,
            "home_cell": world.user_cell,
            "signup_ts": _ts(world.user_signup_us),
            "platform": np.asarray(PLATFORMS)[world.user_platform],
            "name": pl.Series(first) + " " + pl.Series(last),
        }
    ).with_columns(
        email=(pl.Series(first).str.to_lowercase() + "." + pl.Series(last).str.to_lowercase()
               + pl.Series(ids).cast(pl.Utf8) + "@example.com"),
        phone="+1-555-" + pl.Series(phone_digits).cast(pl.Utf8).str.zfill(7),
    )


def restaurants_table(world: World) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "restaurant_id": np.arange(world.n_restaurants, dtype=np.int64),
            "cell": world.rest_cell,
            "cuisine": np.asarray(CUISINES)[world.rest_cuisine],
            "price_level": world.rest_price_level,
            "rating": world.rest_rating,
            "open_hour": world.rest_open_hour,
            "close_hour": world.rest_close_hour,
            "created_ts": _ts(world.rest_created_us),
        }
    )


def items_table(world: World) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": np.arange(world.n_items, dtype=np.int64),
            "restaurant_id": world.item_restaurant,
            "category": np.asarray(ITEM_CATEGORIES)[world.item_category],
            "price": world.item_price,
        }
    )
