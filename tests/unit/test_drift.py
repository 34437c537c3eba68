"""PSI, KS, profiles, the surprise shift and the monitored features on hand-made data."""

import sys
from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from recsys.config import load_config
from recsys.errors import ConfigError
from recsys.monitoring.drift import (
    DriftThresholds,
    check_drift,
    choice_shift,
    daily_drift,
    psi,
    reference_days,
    surprise_shift,
)
from recsys.monitoring.features import user_day_choice, user_day_features
from recsys.monitoring.profile import bin_shares, build_profile, load_profile, save_profile
from recsys.monitoring.retrain import run_retrain


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


# ---- surprise shift: the stratified one-sided test that sees taste drift ----

def _user_days(rng, n, *, clicks_mean=2.0, shift=0.0, shifted_share=0.0, day=date(2026, 10, 8)):
    """Rows like the monitored features: cuisine_llr sums over the day's clicks, so its level
    grows with clicks and falls with history (a sharper baseline)."""
    clicks = 1.0 + rng.poisson(clicks_mean - 1.0, n)
    history = rng.integers(0, 40, n).astype(float)
    llr = 0.4 * clicks - 0.05 * history + rng.normal(0, 1.5, n)
    llr += shift * (rng.random(n) < shifted_share)
    return pl.DataFrame({"day": [day] * n, "weekday": [day.weekday()] * n, "cuisine_llr": llr,
                         "clicks": clicks, "history_clicks": history})


def test_surprise_shift_is_quiet_on_the_same_distribution_and_alerts_when_a_tenth_of_users_shift():
    rng = np.random.default_rng(3)
    reference = _user_days(rng, 20_000)
    same = surprise_shift(_user_days(rng, 20_000), reference)
    drifted = surprise_shift(_user_days(rng, 20_000, shift=1.0, shifted_share=0.1), reference)
    assert abs(same.z) < 3 and not same.alert
    assert drifted.alert and drifted.z > 6 and drifted.shift == pytest.approx(0.1, abs=0.04)


def test_surprise_shift_compares_within_strata_so_a_busier_day_is_not_drift():
    rng = np.random.default_rng(4)
    reference = _user_days(rng, 20_000, clicks_mean=2.0)
    busier = _user_days(rng, 20_000, clicks_mean=3.0)  # a Saturday: more clicks per user, same tastes
    assert busier["cuisine_llr"].mean() - reference["cuisine_llr"].mean() > 0.3  # pooled, it would alert
    assert not surprise_shift(busier, reference).alert


def test_surprise_shift_is_one_sided():
    rng = np.random.default_rng(5)
    reference = _user_days(rng, 20_000)
    closer = surprise_shift(_user_days(rng, 20_000, shift=-1.0, shifted_share=0.5), reference)
    assert closer.z < -10 and not closer.alert


def test_reference_days_are_the_same_weekday_of_earlier_weeks_in_the_frame():
    rng = np.random.default_rng(6)
    day = date(2026, 10, 29)
    frame = pl.concat([_user_days(rng, 50, day=day - timedelta(days=k)) for k in (0, 1, 6, 7, 14, 28)])
    assert reference_days(frame, day, weeks=4) == [day - timedelta(days=7), day - timedelta(days=14),
                                                   day - timedelta(days=28)]
    assert reference_days(frame, day, weeks=1) == [day - timedelta(days=7)]


def test_a_day_without_reference_days_raises_no_alert():
    rng = np.random.default_rng(7)
    day = date(2026, 10, 29)
    frame = pl.concat([_user_days(rng, 500, day=day), _user_days(rng, 500, day=day - timedelta(days=1))])
    report = daily_drift(frame, day, ["cuisine_llr"])
    assert report.reference_days == () and report.surprise is None and not report.alert


