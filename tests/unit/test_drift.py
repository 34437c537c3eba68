"""PSI, KS and profile behaviour on hand-made distributions."""

import numpy as np
import polars as pl
import pytest

from recsys.monitoring.drift import DriftThresholds, check_drift, psi
from recsys.monitoring.profile import bin_shares, build_profile, load_profile, save_profile


def test_psi_is_zero_for_identical_shares_and_grows_with_shift():
    e = [0.25, 0.25, 0.25, 0.25]
    assert psi(e, e) == pytest.approx(0.0)
    assert psi(e, [0.4, 0.3, 0.2, 0.1]) == pytest.approx(sum((a - b) * np.log(a / b) for a, b in zip([0.4, 0.3, 0.2, 0.1], e)))
    assert psi(e, [0.7, 0.1, 0.1, 0.1]) > psi(e, [0.4, 0.3, 0.2, 0.1]) > 0


def test_psi_with_an_empty_bin_is_finite():
    assert np.isfinite(psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]))


def test_bin_shares_use_open_outer_bins():
    assert bin_shares(np.array([-5.0, 0.5, 1.5, 9.0]), [0.0, 1.0]).tolist() == [0.25, 0.25, 0.5]


def _frame(values, weekday=0):
    return pl.DataFrame({"x": values, "weekday": [weekday] * len(values)})


def test_same_distribution_raises_no_alert_and_shift_does():
    rng = np.random.default_rng(0)
    profile = build_profile(_frame(rng.normal(0, 1, 5000)), ["x"])
    same = check_drift(profile, _frame(rng.normal(0, 1, 1000)))
    shifted = check_drift(profile, _frame(rng.normal(0.5, 1, 1000)))
    assert not same.alert and same.rows[0].psi < 0.05 and same.rows[0].ks_pvalue > 0.01
    assert shifted.alert and shifted.alerts == ["x"]
    assert shifted.rows[0].ks_statistic > 0.15 and shifted.rows[0].ks_pvalue < 1e-10


def test_tiny_ks_effect_on_a_huge_sample_does_not_alert_below_min_statistic():
    rng = np.random.default_rng(1)
    profile = build_profile(_frame(rng.normal(0, 1, 5000)), ["x"], sample_size=5000)
    report = check_drift(profile, _frame(rng.normal(0.08, 1, 200_000)),
                         thresholds=DriftThresholds(ks_min_statistic=0.1))
    assert report.rows[0].ks_pvalue < 0.01 and not report.alert


def test_a_day_is_compared_with_its_own_weekday():
    rng = np.random.default_rng(2)
    ref = pl.concat([_frame(rng.normal(0, 1, 500), weekday=0), _frame(rng.normal(2, 1, 500), weekday=5)])
    profile = build_profile(ref, ["x"])
    saturday = check_drift(profile, _frame(rng.normal(2, 1, 300), weekday=5))
    assert saturday.rows[0].reference == "5" and not saturday.alert


def test_list_columns_are_profiled_per_element_and_profiles_round_trip(tmp_path):
    frame = pl.DataFrame({"shares": [[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]] * 20, "weekday": [1] * 60})
    profile = build_profile(frame, ["shares"])
    assert set(profile.features) == {"shares[0]", "shares[1]"}
    loaded = load_profile(save_profile(profile, tmp_path / "p.json"))
    assert loaded.features["shares[1]"]["all"].edges == profile.features["shares[1]"]["all"].edges
    assert not check_drift(loaded, frame).alert
