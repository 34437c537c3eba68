"""Daily statistics snapshots and static profiles, computed with polars, written as Feast sources.

Snapshot semantics (point-in-time safe): a row stamped ``event_timestamp = t`` (a midnight UTC,
the end of the day it summarises) counts only events with ``ts < t``; the ``w``-day window of
that row is ``[t - w days, t)``. An event at exactly ``t`` belongs to the next snapshot. An
entity gets one row per day from the first day it appears in the log to the last day of the
log, so a point-in-time join never falls back to a stale earlier row.

CTR is smoothed with a beta prior: ``(clicks + k * p) / (impressions + k)`` where ``k`` is
``FeaturesConfig.ctr_prior_strength`` and ``p`` the global CTR of that surface over the same
window ``[t - w, t)`` (so the prior is point-in-time safe too; 0 when the window is empty).

Position debiasing. Clicks depend on where an entity was shown (examination bias), and the
legacy policy shows the same entities at the same places, so raw CTRs mix attractiveness with
exposure. :func:`examination_curve` estimates, per surface and position, ``exam(p)`` relative to
position 0 from EXPLORED requests only (a request is explored when any of its entries has
``propensity * n_candidates <= 1``: it showed a uniformly random permutation, so position is
independent of the entity there and ``CTR(p) / CTR(0) = exam(p) / exam(0)``). The curve of day
``d`` uses the explored requests of days ``<= d`` (all history before the snapshot stamped at the
end of ``d``), and each impression of day ``d`` is weighted by day ``d``'s curve, so no value
uses an event at or after its snapshot. Per entity:

* ``{surface}_exam_{w}d`` = sum over its impressions of ``exam(position)``: expected examinations;
* ``{surface}_dctr_{w}d`` = ``(clicks + k * q) / (exam + k)``, the debiased CTR (attractiveness
  relative to position 0), with ``q`` the surface's global clicks per examination in the window.

``user_cuisine_affinity``: per user, the smoothed share of their clicks (feed and menu) over the
last ``AFFINITY_WINDOW_DAYS`` days on each cuisine, ``shares[j]`` for ``CUISINES[j]`` (the order
of ``recsys.contracts.schemas.CUISINES``): ``(n_j + a * g_j) / (n + a)`` with ``a =
AFFINITY_PRIOR_CLICKS`` and ``g_j`` the global click share of cuisine j over the same window
(uniform when the window has no clicks). Shares sum to 1; a user without clicks gets ``g``.

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
from recsys.contracts.schemas import CUISINES
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
#: Per-entity metrics of each surface and window, in schema order.
METRICS = ("impressions", "clicks", "orders", "ctr", "exam", "dctr")
#: Examination probabilities are floored here so a noisy early estimate cannot blow a CTR up.
EXAM_FLOOR = 0.05
AFFINITY_WINDOW_DAYS = 28
#: Pseudo-clicks of the global cuisine shares mixed into every user's shares.
AFFINITY_PRIOR_CLICKS = 3.0
_US_PER_DAY = 86_400 * 1_000_000

# Columns each input needs (names are the contract; extra columns are ignored).
REQUIRED = {
    "users": ("user_id", "home_cell", "signup_ts", "platform"),
    "restaurants": ("restaurant_id", "cell", "cuisine", "price_level", "rating", "created_ts"),
    "items": ("item_id", "restaurant_id", "category", "price"),
    "impressions": ("request_id", "ts", "user_id", "surface", "restaurant_id", "item_id", "position",
                    "propensity", "clicked", "ordered"),
}


def stats_feature_names(kind: str, windows: Iterable[int]) -> list[str]:
    """Feature columns of the ``{kind}_stats`` table, in schema order."""
    names = [
        f"{surface}_{metric}_{w}d"
        for surface in ENTITY_SURFACES[kind]
        for w in windows
        for metric in METRICS
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


def _explored(names: list[str]) -> pl.Expr:
    """Per row: its request explored (showed a uniformly random permutation).

    An off-greedy entry has propensity ``eps / n <= 1 / n``, a greedy one ``(1 - eps) + eps / n >
    1 / n``: ``propensity * n_candidates <= 1`` flags the first kind exactly. Without
    ``n_candidates``, ``propensity < 0.5`` separates them for any epsilon < 0.5.
    """
    if "n_candidates" in names:
        off = pl.col("propensity") * pl.col("n_candidates").cast(pl.Float64) <= 1.0 + 1e-9
    else:
        off = pl.col("propensity") < 0.5
    return off.any().over("request_id")


def _events(impressions: pl.LazyFrame) -> pl.LazyFrame:
    names = impressions.collect_schema().names()
    return impressions.select(
        pl.col("user_id").cast(pl.Int64),
        pl.col("restaurant_id").cast(pl.Int64),
        pl.col("item_id").cast(pl.Int64),
        pl.col("surface").cast(pl.Utf8),
        _day_index("ts").alias("day"),
        pl.col("position").cast(pl.Int32),
        _explored(names).alias("explored"),
        pl.col("clicked").cast(pl.Int64).alias("clicked"),
        pl.col("ordered").cast(pl.Int64).alias("ordered"),
    )


def examination_curve(events: pl.LazyFrame) -> pl.LazyFrame:
    """``surface, day, position, exam``: the examination curve as known at the end of ``day``.

    From the explored requests of days ``<= day``: ``exam = CTR(position) / CTR(0)``, clipped to
    ``[EXAM_FLOOR, 1]``; rows only for (surface, position) pairs seen explored by then (callers
    use 1.0, no correction, where there is no estimate yet or no explored click at position 0).
    ``events`` is :func:`_events`' frame.
    """
    daily = (events.filter(pl.col("explored"))
             .group_by("surface", "position", "day")
             .agg(pl.len().cast(pl.Int64).alias("n"), pl.col("clicked").sum().alias("c")))
    key = pl.concat_str(pl.col("surface"), pl.col("position").cast(pl.Utf8), separator="#").alias("_key")
    last_day = events.select(pl.col("day").max())
    grid = (daily.group_by("surface", "position").agg(pl.col("day").min().alias("_first"))
            .join(last_day.rename({"day": "_last"}), how="cross")
            .select("surface", "position", pl.int_ranges("_first", pl.col("_last") + 1, dtype=pl.Int32).alias("day"))
            .explode("day"))
    cum = (grid.join(daily, on=["surface", "position", "day"], how="left")
           .with_columns(pl.col("n").fill_null(0), pl.col("c").fill_null(0), key)
           .sort("_key", "day")
           .with_columns(pl.col("n").cum_sum().over("_key"), pl.col("c").cum_sum().over("_key"))
           .with_columns((pl.col("c") / pl.col("n")).alias("_ctr")))
    top = cum.filter(pl.col("position") == 0).select("surface", "day", pl.col("_ctr").alias("_ctr0"))
    return (cum.join(top, on=["surface", "day"], how="left")
            .select("surface", "day", "position",
                    pl.when(pl.col("_ctr0") > 0)
                    .then((pl.col("_ctr") / pl.col("_ctr0")).clip(EXAM_FLOOR, 1.0))
                    .otherwise(1.0).alias("exam"))
            .sort("surface", "position", "day"))


def _with_exam(events: pl.LazyFrame) -> pl.LazyFrame:
    """``events`` plus ``exam``: each impression's examination probability on its own day's curve."""
    return events.join(examination_curve(events), on=["surface", "day", "position"], how="left").with_columns(
        pl.col("exam").fill_null(1.0))


def _rate(num: str, den: str, name: str) -> pl.Expr:
    return pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den)).otherwise(0.0).alias(name)


def _global_priors(events: pl.LazyFrame, windows: tuple[int, ...], last_day: int) -> pl.LazyFrame:
    """Per surface and day: the global CTR over each window, ``{surface}_prior_{w}d``, and the
    global clicks per examination, ``{surface}_eprior_{w}d`` (0 when the window is empty)."""
    out = None
    for surface in SURFACES:
        daily = _dense_daily(
            events.filter(pl.col("surface") == surface).with_columns(pl.lit(0).alias("_all")),
            "_all",
            {"i": pl.len().cast(pl.Int64), "c": pl.col("clicked").sum(), "e": pl.col("exam").sum()},
            last_day,
        )
        win = _windowed(daily, "_all", ["i", "c", "e"], windows).select(
            "day",
            *[_rate(f"c_{w}d", f"i_{w}d", f"{surface}_prior_{w}d") for w in windows],
            *[_rate(f"c_{w}d", f"e_{w}d", f"{surface}_eprior_{w}d") for w in windows],
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
    :func:`stats_feature_names` (counts Int64; CTRs, expected examinations and basket price Float64).
    """
    if kind not in ENTITY_SURFACES:
        raise ValueError(f"kind={kind!r}: expected one of {sorted(ENTITY_SURFACES)}")
    key = f"{kind}_id"
    events = _with_exam(_events(impressions))
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
        counters[f"{surface}_exam"] = (is_s.cast(pl.Float64) * pl.col("exam")).sum()
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
                pl.col(s.format("exam")),
                _smoothed_ctr(
                    s.format("clicks"), s.format("exam"), f"{surface}_eprior_{w}d", prior_strength
                ).alias(s.format("dctr")),
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


