"""The reference profile saved with each model version: what "normal" looked like in training.

Rows: the menu ranker's training rows (logged impressions of the ranker window, every feature of
``ranker_v1`` point-in-time through Feast, ``als_score``; :mod:`recsys.training.ranker_data`),
every impression kept (``negative_rate = 1``), so the distributions are those of the logged
traffic rather than of a click-enriched sample. Columns profiled:

- every numeric ranker input, under its Feast name (``view__name``) or ``als_score``: the names
  serving logs in its feature samples (:mod:`recsys.monitoring.samples`), so a sample compares
  with the profile name for name;
- the model's scores: ``als_score`` (the ALS model the ranker learnt from) and
  :data:`RANKER_SCORE`, the shipped ranker's logit with position fixed at 0 as at serving (absent
  when no ranker shipped: serving then ranks by the embedding score alone).

String features (categories: item category, cuisine, platform) are not profiled, as serving does
not sample them either; they are named in ``meta["not_profiled"]``, and numeric columns without a
single value in the window in ``meta["empty"]``. Distributions are pooled and per weekday of the
impression (UTC), like :func:`recsys.monitoring.profile.build_profile` does for drift.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import polars as pl

from recsys.monitoring.profile import Profile, build_profile
from recsys.ranking.ranker import ALS_SCORE, LinearRanker
from recsys.training.ranker_data import rows_dict

RANKER_SCORE = "ranker_score"
WEEKDAY = "weekday"
# Raw values kept per feature and group for the KS test: enough for its power, small enough that
# a profile of ~110 features stays a few MB in every version directory.
SAMPLE_SIZE = 500


def feature_columns(frame: pl.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric, string) ranker inputs of training rows: Feast columns (``view__name``) and
    ``als_score``; labels, keys and log columns are not features."""
    inputs = [c for c in frame.columns if "__" in c or c == ALS_SCORE]
    numeric = [c for c in inputs if frame.schema[c].is_numeric() or frame.schema[c] == pl.Boolean]
    return numeric, [c for c in inputs if c not in numeric]


def reference_profile(rows: pl.DataFrame, ranker: LinearRanker | None, window: tuple[datetime, datetime],
                      *, log_start: datetime, seed: int = 0, sample_size: int = SAMPLE_SIZE) -> Profile:
    """The profile of ``rows`` (ranker training rows with ``ts``) and of the model's scores on them.

    ``ranker``: the shipped ranker (None when none shipped); ``window``: the rows' [since, until);
    ``log_start``: the first event of the log the features were computed from, kept in
    ``meta["log_start"]`` (a feature over a window longer than the log before ``window`` is still
    warming up: :mod:`recsys.monitoring.serving_drift`).
    """
    numeric, strings = feature_columns(rows)
    frame = rows.with_columns((pl.col("ts").dt.weekday() - 1).cast(pl.Int8).alias(WEEKDAY),
                              *(pl.col(c).cast(pl.Float64) for c in numeric))
    columns = list(numeric)
    if ranker is not None:
        score = ranker.score(ranker.features_from_rows(rows_dict(frame), serving=True))
        frame = frame.with_columns(pl.Series(RANKER_SCORE, score, dtype=pl.Float64))
        columns.append(RANKER_SCORE)
    empty = [c for c in columns if frame[c].fill_nan(None).null_count() == frame.height]
    profile = build_profile(frame, [c for c in columns if c not in empty], weekday_column=WEEKDAY,
                            sample_size=sample_size, seed=seed,
                            window=(window[0].isoformat(), window[1].isoformat()))
    scores = [ALS_SCORE] + ([RANKER_SCORE] if ranker is not None else [])
    return replace(profile, meta={"rows": str(rows.height), "log_start": log_start.isoformat(),
                                  "scores": ",".join(scores),
                                  "not_profiled": ",".join(strings), "empty": ",".join(empty)})
