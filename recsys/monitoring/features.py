"""Monitored features: one row per (user, day) with clicks, from the impressions (feedback) log.

Why these features. The simulator's taste drift redraws the taste of a share of users from the
same prior, so the population's marginal cuisine mix does not move: a histogram of clicked
cuisines cannot see it. What moves is each drifting user's clicks against *their own* history.
So the monitored features compare a user's clicks on day ``d`` with the cuisine affinity that was
served for them at the start of ``d`` (the ``user_cuisine_affinity`` snapshot stamped at midnight
starting ``d``, built from days before ``d`` only):

* ``cuisine_surprise``: mean over the user's clicks of the day of ``-log(shares[cuisine])``;
* ``cuisine_top_share``: mean of ``shares[cuisine] / max(shares)`` over the clicks (1 when the
  user clicked their favourite cuisine);
* ``clicks``: the user's clicks that day (activity; sanity, not taste).

Hourly seasonality cancels because a row summarises a whole day of one user; weekly seasonality
is handled by the profile (see :mod:`recsys.monitoring.profile`).
"""

from __future__ import annotations

import polars as pl

from recsys.contracts.schemas import CUISINES
from recsys.features.stats import AFFINITY_PRIOR_CLICKS, AFFINITY_WINDOW_DAYS, user_cuisine_affinity

DAY = "day"
WEEKDAY = "weekday"
MONITORED = ("cuisine_surprise", "cuisine_top_share", "clicks")
_US_PER_DAY = 86_400 * 1_000_000


def _day(col: str) -> pl.Expr:
    return pl.col(col).dt.convert_time_zone("UTC").dt.date()


def user_day_features(
    impressions: pl.LazyFrame,
    restaurants: pl.LazyFrame,
    affinity: pl.LazyFrame | None = None,
) -> pl.DataFrame:
    """``user_id, day (Date), weekday (0 = Monday), cuisine_surprise, cuisine_top_share, clicks``.

    One row per user and day with at least one click on a restaurant of known cuisine, the user
    having an affinity snapshot from before that day (a user's first day has none and is left
    out). ``affinity`` is the ``user_cuisine_affinity`` table; computed from the inputs if None.
    """
    if affinity is None:
        affinity = user_cuisine_affinity(impressions, restaurants, AFFINITY_WINDOW_DAYS, AFFINITY_PRIOR_CLICKS)
    cuisine_idx = pl.DataFrame({"cuisine": list(CUISINES), "_j": list(range(len(CUISINES)))},
                               schema={"cuisine": pl.Utf8, "_j": pl.UInt32}).lazy()
    clicks = (
        impressions.filter(pl.col("clicked").cast(pl.Boolean))
        .select(pl.col("user_id").cast(pl.Int64), pl.col("restaurant_id").cast(pl.Int64), _day("ts").alias(DAY))
        .join(restaurants.select(pl.col("restaurant_id").cast(pl.Int64), pl.col("cuisine").cast(pl.Utf8)),
              on="restaurant_id", how="inner")
        .join(cuisine_idx, on="cuisine", how="inner")
    )
    # The snapshot stamped at midnight starting `day` summarises the days before it.
    served = affinity.select(pl.col("user_id").cast(pl.Int64),
                             pl.col("event_timestamp").dt.convert_time_zone("UTC").dt.date().alias(DAY),
                             pl.col("shares"))
    per_click = (
        clicks.join(served, on=["user_id", DAY], how="inner")
        .with_columns(pl.col("shares").list.get(pl.col("_j")).cast(pl.Float64).alias("_s"),
                      pl.col("shares").list.max().cast(pl.Float64).alias("_max"))
    )
    return (
        per_click.group_by("user_id", DAY)
        .agg((-pl.col("_s").clip(1e-9, 1.0).log()).mean().alias("cuisine_surprise"),
             (pl.col("_s") / pl.col("_max")).mean().alias("cuisine_top_share"),
             pl.len().cast(pl.Float64).alias("clicks"))
        .with_columns((pl.col(DAY).dt.weekday() - 1).cast(pl.Int8).alias(WEEKDAY))
        .select("user_id", DAY, WEEKDAY, *MONITORED)
        .sort(DAY, "user_id")
        .collect()
    )
