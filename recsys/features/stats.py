"""Daily statistics snapshots and static profiles, computed with polars, written as Feast sources.

Snapshot semantics (point-in-time safe): a row stamped ``event_timestamp = t`` (a midnight UTC,
the end of the day it summarises) counts only events with ``ts < t``; the ``w``-day window of
that row is ``[t - w days, t)``. An event at exactly ``t`` belongs to the next snapshot. An
entity gets one row per day from the first day it appears in the log to the last day of the
log, so a point-in-time join never falls back to a stale earlier row.

CTR is smoothed with a beta prior: ``(clicks + k * p) / (impressions + k)`` where ``k`` is
``FeaturesConfig.ctr_prior_strength`` and ``p`` the global CTR of that surface over the same
window ``[t - w, t)`` (so the prior is point-in-time safe too; 0 when the window is empty).

Every output carries ``created_timestamp``. It equals ``event_timestamp`` (the value became
known at the end of its day), which keeps a rebuild from the same inputs byte-identical.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

import polars as pl

from recsys.config import Config
from recsys.errors import DataContractError

SURFACES = ("feed", "menu")
# Surfaces counted per entity kind: users and restaurants appear on both, items only on menus.
ENTITY_SURFACES: dict[str, tuple[str, ...]] = {
    "user": SURFACES,
    "restaurant": SURFACES,
    "item": ("menu",),
}
TS = "event_timestamp"
CREATED = "created_timestamp"
BASKET_WINDOW_DAYS = 28
_US_PER_DAY = 86_400 * 1_000_000

# Columns each input needs (names are the contract; extra columns are ignored).
REQUIRED = {
    "users": ("user_id", "home_cell", "signup_ts", "platform"),
    "restaurants": ("restaurant_id", "cell", "cuisine", "price_level", "rating", "created_ts"),
    "items": ("item_id", "restaurant_id", "category", "price"),
    "impressions": ("ts", "user_id", "surface", "restaurant_id", "item_id", "clicked", "ordered"),
}


def stats_feature_names(kind: str, windows: Iterable[int]) -> list[str]:
    """Feature columns of the ``{kind}_stats`` table, in schema order."""
    names = [
        f"{surface}_{metric}_{w}d"
        for surface in ENTITY_SURFACES[kind]
        for w in windows
        for metric in ("impressions", "clicks", "orders", "ctr")
    ]
    if kind == "user":
        names.append(f"avg_basket_price_{BASKET_WINDOW_DAYS}d")
    return names


def _day_index(col: str) -> pl.Expr:
    """Days since the epoch (UTC) of a timestamp column."""
    return pl.col(col).dt.convert_time_zone("UTC").dt.date().cast(pl.Int32)


def _snapshot_ts(day: pl.Expr) -> pl.Expr:
    """The end of day ``day`` (= midnight starting ``day + 1``) as Datetime(us, UTC)."""
    return ((day.cast(pl.Int64) + 1) * _US_PER_DAY).cast(pl.Datetime("us", "UTC"))


def _windowed(frame: pl.LazyFrame, key: str, counters: list[str], windows: Iterable[int]) -> pl.LazyFrame:
    """Sliding-window sums of daily counters on a dense (key, day) grid.

    ``frame`` has one row per (key, day) with counters; the result has one row per key and day
    from the key's first day to ``last_day`` with ``{counter}_{w}d`` = the sum over days
    ``(day - w, day]`` (events strictly before the snapshot stamped at the end of ``day``).
    """
    cum = [pl.col(c).cum_sum().over(key, order_by="day").alias(f"_cum_{c}") for c in counters]
    out = frame.sort(key, "day").with_columns(cum)
    sums = []
    for w in windows:
        for c in counters:
            cum_c = pl.col(f"_cum_{c}")
            sums.append(
                (cum_c - cum_c.shift(w).over(key, order_by="day").fill_null(0)).alias(f"{c}_{w}d")
            )
    return out.with_columns(sums).drop([f"_cum_{c}" for c in counters] + counters)


def _dense_daily(
    events: pl.LazyFrame, key: str, counters: dict[str, pl.Expr], last_day: int
) -> pl.LazyFrame:
    """Daily counters per key, with zero rows for days without events (first day .. last_day)."""
    daily = events.group_by(key, "day").agg(**counters)
    grid = (
        daily.group_by(key)
        .agg(pl.col("day").min().alias("_first"))
        .select(key, pl.int_ranges("_first", last_day + 1, dtype=pl.Int32).alias("day"))
        .explode("day")
    )
    return grid.join(daily, on=[key, "day"], how="left").with_columns(
        [pl.col(c).fill_null(0) for c in counters]
    )


def _smoothed_ctr(clicks: str, impressions: str, prior: str, strength: float) -> pl.Expr:
    return (pl.col(clicks) + strength * pl.col(prior)) / (pl.col(impressions) + strength)


def _events(impressions: pl.LazyFrame) -> pl.LazyFrame:
    return impressions.select(
        pl.col("user_id").cast(pl.Int64),
        pl.col("restaurant_id").cast(pl.Int64),
        pl.col("item_id").cast(pl.Int64),
        pl.col("surface").cast(pl.Utf8),
        _day_index("ts").alias("day"),
        pl.col("clicked").cast(pl.Int64).alias("clicked"),
        pl.col("ordered").cast(pl.Int64).alias("ordered"),
    )


def _global_priors(events: pl.LazyFrame, windows: tuple[int, ...], last_day: int) -> pl.LazyFrame:
    """Per surface and day: the global CTR over each window, columns ``{surface}_prior_{w}d``."""
    out = None
    for surface in SURFACES:
        daily = _dense_daily(
            events.filter(pl.col("surface") == surface).with_columns(pl.lit(0).alias("_all")),
            "_all",
            {"i": pl.len().cast(pl.Int64), "c": pl.col("clicked").sum()},
            last_day,
        )
        win = _windowed(daily, "_all", ["i", "c"], windows).select(
            "day",
            *[
                pl.when(pl.col(f"i_{w}d") > 0)
                .then(pl.col(f"c_{w}d") / pl.col(f"i_{w}d"))
                .otherwise(0.0)
                .alias(f"{surface}_prior_{w}d")
                for w in windows
            ],
        )
        out = win if out is None else out.join(win, on="day", how="full", coalesce=True)
    assert out is not None
    return out


def entity_stats(
    impressions: pl.LazyFrame,
    items: pl.LazyFrame,
    kind: str,
    windows: tuple[int, ...],
    prior_strength: float,
) -> pl.LazyFrame:
    """Daily snapshots for one entity kind (``user``, ``restaurant`` or ``item``).

    Returns columns ``{kind}_id``, ``event_timestamp``, ``created_timestamp`` and
    :func:`stats_feature_names` (counts Int64, CTRs and basket price Float64).
    """
    if kind not in ENTITY_SURFACES:
        raise ValueError(f"kind={kind!r}: expected one of {sorted(ENTITY_SURFACES)}")
    key = f"{kind}_id"
    events = _events(impressions)
    last_day = events.select(pl.col("day").max()).collect().item()
    if last_day is None:
        raise DataContractError("impressions: the table is empty, no statistics to build")
    priors = _global_priors(events, windows, last_day)

    counters: dict[str, pl.Expr] = {}
    for surface in ENTITY_SURFACES[kind]:
        is_s = pl.col("surface") == surface
        counters[f"{surface}_impressions"] = is_s.cast(pl.Int64).sum()
        counters[f"{surface}_clicks"] = (is_s.cast(pl.Int64) * pl.col("clicked")).sum()
        counters[f"{surface}_orders"] = (is_s.cast(pl.Int64) * pl.col("ordered")).sum()
    basket = kind == "user"
    if basket:
        price = items.select(pl.col("item_id").cast(pl.Int64), pl.col("price").cast(pl.Float64))
        events = events.join(price, on="item_id", how="left")
        bought = (pl.col("surface") == "menu") & (pl.col("ordered") == 1) & pl.col("price").is_not_null()
        counters["_basket_n"] = bought.cast(pl.Int64).sum()
        counters["_basket_sum"] = pl.when(bought).then(pl.col("price")).otherwise(0.0).sum()

    daily = _dense_daily(events.filter(pl.col(key).is_not_null()), key, counters, last_day)
    windowed = _windowed(daily, key, list(counters), windows).join(priors, on="day", how="left")

    features: list[pl.Expr] = []
    for surface in ENTITY_SURFACES[kind]:
        for w in windows:
            s = f"{surface}_{{}}_{w}d"
            features += [
                pl.col(s.format("impressions")),
                pl.col(s.format("clicks")),
                pl.col(s.format("orders")),
                _smoothed_ctr(
                    s.format("clicks"), s.format("impressions"), f"{surface}_prior_{w}d", prior_strength
                ).alias(s.format("ctr")),
            ]
    if basket:
        n, total = f"_basket_n_{BASKET_WINDOW_DAYS}d", f"_basket_sum_{BASKET_WINDOW_DAYS}d"
        if BASKET_WINDOW_DAYS not in windows:
            raise ValueError(f"windows_days={windows}: must include {BASKET_WINDOW_DAYS} (basket price)")
        features.append(
            pl.when(pl.col(n) > 0)
            .then(pl.col(total) / pl.col(n))
            .otherwise(None)
            .alias(f"avg_basket_price_{BASKET_WINDOW_DAYS}d")
        )
    ts = _snapshot_ts(pl.col("day"))
    return windowed.select(key, ts.alias(TS), ts.alias(CREATED), *features).sort(key, TS)


def user_profile(users: pl.LazyFrame) -> pl.LazyFrame:
    """``user_id, home_cell, platform``; stamped with the signup time."""
    ts = pl.col("signup_ts").dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    return users.select(
        pl.col("user_id").cast(pl.Int64),
        pl.col("home_cell").cast(pl.Int32),
        pl.col("platform").cast(pl.Utf8),
        ts.alias(TS),
        ts.alias(CREATED),
    ).sort("user_id")


def restaurant_profile(restaurants: pl.LazyFrame) -> pl.LazyFrame:
    """``restaurant_id, cell, cuisine, price_level, rating``; stamped with the creation time."""
    ts = pl.col("created_ts").dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    return restaurants.select(
        pl.col("restaurant_id").cast(pl.Int64),
        pl.col("cell").cast(pl.Int32),
        pl.col("cuisine").cast(pl.Utf8),
        pl.col("price_level").cast(pl.Int32),
        pl.col("rating").cast(pl.Float32),
        ts.alias(TS),
        ts.alias(CREATED),
    ).sort("restaurant_id")


def item_profile(items: pl.LazyFrame, restaurants: pl.LazyFrame) -> pl.LazyFrame:
    """``item_id, restaurant_id, category, price``; stamped with its restaurant's creation time."""
    created = restaurants.select(
        pl.col("restaurant_id").cast(pl.Int64),
        pl.col("created_ts").dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias(TS),
    )
    return (
        items.select(
            pl.col("item_id").cast(pl.Int64),
            pl.col("restaurant_id").cast(pl.Int64),
            pl.col("category").cast(pl.Utf8),
            pl.col("price").cast(pl.Float32),
        )
        .join(created, on="restaurant_id", how="inner")
        .with_columns(pl.col(TS).alias(CREATED))
        .sort("item_id")
    )