def test_daily_drift_reports_psi_ks_per_feature_and_the_surprise_shift():
    rng = np.random.default_rng(8)
    day = date(2026, 10, 29)
    frame = pl.concat([_user_days(rng, 5_000, day=day, shift=1.0, shifted_share=0.2),
                       _user_days(rng, 5_000, day=day - timedelta(days=7))])
    report = daily_drift(frame, day, ["cuisine_llr", "clicks"])
    assert [r.feature for r in report.rows] == ["cuisine_llr", "clicks"]
    assert all(r.reference == str(day.weekday()) for r in report.rows)
    assert report.surprise.alert and report.alerts[-1] == "surprise_shift(cuisine_llr)"
    assert report.to_dict()["reference_days"] == [str(day - timedelta(days=7))]


# ---- the choice shift: pooled previous days, scaled by their dispersion ----

def _choice_days(rng, day, n, offsets, *, shifted_share=0.0):
    """Choice rows of the days ``day - k`` (k in offsets), each day's mean moved by its offset
    entry: ``offsets`` maps k -> extra mean of that day (day-level noise)."""
    frames = []
    for k, extra in offsets.items():
        d = day - timedelta(days=k)
        impressions = 10.0 * (1 + rng.poisson(1.0, n))
        llr = -0.01 * impressions + rng.normal(extra, 1.0, n) + 1.0 * (rng.random(n) < shifted_share) * (k == 0)
        frames.append(pl.DataFrame({"day": [d] * n, "weekday": [d.weekday()] * n, "choice_llr": llr,
                                    "impressions": impressions, "history_clicks": rng.integers(0, 40, n).astype(float)}))
    return pl.concat(frames)


def test_choice_shift_alerts_when_a_tenth_of_users_shift_against_the_pooled_days_before():
    rng = np.random.default_rng(10)
    day = date(2026, 10, 29)
    quiet = _choice_days(rng, day, 5_000, {k: 0.0 for k in range(8)})
    drifted = _choice_days(rng, day, 5_000, {k: 0.0 for k in range(8)}, shifted_share=0.1)
    refs = [day - timedelta(days=k) for k in range(1, 8)]
    assert not choice_shift(quiet, day, refs).alert
    shift = choice_shift(drifted, day, refs)
    assert shift.alert and shift.z > 5 and shift.dispersion < 2


def test_choice_shift_scales_z_down_by_the_day_to_day_dispersion_of_its_reference_days():
    rng = np.random.default_rng(11)
    day = date(2026, 10, 29)
    noisy = {0: 0.12, 1: 0.04, 2: -0.04, 3: 0.03, 4: -0.03, 5: 0.04, 6: -0.04, 7: 0.0}  # a noisy week
    frame = _choice_days(rng, day, 5_000, noisy)
    shift = choice_shift(frame, day, [day - timedelta(days=k) for k in range(1, 8)])
    assert shift.dispersion > 4 and not shift.alert
    assert shift.z * np.sqrt(shift.dispersion) > 4  # the sampling z alone would have alerted


def test_a_reference_day_that_alerts_against_the_others_is_left_out_of_the_reference():
    # The day after a drift started: the drift day, among the references, must neither raise the
    # reference mean nor read as day-to-day noise.
    rng = np.random.default_rng(13)
    day = date(2026, 10, 29)
    frame = _choice_days(rng, day, 5_000, {0: 0.15, 1: 0.15, **{k: 0.0 for k in range(2, 8)}})
    shift = choice_shift(frame, day, [day - timedelta(days=k) for k in range(1, 8)])
    assert shift.alert and shift.dispersion < 2 and shift.reference_rows <= 6 * 5_000  # of 7 days


