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
"""

from __future__ import annotations

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


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema={"user_id": pl.Int64, DAY: pl.Date, WEEKDAY: pl.Int8,
                                **{c: pl.Float64 for c in (*MONITORED, "history_clicks")}})
