"""The compiled design matrix (``DesignPlan``) equals the per-feature reference loop bit for bit,
on random rows of every input kind (float arrays, lists with None, object arrays, int arrays,
absent columns), at serving and in training."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.ranking.ranker import (
    HOUR, POSITION, DesignPlan, Feature, LinearRanker, RankerError, _column, _is_null, _n_rows, apply_transform,
    design_matrix,
)
from recsys.training.ranker_fit import default_features

CATEGORIES = ["main", "side", "starter", "drink", "dessert"]


def reference_design_matrix(features, rows, serving=True):
    """The original per-feature loop: the semantics the plan must reproduce exactly."""
    n = _n_rows(rows)
    if not serving and POSITION not in rows:
        raise RankerError("training rows need a 'position' column (serving=False)")
    X = np.empty((n, len(features)), dtype=np.float64)
    position = np.zeros(n) if serving else np.nan_to_num(_column(rows, POSITION, n, "float"), nan=0.0)
    for j, f in enumerate(features):
        if f.kind == "numeric":
            raw = _column(rows, f.column, n, "float")
            X[:, j] = apply_transform(np.where(np.isnan(raw), f.default, raw), f.transform)
        elif f.kind == "missing":
            X[:, j] = _is_null(rows.get(f.column), n)
        elif f.kind == "onehot":
            X[:, j] = _column(rows, f.column, n, "object") == f.value
        elif f.kind == "onehot_x_hour":
            hour = _column(rows, HOUR, n, "float")
            lo, hi = f.hours
            X[:, j] = (_column(rows, f.column, n, "object") == f.value) & (hour >= lo) & (hour < hi)
        elif f.kind == "position":
            last = max(int(g.value) for g in features if g.kind == "position")
            X[:, j] = np.minimum(position, last) == int(f.value)
    return X


def random_column(rng, name: str, n: int):
    """A column in one of the shapes serving and training hand the ranker."""
    if name == "item_profile__category":
        values = [None if rng.random() < 0.2 else str(rng.choice(CATEGORIES)) for _ in range(n)]
        return values if rng.random() < 0.5 else np.array(values, dtype=object)
    if name == HOUR:
        return rng.integers(0, 24, n).astype(np.float64) if rng.random() < 0.7 else rng.integers(0, 24, n)
    if name == POSITION:
        return rng.integers(0, 12, n)
    values = rng.choice([rng.uniform(-1, 2), np.nan]) if rng.random() < 0.3 else None  # constant (context)
    arr = np.full(n, values, dtype=np.float64) if values is not None else rng.uniform(-0.5, 60.0, n)
    arr[rng.random(n) < 0.2] = np.nan
    shape = rng.random()
    if shape < 0.2:
        return [None if np.isnan(v) else float(v) for v in arr]  # a list with None
    if shape < 0.3:
        return np.array([None if np.isnan(v) else v for v in arr], dtype=object)
    if shape < 0.4:
        return np.round(np.nan_to_num(arr)).astype(np.int64)
    return arr


def random_rows(rng, features, n: int) -> dict:
    columns = {f.column for f in features} | {HOUR, POSITION}
    return {c: random_column(rng, c, n) for c in sorted(columns) if rng.random() > 0.1}  # some absent


@pytest.mark.parametrize("seed", range(40))
def test_the_plan_equals_the_reference_loop_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    features = default_features({})
    rng.shuffle(features)  # any column order
    n = int(rng.integers(0, 300))
    rows = random_rows(rng, features, n)
    serving = bool(rng.random() < 0.5) or POSITION not in rows
    expected = reference_design_matrix(features, rows, serving=serving)
    got = design_matrix(features, rows, serving=serving)
    assert got.dtype == np.float64 and got.shape == expected.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)
    d = len(features)
    ranker = LinearRanker(features, rng.normal(size=d), rng.uniform(0.5, 2, d), rng.normal(size=d), 0.1)
    np.testing.assert_array_equal(ranker.features_from_rows(rows, serving=serving), expected)


def test_the_plan_refuses_unknown_kinds_and_transforms_by_name():
    with pytest.raises(RankerError, match="unknown kind"):
        DesignPlan([Feature("x", "g", "bogus", "x")])  # type: ignore[arg-type]
    with pytest.raises(RankerError, match="unknown transform"):
        DesignPlan([Feature("x", "g", "numeric", "x", "sqrt")])  # type: ignore[arg-type]
