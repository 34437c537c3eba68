"""Monitored features: one row per (user, day), from the impressions (feedback) log.

Why per user. The simulator's taste drift redraws the taste of a share of users from the same
prior, so the population's cuisine mix does not move and no histogram of clicked cuisines can see
it. What moves is each drifting user's clicks against *their own* recent clicks. So a row compares
the user's clicks on day ``d`` with their cuisine shares over the ``baseline_days`` days before
``d`` (:func:`recsys.features.stats.user_cuisine_affinity`, the served affinity's definition with
a fixed window):

* ``cuisine_llr``: sum over the day's clicks of ``log(g[c] / s[c])``, ``s`` the user's baseline
  shares, ``g`` the population's over the same window: the log-likelihood ratio of "clicks like
  anyone's" against "clicks like their own". The drift test (:func:`recsys.monitoring.drift.surprise_shift`)
  runs on it: the most powerful of the statistics measured (docs/MONITORING.md);
* ``cuisine_surprise``: mean of ``-log s[c]``; ``cuisine_top_share``: mean of ``s[c] / max(s)``;
* ``clicks``: the clicks counted; ``history_clicks``: the clicks in the baseline window. Both set
  the spread of ``cuisine_llr``, so the drift test compares like with like on them.

Stationarity, the choices that keep a day without drift looking like the days before it:

* a fixed baseline window. Over the whole history, baselines sharpen as histories grow and lag
  behind catalogue changes ever more: the statistic trends and the days before look different;
* only days whose whole baseline window lies in the log (the log's first ``baseline_days`` days
  have no row);
* only clicks on restaurants shown for the whole baseline window. A new restaurant at the top of
  everyone's feed pulls many users to its cuisine at once; that is a catalogue change (no user's
  taste moved), and it made the only false alerts of the measurements when counted;
* a row sums a whole day, so the hourly cycle is integrated out; the weekly one is handled by
  comparing a day with the same weekday of earlier weeks (:func:`recsys.monitoring.drift.daily_drift`).

The choice statistic (:func:`user_day_choice`), what the drift alert runs on. The cuisine rows
above see ~12 shares of a user's clicks and nothing of what they were shown and left. But the
legacy feed shows a user much the same restaurants every day, and a user who keeps their taste
keeps clicking the same few of them and the same dishes on their menus; a user whose taste was
redrawn clicks restaurants they were shown many times and never clicked. So a choice row scores
every impression of the day, clicked or not, under two click models fitted on the
``CHOICE_BASELINE_DAYS`` days before it:

* the population's: ``p0 = ctr[e] * f[position]``, the entity's CTR debiased by the surface's
  position factors ``f`` (CTR per position relative to the best one);
* the user's own: ``p1 = p0 * r``, ``r`` the user's click rate relative to ``p0`` (clicks over
  expected clicks), estimated at the finest grain and shrunk level by level: user -> user x
  cuisine -> user x restaurant on the feed, user -> user x restaurant -> user x item on menus
  (``r_child = (clicks + a * r_parent) / (expected + a)``, ``a`` in :data:`CHOICE_PRIOR`);

and ``choice_llr`` is the Bernoulli log-likelihood ratio of the day's impressions, population
against own (``y log(p0 / p1) + (1 - y) log((1 - p0) / (1 - p1))`` summed over feed and menu): low
when the user does what their history predicts, high when they do what anyone would. The same
stationarity choices hold: a fixed window and only entities shown for the whole window. The
window is two weeks, not one: a week holds a handful of clicks per user, and doubling it raised
the drifted day's z by a fifth (the measurements are in docs/MONITORING.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import polars as pl

from recsys.contracts.schemas import CUISINES
from recsys.features.stats import AFFINITY_PRIOR_CLICKS, user_cuisine_affinity

DAY = "day"
WEEKDAY = "weekday"
#: Days of clicks a user's baseline covers: one week, so every weekday counts once.
BASELINE_DAYS = 7
LLR = "cuisine_llr"
#: Features with PSI and KS in the drift report.
MONITORED = (LLR, "cuisine_surprise", "cuisine_top_share", "clicks")
CHOICE_LLR = "choice_llr"
#: Days of impressions the choice statistic's click models are fitted on.
CHOICE_BASELINE_DAYS = 14
#: Pseudo-expected-clicks each level of the user's click-rate hierarchy is shrunk with towards
#: its parent (user towards 1, then the middle level, then the entity): (user, middle, entity).
CHOICE_PRIOR = (5.0, 3.0, 1.0)
#: Click-probability bounds, so one impression cannot dominate a row.
P_MIN, P0_MAX, P1_MAX = 1e-4, 0.9, 0.95
#: Per surface: the entity scored and the middle level of the user's hierarchy.
_CHOICE_LEVELS = {"feed": ("restaurant_id", "cuisine"), "menu": ("item_id", "restaurant_id")}


def _day(col: str) -> pl.Expr:
    return pl.col(col).dt.convert_time_zone("UTC").dt.date()


def _served(affinity: pl.LazyFrame, *names: str) -> pl.LazyFrame:
    """Snapshot rows keyed by the day they serve: the one stamped at midnight starting ``day``."""
    return affinity.select(pl.col("user_id").cast(pl.Int64),
                           _day("event_timestamp").alias(DAY), *names)


def user_day_features(
    impressions: pl.LazyFrame,
    restaurants: pl.LazyFrame,
    baseline_days: int = BASELINE_DAYS,
    prior_clicks: float = AFFINITY_PRIOR_CLICKS,
) -> pl.DataFrame:
    """``user_id, day (Date), weekday (0 = Monday), cuisine_llr, cuisine_surprise,
    cuisine_top_share, clicks, history_clicks``, sorted by day and user.

    One row per user and day with at least one counted click (see the module docstring).
    """
    if baseline_days < 1:
        raise ValueError(f"baseline_days={baseline_days!r}: must be >= 1")
    first_day, any_click = (impressions.select(_day("ts").min(), pl.col("clicked").cast(pl.Boolean).any())
                            .collect().row(0))
    if not any_click:
        return _empty()
    # Affinity counts clicks only; giving it only the clicks is the same and several times faster.
    # (A user's snapshots then start at their first click: earlier rows would hold no evidence.)
    clicked = impressions.filter(pl.col("clicked").cast(pl.Boolean))
    user, population = _baselines(clicked, restaurants, baseline_days, prior_clicks)
    per_click = (
        _counted_clicks(impressions, clicked, restaurants, first_day, baseline_days)
        .join(user, on=["user_id", DAY], how="inner")
        .join(population, on=DAY, how="inner")
        .with_columns(pl.col("shares").list.get(pl.col("_j")).cast(pl.Float64).clip(1e-12, 1.0).alias("_s"),
                      pl.col("_g").list.get(pl.col("_j")).cast(pl.Float64).clip(1e-12, 1.0).alias("_gj"),
                      pl.col("shares").list.max().cast(pl.Float64).alias("_max"))
    )
    return (
        per_click.group_by("user_id", DAY)
        .agg((pl.col("_gj").log() - pl.col("_s").log()).sum().alias(LLR),
             (-pl.col("_s").log()).mean().alias("cuisine_surprise"),
             (pl.col("_s") / pl.col("_max")).mean().alias("cuisine_top_share"),
             pl.len().cast(pl.Float64).alias("clicks"),
             pl.col("history_clicks").first())
        .with_columns((pl.col(DAY).dt.weekday() - 1).cast(pl.Int8).alias(WEEKDAY))
        .select("user_id", DAY, WEEKDAY, *MONITORED, "history_clicks")
        .sort(DAY, "user_id")
        .collect()
    )


def _baselines(clicked: pl.LazyFrame, restaurants: pl.LazyFrame, baseline_days: int,
               prior_clicks: float) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Per (user, day): ``shares`` and ``history_clicks`` over the window before the day; per day:
    the population's shares ``_g`` over it (the population as one user, without a prior)."""
    user = _served(user_cuisine_affinity(clicked, restaurants, baseline_days, prior_clicks), pl.col("shares"),
                   pl.col(f"clicks_{baseline_days}d").cast(pl.Float64).alias("history_clicks"))
    everyone = clicked.with_columns(pl.lit(0, pl.Int64).alias("user_id"))
    population = _served(user_cuisine_affinity(everyone, restaurants, baseline_days, 0.0),
                         pl.col("shares").alias("_g")).drop("user_id")
    return user, population


