"""Reference profiles (recsys.monitoring.profile): weekdays without a value."""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys.monitoring.profile import POOLED, build_profile


def test_a_weekday_without_a_finite_value_is_left_out_and_falls_back_to_the_pooled_distribution():
    rng = np.random.default_rng(0)
    weekday = np.repeat(np.arange(7), 100)
    x = rng.normal(size=700)
    x[weekday == 3] = np.nan  # a feature with no value on one weekday
    frame = pl.DataFrame({"x": x, "weekday": weekday})
    profile = build_profile(frame, ["x"])
    assert sorted(profile.features["x"]) == sorted([POOLED, "0", "1", "2", "4", "5", "6"])
    assert profile.distribution("x", 3, min_rows=30)[0] == POOLED
    assert profile.distribution("x", 4, min_rows=30)[0] == "4"
    assert profile.features["x"][POOLED].rows == 600
