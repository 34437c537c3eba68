"""Monitoring on simulated worlds: taste drift (choice shift, PSI/KS), the retrain it triggers,
and health (NaN embedding).

The drift scenario needs more data than the tests' tiny world. One day of 10% of users changing
taste is, at 10,000 users, a choice-shift z of about 3.3 against an alert at 4
(benchmarks/bench_drift.py has the 20-seed rates; docs/MONITORING.md why): flagged on day d in
some worlds, not reliably, and a world big enough for that costs more than a test can. So the CI
scenario drifts 40% of the users of a 6,000-user world; the 10% scenario is the benchmark's.
"""

import json
import sys
from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import _register, app
from recsys.monitoring.drift import daily_drift
from recsys.monitoring.features import MONITORED, user_day_choice, user_day_features
from recsys.monitoring.health import check_frame, check_version
from recsys.simulation.run import load_truth, simulate
from tests.conftest import tiny_config

DRIFT_DAY = 20  # day index: tastes change at the start of the 21st simulated day
# Days 0..21; the choice rows start after a 14-day window, day 14, the reference of day 15 on.
WORLD = {"size": "small", "n_users": 6_000, "requests_per_user_day": 1.5, "days": DRIFT_DAY + 2}
DRIFT_SHARE = 0.4
FIRST_CHECKED = 15


def _features(config):
    raw = config.raw_dir
    return user_day_features(pl.scan_parquet(raw / "impressions.parquet"), pl.scan_parquet(raw / "restaurants.parquet"))


def _choice(config):
    raw = config.raw_dir
    return user_day_choice(pl.scan_parquet(raw / "impressions.parquet"), pl.scan_parquet(raw / "restaurants.parquet"))


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    out = {}
    for name, sim in (("drift", {**WORLD, "drift_day": DRIFT_DAY, "drift_share": DRIFT_SHARE}), ("none", WORLD)):
        config = tiny_config(tmp_path_factory.mktemp(name), sim=sim)
        simulate(config)
        out[name] = (config, _features(config), _choice(config))
    return out


def _day(config, k):
    """The date of simulated day index k."""
    return config.sim.start_date + timedelta(days=k)


def test_taste_drift_is_flagged_from_its_first_day_and_seasonality_alone_is_not(worlds):
    config, frame, choice = worlds["drift"]
    for k in (DRIFT_DAY, DRIFT_DAY + 1):  # checked by the runs of the first and second day after d
        report = daily_drift(frame, _day(config, k), MONITORED, choice=choice)
        assert report.alert and report.surprise.alert, (k, report.surprise)
        assert report.surprise.feature == "choice_llr"
    for k in range(FIRST_CHECKED, DRIFT_DAY):  # the days of seasonality before the drift
        report = daily_drift(frame, _day(config, k), MONITORED, choice=choice)
        assert report.surprise is not None and not report.alert, (k, report.to_dict())
    config, frame, choice = worlds["none"]
    for k in range(FIRST_CHECKED, DRIFT_DAY + 2):  # weekdays and a weekend, openings, no drift
        report = daily_drift(frame, _day(config, k), MONITORED, choice=choice)
        assert report.surprise is not None and not report.alert, (k, report.to_dict())


def _drift_cli(config, day: str, tmp_path, *extra):
    marker = tmp_path / "retrained"
    toml = tmp_path / "monitoring.toml"
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('retrained')"]
    toml.write_text(f"[monitoring]\nretrain_command = {json.dumps(command)}\n")  # a JSON array is TOML
    _register()
    result = CliRunner().invoke(app, ["--config", str(toml), "--data-dir", str(config.data_dir), "monitor", "drift",
                                      "--day", day, "--out", str(tmp_path / "drift.json"),
                                      "--prometheus", str(tmp_path / "drift.prom"), *extra])
    return result, marker


def test_a_drift_alert_runs_the_configured_retrain_command(worlds, tmp_path):
    config, *_ = worlds["drift"]
    result, marker = _drift_cli(config, str(_day(config, DRIFT_DAY)), tmp_path, "--reference-days", "3")
    assert result.exit_code == 1, result.output
    assert marker.read_text() == "retrained"
    report = json.loads((tmp_path / "drift.json").read_text())
    assert report["alert"] and report["retrain"]["exit_status"] == 0
    assert report["surprise"]["feature"] == "choice_llr" and len(report["reference_days"]) == 3
    assert "recsys_drift_retrain_exit_status 0.0" in (tmp_path / "drift.prom").read_text()