def _counted_clicks(impressions: pl.LazyFrame, clicked: pl.LazyFrame, restaurants: pl.LazyFrame,
                    first_day, baseline_days: int) -> pl.LazyFrame:
    """``user_id, restaurant_id, day, _j`` (cuisine index) of the clicks a row counts: after the
    log's first ``baseline_days`` days, on restaurants shown for at least ``baseline_days`` days."""
    shown_since = impressions.group_by(pl.col("restaurant_id").cast(pl.Int64)).agg(_day("ts").min().alias("_since"))
    cuisine_idx = pl.LazyFrame({"cuisine": list(CUISINES), "_j": list(range(len(CUISINES)))},
                               schema={"cuisine": pl.Utf8, "_j": pl.UInt32})
    window = pl.duration(days=baseline_days)
    return (
        clicked.select(pl.col("user_id").cast(pl.Int64), pl.col("restaurant_id").cast(pl.Int64), _day("ts").alias(DAY))
        .filter(pl.col(DAY) >= pl.lit(first_day) + window)
        .join(shown_since, on="restaurant_id", how="inner")
        .filter(pl.col("_since") <= pl.col(DAY) - window)
        .join(restaurants.select(pl.col("restaurant_id").cast(pl.Int64), pl.col("cuisine").cast(pl.Utf8)),
              on="restaurant_id", how="inner")
        .join(cuisine_idx, on="cuisine", how="inner")
    )