def user_cuisine_affinity(
    impressions: pl.LazyFrame,
    restaurants: pl.LazyFrame,
    window: int = AFFINITY_WINDOW_DAYS,
    prior_clicks: float = AFFINITY_PRIOR_CLICKS,
) -> pl.LazyFrame:
    """Daily snapshots ``user_id, event_timestamp, created_timestamp, shares, clicks_{window}d``.

    ``shares`` (List(Float32), ``len(CUISINES)``, in ``CUISINES`` order) are the user's smoothed
    click shares per cuisine over ``[t - window, t)``, feed and menu clicks alike (see the module
    docstring); ``clicks_{window}d`` the clicks counted (on restaurants of a known cuisine). One
    row per user per day from the user's first impression to the last day of the log.
    """
    events = _events(impressions).join(
        restaurants.select(pl.col("restaurant_id").cast(pl.Int64), pl.col("cuisine").cast(pl.Utf8)),
        on="restaurant_id", how="left")
    last_day = events.select(pl.col("day").max()).collect().item()
    if last_day is None:
        raise DataContractError("impressions: the table is empty, no statistics to build")
    counters = {f"_c{j}": ((pl.col("cuisine") == c) & (pl.col("clicked") == 1)).cast(pl.Int64).sum()
                for j, c in enumerate(CUISINES)}
    names = list(counters)
    per_user = _windowed(_dense_daily(events.filter(pl.col("user_id").is_not_null()), "user_id", counters, last_day),
                         "user_id", names, (window,))
    world = _windowed(_dense_daily(events.with_columns(pl.lit(0).alias("_all")), "_all", counters, last_day),
                      "_all", names, (window,))
    g_total = pl.sum_horizontal(f"{c}_{window}d" for c in names)
    world = world.select("day", *[
        pl.when(g_total > 0).then(pl.col(f"{c}_{window}d") / g_total).otherwise(1.0 / len(CUISINES)).alias(f"_g{j}")
        for j, c in enumerate(names)])
    total = pl.sum_horizontal(f"{c}_{window}d" for c in names)
    shares = pl.concat_list([
        ((pl.col(f"{c}_{window}d") + prior_clicks * pl.col(f"_g{j}")) / (total + prior_clicks)).cast(pl.Float32)
        for j, c in enumerate(names)])
    ts = _snapshot_ts(pl.col("day"))
    return (per_user.join(world, on="day", how="left")
            .select("user_id", ts.alias(TS), ts.alias(CREATED), shares.alias("shares"),
                    total.cast(pl.Int64).alias(f"clicks_{window}d"))
            .sort("user_id", TS))


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
    """The offline feature tables (pure: frames in, lazy frames out), keyed by view name."""
    return {
        "user_stats": entity_stats(impressions, items, "user", windows, prior_strength),
        "restaurant_stats": entity_stats(impressions, items, "restaurant", windows, prior_strength),
        "item_stats": entity_stats(impressions, items, "item", windows, prior_strength),
        "user_cuisine_affinity": user_cuisine_affinity(impressions, restaurants),
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

