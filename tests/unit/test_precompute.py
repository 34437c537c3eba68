"""Precompute: feed lists within the delivery radius, top K best first (equal to brute force),
cold start from cell popularity, menu candidates capped, and shards that do not change results."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from recsys.config import Config
from recsys.errors import DataContractError
from recsys.precompute import (CellClicks, FeedScorer, Grid, PrecomputeInputs, Vectors, feed_shard,
                               menu_shard, precompute, item_scores, FeedTable)

RUN = datetime(2026, 10, 20, tzinfo=timezone.utc)
GRID, RADIUS, K, DIM = 6, 1, 5, 8


def world(seed: int = 0, n_users: int = 120, n_rest: int = 40):
    rng = np.random.default_rng(seed)
    users = pl.DataFrame({"user_id": rng.choice(10**6, n_users, replace=False).astype(np.int64),
                          "home_cell": rng.integers(0, GRID * GRID, n_users).astype(np.int32)})
    created = [RUN - timedelta(days=1)] * n_rest
    created[0] = created[1] = RUN + timedelta(days=1)  # not yet open at run time
    restaurants = pl.DataFrame({"restaurant_id": np.arange(100, 100 + n_rest, dtype=np.int64),
                                "cell": rng.integers(0, GRID * GRID, n_rest).astype(np.int32),
                                "created_ts": created})
    items = pl.DataFrame({"item_id": np.arange(1000, 1000 + 6 * n_rest, dtype=np.int64),
                          "restaurant_id": np.repeat(restaurants["restaurant_id"].to_numpy(), 6)})
    warm = users["user_id"].to_numpy()[: n_users - 20]  # the last 20 users are cold start
    scorer = FeedScorer(Vectors(warm, rng.standard_normal((len(warm), DIM))),
                        Vectors(restaurants["restaurant_id"].to_numpy(), rng.standard_normal((n_rest, DIM))),
                        restaurant_bias=rng.standard_normal(n_rest), distance_weight=0.3)
    clicks = CellClicks(rng.integers(0, GRID * GRID, 300), rng.choice(restaurants["restaurant_id"].to_numpy(), 300),
                        np.ones(300))
    inputs = PrecomputeInputs(
        users=users, restaurants=restaurants, items=items, feed_scorer=scorer,
        item_ids=items["item_id"].to_numpy(), item_score=rng.random(items.height),
        user_embeddings=Vectors(warm, rng.standard_normal((len(warm), DIM))),
        item_embeddings=Vectors(items["item_id"].to_numpy(), rng.standard_normal((items.height, DIM))),
        cell_clicks=clicks)
    return inputs


def config(**precompute) -> Config:
    settings = dict(top_k_restaurants=K, candidate_items_cap=4, grid_size=GRID, delivery_radius=RADIUS,
                    shard_users=1000) | precompute
    return Config().with_overrides(precompute=settings)


def brute_force(inputs: PrecomputeInputs, user_id: int, cell: int) -> tuple[list[int], np.ndarray]:
    grid = Grid(GRID, RADIUS)
    r = inputs.restaurants.filter(pl.col("created_ts") <= RUN)
    rids, rcells = r["restaurant_id"].to_numpy(), r["cell"].to_numpy().astype(np.int64)
    ok = grid.chebyshev(np.full(len(rids), cell), rcells) <= RADIUS
    s = inputs.feed_scorer
    u, _ = s.users.lookup([user_id])
    y, _ = s.restaurants.lookup(rids)
    bias = s.restaurant_bias[s.restaurants.positions(rids)]
    scores = (y @ u[0] + bias - s.distance_weight * grid.euclidean(np.full(len(rids), cell), rcells))[ok]
    order = np.lexsort((rids[ok], -scores))[:K]
    return rids[ok][order].tolist(), scores[order]


@pytest.fixture(scope="module")
def outputs():
    inputs = world()
    return inputs, precompute(inputs, config(), "v1", RUN)


def test_feed_lists_only_hold_existing_restaurants_within_the_delivery_radius(outputs):
    inputs, out = outputs
    cells = dict(zip(*inputs.restaurants[["restaurant_id", "cell"]].to_numpy().T))
    homes = dict(inputs.users.iter_rows())
    grid = Grid(GRID, RADIUS)
    seen = set()
    for row in out.user_top_restaurants.iter_rows(named=True):
        for rid in row["restaurant_ids"]:
            seen.add(rid)
            assert grid.chebyshev(np.int64(homes[row["user_id"]]), np.int64(cells[rid])) <= RADIUS
    assert seen and not seen & {100, 101}  # created after the run: never shown


def test_warm_users_get_their_k_best_restaurants_best_first(outputs):
    inputs, out = outputs
    homes = dict(inputs.users.iter_rows())
    checked = 0
    for row in out.user_top_restaurants.filter(~pl.col("cold_start")).iter_rows(named=True):
        ids, scores = brute_force(inputs, row["user_id"], homes[row["user_id"]])
        assert row["restaurant_ids"] == ids
        np.testing.assert_allclose(row["scores"], scores, rtol=1e-5, atol=1e-5)
        assert len(ids) <= K and list(row["scores"]) == sorted(row["scores"], reverse=True)
        checked += 1
    assert checked == 100
    assert out.user_top_restaurants["restaurant_ids"].list.len().max() == K


def test_cold_start_users_get_their_cells_click_popularity_flagged(outputs):
    inputs, out = outputs
    clicks = inputs.cell_clicks
    cold = out.user_top_restaurants.filter(pl.col("cold_start"))
    assert cold.height == 20
    homes = dict(inputs.users.iter_rows())
    for row in cold.iter_rows(named=True):
        cell = homes[row["user_id"]]
        in_cell = {}
        for c, r, n in zip(clicks.cells, clicks.restaurant_ids, clicks.clicks):
            if c == cell:
                in_cell[r] = in_cell.get(r, 0) + n
        counts = [in_cell.get(r, 0) for r in row["restaurant_ids"]]
        assert counts == sorted(counts, reverse=True)  # ranked by clicks in the cell first
        assert row["scores"] == sorted(row["scores"], reverse=True)


def test_cold_start_backs_off_to_global_popularity_where_the_cell_has_no_clicks():
    grid = Grid(3, 1)
    scorer = FeedScorer(Vectors(np.zeros(0, np.int64), np.zeros((0, 2))), Vectors([1, 2, 3], np.zeros((3, 2))))
    # restaurant 3 is the most clicked overall, but only by users of cell 8; cell 0 has no clicks
    clicks = CellClicks([8, 8, 8, 4], [3, 3, 3, 2], [1, 1, 1, 1])
    table = FeedTable.build(grid, [1, 2, 3], [0, 0, 0], scorer, clicks)
    lists = feed_shard(table, [7], [0], np.zeros((1, 2), np.float32), np.array([False]), k=3)
    assert lists.restaurant_ids.tolist() == [3, 2, 1] and lists.cold_start.tolist() == [True]
    lists = feed_shard(table, [7], [4], np.zeros((1, 2), np.float32), np.array([False]), k=3)
    assert lists.restaurant_ids.tolist() == [2, 3, 1]  # the cell's own clicks come first


def test_users_with_fewer_candidates_than_k_get_shorter_lists_and_empty_cells_empty_ones():
    grid = Grid(5, 0)
    scorer = FeedScorer(Vectors([1, 2], np.ones((2, 2))), Vectors([10, 11], np.eye(2)))
    table = FeedTable.build(grid, [10, 11], [0, 0], scorer)
    lists = feed_shard(table, [2, 1], [24, 0], np.ones((2, 2), np.float32), np.array([True, True]), k=5)
    assert lists.user_ids.tolist() == [1, 2]
    assert np.diff(lists.offsets).tolist() == [2, 0]


def test_shards_give_the_same_result_as_one_shard():
    inputs = world(seed=4)
    one = precompute(inputs, config(shard_users=10_000), "v1", RUN)
    many = precompute(inputs, config(shard_users=7), "v1", RUN)
    for name, frame in one.frames().items():
        assert frame.equals(many.frames()[name]), name


def test_menu_candidates_are_each_restaurants_best_items_capped(outputs):
    inputs, out = outputs
    cand = out.restaurant_candidates
    assert set(cand["restaurant_id"]) == set(range(102, 140))  # existing restaurants only
    scores = dict(zip(inputs.item_ids.tolist(), inputs.item_score.astype(np.float32).tolist()))
    owner = dict(inputs.items.iter_rows())
    for row in cand.iter_rows(named=True):
        mine = sorted((i for i, r in owner.items() if r == row["restaurant_id"]), key=lambda i: (-scores[i], i))
        assert row["item_ids"] == mine[:4]
        assert row["scores"] == [scores[i] for i in mine[:4]]


def test_items_without_a_score_rank_last_with_score_zero():
    items = pl.DataFrame({"item_id": [1, 2, 3], "restaurant_id": [9, 9, 9]})
    out = menu_shard(item_scores(items, [1, 3], [0.5, 0.7]), cap=3)
    assert out["item_ids"].to_list() == [[3, 1, 2]] and out["scores"].to_list()[0][2] == 0.0


def test_output_frames_carry_the_views_columns_model_version_and_run_time(outputs):
    _, out = outputs
    top = out.user_top_restaurants
    assert top.columns == ["user_id", "restaurant_ids", "scores", "model_version", "event_timestamp", "cold_start"]
    assert top.schema["restaurant_ids"] == pl.List(pl.Int64) and top.schema["scores"] == pl.List(pl.Float32)
    assert top["user_id"].is_sorted() and top.height == 120
    for frame in out.frames().values():
        assert frame["model_version"].unique().to_list() == ["v1"]
        assert frame["event_timestamp"].unique().to_list() == [RUN]
    emb = out.user_embedding
    assert emb.schema["embedding"] == pl.List(pl.Float32) and emb.height == 100
    got = np.stack(emb.sort("user_id")["embedding"].to_list())
    vec, known = outputs[0].user_embeddings.lookup(emb.sort("user_id")["user_id"].to_numpy())
    assert known.all() and np.array_equal(got, vec)


def test_bad_inputs_name_what_is_wrong():
    inputs = world()
    with pytest.raises(DataContractError, match="cell"):
        FeedTable.build(Grid(2, 1), [1], [9], inputs.feed_scorer)
    with pytest.raises(DataContractError, match="timezone"):
        precompute(inputs, config(), "v1", RUN.replace(tzinfo=None))
    with pytest.raises(DataContractError, match="dims"):
        FeedScorer(Vectors([1], np.ones((1, 2))), Vectors([1], np.ones((1, 3))))