def user_day_choice(
    impressions: pl.LazyFrame,
    restaurants: pl.LazyFrame,
    days: Iterable[date] | None = None,
    baseline_days: int = CHOICE_BASELINE_DAYS,
    prior: tuple[float, float, float] = CHOICE_PRIOR,
) -> pl.DataFrame:
    """``user_id, day (Date), weekday, choice_llr, feed_llr, menu_llr, impressions, clicks,
    history_clicks``, sorted by day and user (see the module docstring).

    One row per user and day of ``days`` (default: every day after the log's first
    ``baseline_days``) with at least one scored impression: on an entity shown since the start of
    the day's window. ``impressions`` and ``clicks`` count the day's scored feed and menu rows;
    ``history_clicks`` the user's clicks in the window.
    """
    if baseline_days < 1:
        raise ValueError(f"baseline_days={baseline_days!r}: must be >= 1")
    if len(prior) != 3 or not all(a > 0 for a in prior):
        raise ValueError(f"prior={prior!r}: three pseudo-counts > 0 expected")
    cuisine_code = restaurants.select(pl.col("restaurant_id").cast(pl.Int64),
                                      pl.col("cuisine").cast(pl.Utf8).rank("dense").cast(pl.Int32).alias("cuisine"))
    log = (impressions.select(pl.col("user_id").cast(pl.Int64), pl.col("surface").cast(pl.Utf8),
                              pl.col("restaurant_id").cast(pl.Int64), pl.col("item_id").cast(pl.Int64),
                              pl.col("position").cast(pl.Int32), pl.col("clicked").cast(pl.Float64).alias("_y"),
                              _day("ts").alias(DAY))
           .join(cuisine_code, on="restaurant_id", how="left")
           .collect())
    if log.height == 0:
        return _empty_choice()
    first, last = log[DAY].min(), log[DAY].max()
    window = timedelta(days=baseline_days)
    wanted = sorted(set(days) if days is not None else
                    {first + timedelta(days=k) for k in range((last - first).days + 1)})
    wanted = [day for day in wanted if first + window <= day <= last]
    # Restaurants first shown before the window starts (see the module docstring; a menu's items
    # come with their restaurant).
    since = log.group_by("restaurant_id").agg(pl.col(DAY).min().alias("_since"))
    # Only the days the wanted rows need, split by surface once.
    log = log.filter(pl.col(DAY).is_in(sorted({day - timedelta(days=k) for day in wanted
                                               for k in range(baseline_days + 1)})))
    surfaces = {s: log.filter(pl.col("surface") == s).drop("surface") for s in _CHOICE_LEVELS}
    frames = [f for f in (_choice_rows(surfaces, since, day, window, prior) for day in wanted) if f.height]
    if not frames:
        return _empty_choice()
    return (pl.concat(frames).with_columns((pl.col(DAY).dt.weekday() - 1).cast(pl.Int8).alias(WEEKDAY))
            .select("user_id", DAY, WEEKDAY, CHOICE_LLR, "feed_llr", "menu_llr", "impressions", "clicks",
                    "history_clicks")
            .sort(DAY, "user_id"))