def test_daily_drift_alerts_on_the_choice_shift_when_given_choice_rows():
    rng = np.random.default_rng(12)
    day = date(2026, 10, 29)
    cuisine = pl.concat([_user_days(rng, 2_000, day=day), _user_days(rng, 2_000, day=day - timedelta(days=7))])
    choice = _choice_days(rng, day, 5_000, {k: 0.0 for k in range(8)}, shifted_share=0.15)
    report = daily_drift(cuisine, day, ["cuisine_llr"], choice=choice)
    assert report.surprise.feature == "choice_llr" and report.alert
    assert report.alerts == ["surprise_shift(choice_llr)"] and len(report.reference_days) == 7
    assert not daily_drift(cuisine, day, ["cuisine_llr"]).alert  # the cuisine rows alone are quiet


# ---- monitored features on a hand-made log ----

CUISINE_OF = {1: "pizza", 2: "sushi", 3: "burger"}


def _log(rows):
    """Impressions from (day offset, user, restaurant, clicked) on the feed."""
    start = datetime(2026, 10, 1, 12, tzinfo=timezone.utc)
    return pl.DataFrame({
        "request_id": list(range(len(rows))), "ts": [start + timedelta(days=d) for d, *_ in rows],
        "user_id": [u for _, u, _, _ in rows], "surface": ["feed"] * len(rows),
        "restaurant_id": [r for *_, r, _ in rows], "item_id": [None] * len(rows), "position": [0] * len(rows),
        "propensity": [0.9] * len(rows), "n_candidates": [3] * len(rows), "clicked": [c for *_, c in rows],
        "ordered": [False] * len(rows),
    }, schema_overrides={"ts": pl.Datetime("us", "UTC"), "item_id": pl.Int64}).lazy()


def test_user_day_features_compare_a_day_with_the_users_own_baseline_window():
    # Baseline of 2 days. Restaurant 3 is first shown on day 2: its clicks are not counted until
    # it has been shown for a whole baseline window.
    log = _log([(0, 10, 1, True), (0, 11, 2, True), (1, 10, 1, True), (1, 11, 2, True),
                (2, 10, 2, True), (2, 10, 3, True), (2, 11, 2, True), (3, 10, 1, True), (3, 10, 3, True)])
    restaurants = pl.DataFrame({"restaurant_id": list(CUISINE_OF), "cuisine": list(CUISINE_OF.values())}).lazy()
    frame = user_day_features(log, restaurants, baseline_days=2, prior_clicks=3.0)
    got = {(r["user_id"], r["day"].day): r for r in frame.iter_rows(named=True)}
    assert set(got) == {(10, 3), (11, 3), (10, 4)}  # days 2 and 3 only: a full window before them
    # Day 2: population shares over days 0-1 are pizza 1/2, sushi 1/2. User 10 had 2 pizza clicks:
    # sushi share (0 + 3 * 0.5) / (2 + 3) = 0.3; user 11 had 2 sushi clicks: (2 + 1.5) / 5 = 0.7.
    assert got[(10, 3)]["cuisine_llr"] == pytest.approx(np.log(0.5 / 0.3), rel=1e-5)
    assert got[(10, 3)]["clicks"] == 1 and got[(10, 3)]["history_clicks"] == 2  # the burger click is not counted
    assert got[(11, 3)]["cuisine_llr"] == pytest.approx(np.log(0.5 / 0.7), rel=1e-5)
    # Day 3: the window is days 1-2 (every click counts there): population pizza 1/5, user 10's
    # pizza share (1 + 3 * 0.2) / (3 + 3).
    assert got[(10, 4)]["cuisine_llr"] == pytest.approx(np.log(0.2 / (1.6 / 6)), rel=1e-5)
    assert got[(10, 4)]["weekday"] == date(2026, 10, 4).weekday()


def _choice_log(rows):
    """Feed impressions from (day offset, user, restaurant, position, clicked)."""
    start = datetime(2026, 10, 1, 12, tzinfo=timezone.utc)
    return pl.DataFrame({
        "request_id": list(range(len(rows))), "ts": [start + timedelta(days=d) for d, *_ in rows],
        "user_id": [r[1] for r in rows], "surface": ["feed"] * len(rows), "restaurant_id": [r[2] for r in rows],
        "item_id": [None] * len(rows), "position": [r[3] for r in rows], "clicked": [r[4] for r in rows],
    }, schema_overrides={"ts": pl.Datetime("us", "UTC"), "item_id": pl.Int64}).lazy()


