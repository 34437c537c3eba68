"""Monitoring on simulated worlds: drift (PSI/KS per user-day feature) and health (NaN embedding)."""

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from recsys.monitoring.drift import daily_drift
from recsys.monitoring.features import MONITORED, user_day_features
from recsys.monitoring.health import check_frame, check_version
from recsys.simulation.run import simulate
from tests.conftest import tiny_config

DRIFT_DAY = 20


def _features(config):
    raw = config.raw_dir
    return user_day_features(pl.scan_parquet(raw / "impressions.parquet"), pl.scan_parquet(raw / "restaurants.parquet"))


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    out = {}
    for name, sim in (("drift", {"size": "small", "drift_day": DRIFT_DAY}), ("none", {"size": "small"})):
        config = tiny_config(tmp_path_factory.mktemp(name), sim=sim)
        simulate(config)
        out[name] = _features(config)
    return out


def _day(config_frame, k):
    return config_frame["day"].min() - timedelta(days=1) + timedelta(days=k)  # first row is day 1


@pytest.mark.xfail(strict=True, reason="monitored features do not yet separate 10% taste drift from the "
                   "non-stationarity of growing user histories: false alerts without drift (see report)")
def test_taste_drift_of_10pct_is_flagged_the_day_after_and_seasonality_alone_is_not(worlds):
    d = _day(worlds["drift"], DRIFT_DAY)
    assert daily_drift(worlds["drift"], d, MONITORED).alert
    for k in range(DRIFT_DAY - 6, DRIFT_DAY + 2):
        assert not daily_drift(worlds["none"], _day(worlds["none"], k), MONITORED).alert


def test_user_day_features_use_only_the_affinity_served_before_the_day(tiny_world):
    frame = _features(tiny_world)
    assert frame.height > 0 and set(MONITORED) <= set(frame.columns)
    assert frame["cuisine_top_share"].is_between(0, 1).all()
    assert (frame["cuisine_surprise"] > 0).all()


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