def test_no_alert_runs_no_retrain_and_no_retrain_is_honoured(worlds, tmp_path):
    config, *_ = worlds["none"]
    result, marker = _drift_cli(config, str(_day(config, DRIFT_DAY)), tmp_path, "--reference-days", "3")
    assert result.exit_code == 0, result.output
    assert not marker.exists()
    config, *_ = worlds["drift"]
    result, marker = _drift_cli(config, str(_day(config, DRIFT_DAY)), tmp_path, "--no-retrain", "--reference-days", "3")
    assert result.exit_code == 1 and not marker.exists()


def test_drifting_users_score_above_the_others_from_the_drift_day_on_and_not_before(worlds):
    config, _, choice = worlds["drift"]
    drifts = np.flatnonzero(load_truth(config).world.user_drifts).tolist()
    gap = (choice.group_by("day").agg((pl.col("choice_llr").filter(pl.col("user_id").is_in(drifts)).mean()
                                       - pl.col("choice_llr").filter(~pl.col("user_id").is_in(drifts)).mean())
                                      .alias("gap")).sort("day"))
    before = gap.filter(pl.col("day") < _day(config, DRIFT_DAY))["gap"]
    after = gap.filter(pl.col("day").is_between(_day(config, DRIFT_DAY), _day(config, DRIFT_DAY + 1)))["gap"]
    assert before.len() == DRIFT_DAY - 14 and before.abs().max() < 0.1, before
    assert after.len() == 2 and after.min() > 0.25, after  # nats per user-day


def test_user_day_choice_rows_start_after_a_full_window(tiny_world):
    raw = tiny_world.raw_dir
    choice = user_day_choice(pl.scan_parquet(raw / "impressions.parquet"), pl.scan_parquet(raw / "restaurants.parquet"),
                             baseline_days=7)
    assert choice.height > 0 and choice["day"].min() == _day(tiny_world, 7)
    assert (choice["impressions"] >= 1).all() and choice["choice_llr"].is_finite().all()
    assert (choice["choice_llr"] - choice["feed_llr"] - choice["menu_llr"]).abs().max() < 1e-9


def test_user_day_features_start_after_a_full_baseline_window(tiny_world):
    frame = _features(tiny_world)
    assert frame.height > 0 and set(MONITORED) <= set(frame.columns)
    assert frame["day"].min() == _day(tiny_world, 7)
    assert frame["cuisine_top_share"].is_between(0, 1).all()
    assert (frame["cuisine_surprise"] > 0).all() and (frame["clicks"] >= 1).all()


def test_injected_nan_embedding_is_flagged_by_health(tmp_path):
    emb = pl.DataFrame({"user_id": [1, 2, 3], "embedding": [[0.1, 0.2], [float("nan"), 0.0], [0.3, 0.4]]})
    alerts = check_frame(emb, "embeddings/user_embedding.parquet")
    assert [(a.check, a.examples) for a in alerts] == [("non_finite", [2])]
    assert check_frame(emb.filter(pl.col("user_id") != 2), "embeddings/user_embedding.parquet") == []


def test_health_of_a_version_dir_flags_nan_inf_and_empty_lists(tmp_path):
    (tmp_path / "embeddings").mkdir()
    (tmp_path / "precompute").mkdir()
    pl.DataFrame({"user_id": [1], "embedding": [[np.nan, 1.0]]}).write_parquet(tmp_path / "embeddings/user_embedding.parquet")
    pl.DataFrame({"item_id": [1], "embedding": [[1.0, 1.0]]}).write_parquet(tmp_path / "embeddings/item_embedding.parquet")
    pl.DataFrame({"user_id": [1, 2], "restaurant_ids": [[1], []], "scores": [[np.inf], []]},
                 schema={"user_id": pl.Int64, "restaurant_ids": pl.List(pl.Int64), "scores": pl.List(pl.Float32)}
                 ).write_parquet(tmp_path / "precompute/user_top_restaurants.parquet")
    pl.DataFrame({"restaurant_id": [1], "item_ids": [[1]], "scores": [[0.5]]}).write_parquet(
        tmp_path / "precompute/restaurant_candidates.parquet")
    checks = sorted((a.check, a.source) for a in check_version(tmp_path))
    assert checks == [("empty_list", "precompute/user_top_restaurants.parquet"),
                      ("non_finite", "embeddings/user_embedding.parquet"),
                      ("non_finite", "precompute/user_top_restaurants.parquet")]
