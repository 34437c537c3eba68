"""The menu ranker on the tiny world: one fit shared by the module; the training set is
point-in-time correct and its ALS never saw the ranker's window."""

from __future__ import annotations

import shutil
import uuid
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from jobs.nightly import step_apply, step_features, step_validate
from recsys.features.store import open_store
from recsys.ranking.ranker import LinearRanker
from recsys.simulation.run import load_truth
from recsys.training.errors import TrainingDataError
from recsys.training.ranker_data import build_training_set, fit_als, rows_dict
from recsys.training.ranker_fit import RankerSettings, train_ranker
from tests.conftest import tiny_config
from tests.integration.conftest import TINY_ALS

FAST = RankerSettings(eval_requests=200, cost_sample_rows=100, negative_rate=1.0)


def _prepared(tiny_world, data_dir):
    """A copy of the tiny world with validated tables, offline features and an applied Feast registry."""
    shutil.copytree(tiny_world.data_dir, data_dir, dirs_exist_ok=True)
    config = tiny_config(data_dir, project=f"rk_{uuid.uuid4().hex[:8]}")
    for step in (step_validate, step_features, step_apply):
        step(config, None)
    return config


@pytest.fixture(scope="module")
def ranker_world(tiny_world, tmp_path_factory):
    config = _prepared(tiny_world, tmp_path_factory.mktemp("ranker"))
    log = pl.read_parquet(config.clean_dir / "impressions.parquet")
    day0 = log["ts"].min().replace(hour=0, minute=0, second=0, microsecond=0)
    t1, t2 = day0 + timedelta(days=7), day0 + timedelta(days=10)
    end = log["ts"].max() + timedelta(microseconds=1)
    return config, open_store(config), log, (day0, t1, t2, end)


@pytest.fixture(scope="module")
def fitted(ranker_world):
    config, store, _, (_, t1, t2, end) = ranker_world
    return train_ranker(config, store, config.clean_dir, TINY_ALS, config.seed, t1, t2, end,
                        truth=load_truth(config), settings=FAST)


def test_train_ranker_returns_a_judged_model_with_metrics_and_a_feature_report(fitted):
    assert isinstance(fitted.ranker, LinearRanker)
    assert isinstance(fitted.ships, bool) and fitted.reason
    m = fitted.metrics
    assert m["train_rows"] > 0 and m["heldout"]["explored_rows"] > 0
    assert set(m["true_ctr"]["policies"]) == {"ranker", "als_only"}
    assert m["true_ctr"]["random"] < m["true_ctr"]["oracle"]
    assert np.isfinite(fitted.ranker.weights).all()
    groups = fitted.feature_report["groups"]
    assert set(groups) == set(fitted.ranker.groups)
    assert "auc_gain" in groups["item_stats"] and "auc_gain" not in groups["position"]
    assert groups["item_stats"]["cost"]["online_bytes_per_row"] > 0
    assert groups["price_vs_basket"]["cost"]["online_bytes_per_row"] == 0  # on-demand: computed per request
    assert set(fitted.feature_report["flagged"]) <= set(groups)


def test_the_ranker_learns_that_lower_positions_are_examined_less(fitted):
    w = dict(zip(fitted.ranker.feature_names, fitted.ranker.weights))
    assert w["position=7"] < w["position=1"] < 0


def test_the_shipped_artifact_reloads_exactly(fitted, tmp_path):
    path = fitted.ranker.save(tmp_path / "ranker.json")
    assert LinearRanker.load(path).to_dict() == fitted.ranker.to_dict()


def test_the_rankers_als_never_saw_the_ranker_window(fitted, ranker_world):
    _, _, _, (_, t1, t2, _) = ranker_world
    cut = fitted.metrics["als_trained_until"]
    assert cut["ranker_features"] == t1.isoformat() <= fitted.metrics["windows"]["t1"]
    assert cut["serving"] == t2.isoformat()


def test_an_als_trained_into_the_window_is_refused(ranker_world):
    config, store, log, (_, t1, t2, _) = ranker_world
    leaky = fit_als(log, TINY_ALS, config.seed, until=t2)
    with pytest.raises(TrainingDataError, match="has seen impressions"):
        build_training_set(store, log, leaky, t1, t2)


def test_a_feature_value_written_after_an_impression_never_reaches_its_row(tiny_world, tmp_path):
    config = _prepared(tiny_world, tmp_path / "pit")
    log = pl.read_parquet(config.clean_dir / "impressions.parquet")
    day0 = log["ts"].min().replace(hour=0, minute=0, second=0, microsecond=0)
    since, until = day0 + timedelta(days=7), day0 + timedelta(days=9)
    menu = log.filter((pl.col("surface") == "menu") & (pl.col("ts") >= since) & (pl.col("ts") < until))
    # an item shown twice on the same day, at two different times: A first, B later
    pair = (menu.with_columns(pl.col("ts").dt.date().alias("day"))
            .group_by("item_id", "day").agg(pl.col("ts").unique().sort().alias("times"))
            .filter(pl.col("times").list.len() >= 2).sort("item_id").row(0, named=True))
    item, ts_a, ts_b = pair["item_id"], pair["times"][0], pair["times"][1]
    stamp = ts_a + (ts_b - ts_a) / 2  # after A, before B, same day: no real snapshot in between
    extreme = 0.987654
    path = config.offline_dir / "item_stats.parquet"
    stats = pl.read_parquet(path)
    last = stats.filter((pl.col("item_id") == item) & (pl.col("event_timestamp") <= ts_a)).sort("event_timestamp")[-1]
    injected = last.with_columns(pl.lit(stamp).cast(stats.schema["event_timestamp"]).alias("event_timestamp"),
                                 pl.lit(stamp).cast(stats.schema["created_timestamp"]).alias("created_timestamp"),
                                 pl.lit(extreme).alias("menu_ctr_28d"))
    pl.concat([stats, injected]).write_parquet(path)

    store = open_store(config)
    als = fit_als(log, TINY_ALS, config.seed, until=since)
    rows = build_training_set(store, log, als, since, until).frame.filter(pl.col("item_id") == item)
    at_a = rows.filter(pl.col("ts") == ts_a)["item_stats__menu_ctr_28d"]
    at_b = rows.filter(pl.col("ts") == ts_b)["item_stats__menu_ctr_28d"]
    assert at_a.len() >= 1 and at_b.len() >= 1
    assert (at_a != extreme).all(), "a value stamped after the impression leaked into its row"
    assert (at_b == extreme).all(), "a later impression should see the newer value"
    # every other row of the window is as of its own time too: no row carries the injected value
    others = rows.filter(pl.col("ts") < stamp)["item_stats__menu_ctr_28d"]
    assert (others != extreme).all()


def test_every_training_row_has_its_features_and_labels(ranker_world, fitted):
    config, store, log, (_, t1, t2, _) = ranker_world
    als = fit_als(log, TINY_ALS, config.seed, until=t1)
    data = build_training_set(store, log, als, t1, t2)
    shown = log.filter((pl.col("surface") == "menu") & (pl.col("ts") >= t1) & (pl.col("ts") < t2)).height
    assert data.n == shown == fitted.metrics["train_rows"]
    rows = rows_dict(data.frame)
    assert np.isnan(rows["item_profile__price"]).sum() == 0  # every shown item has a profile
    hours = data.frame["ts"].dt.hour().to_numpy()
    assert (rows["request_time__hour_of_day"] == hours).all()  # request-time features use the impression ts