def _choice_rows(surfaces: dict[str, pl.DataFrame], since: pl.DataFrame, day: date, window: timedelta,
                 prior: tuple[float, float, float]) -> pl.DataFrame:
    base = {s: f.filter(pl.col(DAY).is_between(day - window, day, closed="left")) for s, f in surfaces.items()}
    old = since.filter(pl.col("_since") <= day - window).select("restaurant_id")
    today = {s: f.filter(pl.col(DAY) == day).join(old, on="restaurant_id", how="semi") for s, f in surfaces.items()}
    users = pl.concat([t.select("user_id") for t in today.values()]).unique()
    # A user's history matters only for the users scored on the day.
    base = {s: b.join(users, on="user_id", how="semi") for s, b in base.items()}
    both = pl.concat([t.select("user_id", "_y") for t in today.values()])
    history = pl.concat([b.select("user_id", "_y") for b in base.values()])
    rows = (both.group_by("user_id").agg(pl.len().cast(pl.Float64).alias("impressions"), pl.col("_y").sum().alias("clicks"))
            .join(history.group_by("user_id").agg(pl.col("_y").sum().alias("history_clicks")), on="user_id", how="left"))
    for s, (entity, middle) in _CHOICE_LEVELS.items():
        rows = rows.join(_surface_llr(surfaces[s].filter(pl.col(DAY).is_between(day - window, day, closed="left")),
                                      base[s], today[s], entity, middle, prior).rename({"_l": f"{s}_llr"}),
                         on="user_id", how="left")
    return (rows.with_columns(pl.col("feed_llr", "menu_llr", "history_clicks").fill_null(0.0))
            .with_columns((pl.col("feed_llr") + pl.col("menu_llr")).alias(CHOICE_LLR), pl.lit(day).alias(DAY)))


def _surface_llr(everyone: pl.DataFrame, base: pl.DataFrame, today: pl.DataFrame, entity: str, middle: str,
                 prior: tuple[float, float, float]) -> pl.DataFrame:
    """Per user: the Bernoulli LLR ``_l`` of the day's impressions, population (fitted on
    ``everyone``'s window) against own (``base``: the scored users' window)."""
    if everyone.height == 0 or today.height == 0:
        return pl.DataFrame(schema={"user_id": pl.Int64, "_l": pl.Float64})
    position = (everyone.group_by("position").agg(pl.col("_y").mean().alias("_f"))
                .with_columns((pl.col("_f") / pl.col("_f").max()).clip(P_MIN, 1.0)))
    overall = float(everyone["_y"].sum() / everyone.join(position, on="position")["_f"].sum())
    ctr = (everyone.join(position, on="position").group_by(entity)
           .agg((pl.col("_y").sum() / pl.col("_f").sum()).alias("_ctr")))

    def population(frame: pl.DataFrame) -> pl.DataFrame:
        return (frame.join(position, on="position", how="left").join(ctr, on=entity, how="left")
                .with_columns((pl.col("_ctr").fill_null(overall) * pl.col("_f").fill_null(P_MIN))
                              .clip(P_MIN, P0_MAX).alias("_p0")))

    # Clicks and expected clicks per user and entity, rolled up to the coarser levels.
    finest = (population(base).group_by("user_id", middle, entity)
              .agg(pl.col("_y").sum().alias("_c"), pl.col("_p0").sum().alias("_e")))
    keys = (["user_id"], ["user_id", middle], ["user_id", entity])
    counts = [finest.group_by(k).agg(pl.col("_c").sum().alias(f"_c{i}"), pl.col("_e").sum().alias(f"_e{i}"))
              for i, k in enumerate(keys)]
    scored = population(today)
    for i, (k, c) in enumerate(zip(keys, counts)):
        scored = scored.join(c, on=k, how="left")
    rate = pl.lit(1.0)
    for i, a in enumerate(prior):
        rate = (pl.col(f"_c{i}").fill_null(0.0) + a * rate) / (pl.col(f"_e{i}").fill_null(0.0) + a)
    p0, p1, y = pl.col("_p0"), (pl.col("_p0") * rate).clip(P_MIN, P1_MAX), pl.col("_y")
    llr = y * (p0.log() - p1.log()) + (1.0 - y) * ((1.0 - p0).log() - (1.0 - p1).log())
    return scored.group_by("user_id").agg(llr.sum().alias("_l"))


def _empty_choice() -> pl.DataFrame:
    return pl.DataFrame(schema={"user_id": pl.Int64, DAY: pl.Date, WEEKDAY: pl.Int8,
                                **{c: pl.Float64 for c in (CHOICE_LLR, "feed_llr", "menu_llr", "impressions", "clicks",
                                                           "history_clicks")}})


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema={"user_id": pl.Int64, DAY: pl.Date, WEEKDAY: pl.Int8,
                                **{c: pl.Float64 for c in (*MONITORED, "history_clicks")}})