def test_user_day_choice_scores_a_user_who_leaves_their_usual_restaurant_above_one_who_keeps_it():
    # Every day users 10 and 11 are shown restaurants 1 (pizza) and 2 (sushi), and so are 20
    # others who click either. 10 and 11 always clicked 1; on day 3, 10 clicks 1 again, 11 clicks 2.
    restaurants = pl.DataFrame({"restaurant_id": [1, 2], "cuisine": ["pizza", "sushi"]}).lazy()
    rows = []
    for d in range(4):
        for u in range(100, 120):
            rows += [(d, u, 1, 0, u % 2 == 0), (d, u, 2, 1, u % 2 == 1)]
        rows += [(d, 10, 1, 0, True), (d, 10, 2, 1, False)]
        rows += [(d, 11, 1, 0, d < 3), (d, 11, 2, 1, d == 3)]
    frame = user_day_choice(_choice_log(rows), restaurants, baseline_days=3)
    got = {r["user_id"]: r for r in frame.iter_rows(named=True)}
    assert frame["day"].unique().to_list() == [date(2026, 10, 4)]  # only day 3 has a full window
    assert got[10]["choice_llr"] < 0 < got[11]["choice_llr"]  # own model better for 10, worse for 11
    assert got[10]["impressions"] == 2 and got[10]["clicks"] == 1 and got[10]["history_clicks"] == 3
    assert got[10]["menu_llr"] == 0.0 and got[10]["choice_llr"] == got[10]["feed_llr"]
    assert abs(np.mean([got[u]["choice_llr"] for u in range(100, 120)])) < abs(got[11]["choice_llr"])


def test_user_day_choice_does_not_score_a_restaurant_new_within_the_window():
    restaurants = pl.DataFrame({"restaurant_id": [1, 2], "cuisine": ["pizza", "sushi"]}).lazy()
    rows = [(d, u, 1, 0, u == 10) for d in range(4) for u in (10, 11)]
    rows += [(2, 10, 2, 1, False), (3, 10, 2, 1, True)]  # restaurant 2 first shown on day 2
    frame = user_day_choice(_choice_log(rows), restaurants, baseline_days=3)
    assert frame.filter(pl.col("user_id") == 10)["impressions"].to_list() == [1.0]


# ---- configuration ----

def test_monitoring_config_takes_a_retrain_command_from_toml_or_the_environment(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[monitoring]\nretrain_command = ["recsys", "nightly"]\nsurprise_z_alert = 5.0\n')
    assert load_config(toml, environ={}).monitoring.retrain_command == ("recsys", "nightly")
    env = {"RECSYS_MONITORING__RETRAIN_COMMAND": "recsys --data-dir '/data/x y' nightly"}
    assert load_config(environ=env).monitoring.retrain_command == ("recsys", "--data-dir", "/data/x y", "nightly")
    assert load_config(environ={}).monitoring.retrain_command is None
    with pytest.raises(ConfigError, match="monitoring.retrain_command"):
        load_config(environ={"RECSYS_MONITORING__RETRAIN_COMMAND": ""})


# ---- what a drift alert triggers ----

def test_run_retrain_reports_the_exit_status_and_never_raises():
    assert run_retrain([sys.executable, "-c", "import sys; sys.exit(3)"], 60).exit_status == 3
    assert run_retrain([sys.executable, "-c", "pass"], 60).ok
    missing = run_retrain(["/nonexistent/retrain"], 60)
    assert missing.exit_status is None and "not found" in missing.error
    slow = run_retrain([sys.executable, "-c", "import time; time.sleep(30)"], 0.5)
    assert slow.exit_status is None and "timed out" in slow.error
