"""The simulator and its ground truth, on the session's tiny world."""

import numpy as np
import polars as pl
import pytest

from recsys.simulation.calibration import reference_values
from recsys.simulation.run import load_truth, simulate
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def log(tiny_world):
    return pl.read_parquet(tiny_world.raw_dir / "impressions.parquet")


@pytest.fixture(scope="module")
def truth(tiny_world):
    return load_truth(tiny_world)


def test_same_seed_gives_identical_files(tmp_path, tiny_world):
    config = tiny_config(tmp_path)
    simulate(config)
    for name in ("users", "restaurants", "items", "impressions"):
        assert (config.raw_dir / f"{name}.parquet").read_bytes() == (tiny_world.raw_dir / f"{name}.parquet").read_bytes(), name


def test_another_seed_gives_another_log(tmp_path, tiny_world):
    config = tiny_config(tmp_path, seed=8)
    simulate(config)
    assert (config.raw_dir / "impressions.parquet").read_bytes() != (tiny_world.raw_dir / "impressions.parquet").read_bytes()


def test_log_follows_the_impressions_contract(log):
    assert {"request_id", "ts", "user_id", "surface", "restaurant_id", "item_id", "position",
            "propensity", "policy", "clicked", "ordered"} <= set(log.columns)
    feed, menu = log.filter(pl.col("surface") == "feed"), log.filter(pl.col("surface") == "menu")
    assert feed["item_id"].null_count() == feed.height and menu["item_id"].null_count() == 0
    assert log.filter(pl.col("ordered") & ~pl.col("clicked")).height == 0
    assert log["propensity"].min() > 0 and log["propensity"].max() <= 1
    assert log.select(pl.struct("request_id", "position").is_duplicated().any()).item() is False
    gaps = log.group_by("request_id").agg(ok=pl.col("position").max() + 1 == pl.len())
    assert gaps["ok"].all()


def test_menu_items_belong_to_the_opened_restaurant(tiny_world, log):
    items = pl.read_parquet(tiny_world.raw_dir / "items.parquet")
    menu = log.filter(pl.col("surface") == "menu").join(items, on="item_id", suffix="_item")
    assert (menu["restaurant_id"] == menu["restaurant_id_item"]).all()


@pytest.mark.parametrize("surface", ["feed", "menu"])
def test_truth_ctr_of_logged_lists_agrees_with_sampled_clicks(tiny_world, log, truth, surface):
    """The truth API's expected clicks of the logged lists match the simulated clicks within
    the 95% interval of their sum (Poisson-binomial variance)."""
    rows = log.filter(pl.col("surface") == surface)
    entity = "restaurant_id" if surface == "feed" else "item_id"
    p = truth.expected_reward_per_slot(rows.select("request_id", "position", entity), rows, surface)
    clicks = rows["clicked"].sum()
    assert abs(clicks - p.sum()) < 1.96 * np.sqrt((p * (1 - p)).sum())


@pytest.mark.parametrize("surface", ["feed", "menu"])
def test_oracle_beats_reversed_oracle_and_popularity_sits_between_random_and_oracle(tiny_world, log, truth, surface):
    slots = tiny_world.sim.feed_slots if surface == "feed" else tiny_world.sim.menu_slots
    requests = log.filter(pl.col("surface") == surface).unique("request_id").sort("request_id")
    oracle = truth.expected_reward(truth.oracle_lists(requests, surface, slots), requests, surface)
    reverse = truth.expected_reward(truth.oracle_lists(requests, surface, slots, reverse=True), requests, surface)
    assert reverse < oracle
    ref = reference_values(truth, log, surface, slots)
    assert ref.random < ref.popularity < ref.oracle
    assert 0.3 <= ref.popularity_lift_share <= 0.6


def test_orders_use_the_order_model(truth, log):
    rows = log.filter((pl.col("surface") == "menu") & pl.col("clicked"))
    ts = rows["ts"].dt.epoch("us").to_numpy()
    p = truth.order_given_click("menu", rows["user_id"].to_numpy(), rows["item_id"].to_numpy(), ts)
    assert abs(rows["ordered"].sum() - p.sum()) < 1.96 * np.sqrt((p * (1 - p)).sum()) + 1


def test_feed_candidates_deliver_to_the_user_and_are_open(truth):
    users = np.arange(50)
    ts = np.full(50, truth.world.start_us + 3 * 3_600_000_000)  # 03:00: only 24h places are open
    group, rest = truth.candidates("feed", users, ts)
    g = truth.world.grid_size
    uc, rc = truth.world.user_cell[users[group]], truth.world.rest_cell[rest]
    assert np.all(np.maximum(abs(uc // g - rc // g), abs(uc % g - rc % g)) <= truth.world.delivery_radius)
    assert np.all(truth.world.rest_close_hour[rest] == 24)


def test_drift_changes_the_taste_of_the_drifting_share_from_the_drift_day(tmp_path):
    from recsys.simulation.run import make_world
    from recsys.simulation.truth import GroundTruth

    config = tiny_config(tmp_path, sim={"size": "tiny", "drift_day": 5, "drift_share": 0.1})
    truth = GroundTruth(make_world(config))
    users = np.arange(truth.world.n_users)
    day = 86_400_000_000
    before = truth.taste(users, np.full(len(users), truth.world.start_us + 4 * day))
    after = truth.taste(users, np.full(len(users), truth.world.start_us + 5 * day))
    changed = np.any(before != after, axis=1)
    assert np.array_equal(changed, truth.world.user_drifts)
    assert 0.05 < changed.mean() < 0.15
