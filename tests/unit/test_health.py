"""Health checks on frames (recsys.monitoring.health): vector norms."""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys.monitoring.health import check_frame

USERS = "embeddings/user_embedding.parquet"


def _embeddings(vectors: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"user_id": np.arange(len(vectors)), "embedding": vectors.tolist()}).with_columns(
        pl.col("embedding").cast(pl.List(pl.Float32)))


def test_a_blown_up_vector_is_flagged_by_its_norm_and_named_and_zero_rows_are_not():
    rng = np.random.default_rng(0)
    vectors = rng.normal(0, 0.1, (50, 8))
    vectors[:20] = 0.0  # entities without interactions in the window: ALS leaves them at zero
    assert check_frame(_embeddings(vectors), USERS) == []
    vectors[31] *= 1e3
    vectors[40] *= 1e6
    alerts = check_frame(_embeddings(vectors), USERS)
    assert [(a.check, a.count, a.examples) for a in alerts] == [("norm", 2, [31, 40])]


def test_a_nan_vector_is_reported_as_non_finite_not_as_a_norm():
    vectors = np.random.default_rng(1).normal(0, 0.1, (20, 4))
    vectors[3, 2] = np.nan
    assert [(a.check, a.examples) for a in check_frame(_embeddings(vectors), USERS)] == [("non_finite", [3])]