def _scan(config: Config, table: str) -> pl.LazyFrame:
    path = config.clean_dir / f"{table}.parquet"
    if not path.exists():
        raise DataContractError(f"{table}: validated table not found at {path} (run `recsys validate`)")
    frame = pl.scan_parquet(path)
    missing = [c for c in REQUIRED[table] if c not in frame.collect_schema().names()]
    if missing:
        raise DataContractError(f"{table}: missing columns {missing} in {path}")
    return frame


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.write_parquet(tmp, statistics=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_tables(
    users: pl.LazyFrame,
    restaurants: pl.LazyFrame,
    items: pl.LazyFrame,
    impressions: pl.LazyFrame,
    windows: tuple[int, ...],
    prior_strength: float,
) -> dict[str, pl.LazyFrame]:
    """The six offline feature tables (pure: frames in, lazy frames out), keyed by view name."""
    return {
        "user_stats": entity_stats(impressions, items, "user", windows, prior_strength),
        "restaurant_stats": entity_stats(impressions, items, "restaurant", windows, prior_strength),
        "item_stats": entity_stats(impressions, items, "item", windows, prior_strength),
        "user_profile": user_profile(users),
        "restaurant_profile": restaurant_profile(restaurants),
        "item_profile": item_profile(items, restaurants),
    }


def build_features(config: Config) -> dict[str, Path]:
    """Compute every stats and profile table from ``config.clean_dir`` into ``config.offline_dir``.

    Idempotent: the same inputs give the same files; each file is replaced atomically.
    Returns the written path of each table, keyed by feature view name.
    """
    windows = tuple(sorted(set(config.features.windows_days)))
    tables = build_tables(
        _scan(config, "users"),
        _scan(config, "restaurants"),
        _scan(config, "items"),
        _scan(config, "impressions"),
        windows,
        config.features.ctr_prior_strength,
    )
    frames = pl.collect_all(list(tables.values()))
    out: dict[str, Path] = {}
    for name, frame in zip(tables, frames):
        path = config.offline_dir / f"{name}.parquet"
        write_parquet_atomic(frame, path)
        out[name] = path
    return out

