"""Precompute one model version's batch predictions, shard by shard, on this machine.

:func:`precompute` maps :func:`~recsys.precompute.feed.feed_shard` over user shards and
:func:`~recsys.precompute.menu.menu_shard` over restaurant shards, and returns the four frames
that publishing writes (one per Feast view, columns named as the views' fields)::

    user_top_restaurants  user_id, restaurant_ids, scores, model_version, event_timestamp, cold_start
    restaurant_candidates restaurant_id, item_ids, scores, model_version, event_timestamp
    user_embedding        user_id, embedding, model_version, event_timestamp
    item_embedding        item_id, embedding, model_version, event_timestamp

``event_timestamp`` is the run time given (deterministic: pass the run's date, not the wall
clock, so a re-run produces the same bytes); publishing re-stamps rows with its own time.
Restaurants "exist" when ``created_ts <= run_ts``; opening hours are a request-time filter
(serving), not a precompute one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl
import pyarrow as pa

from recsys.config import Config
from recsys.errors import DataContractError
from recsys.precompute.feed import FeedLists, FeedTable, feed_shard, user_shards
from recsys.precompute.geometry import Grid
from recsys.precompute.inputs import CellClicks, FeedScorer, Vectors
from recsys.precompute.menu import item_scores, menu_shard, restaurant_shards

VIEWS = ("user_top_restaurants", "restaurant_candidates", "user_embedding", "item_embedding")
_TS = pl.Datetime("us", "UTC")
# Restaurants per menu shard (a restaurant's items never span two shards).
RESTAURANT_SHARD = 10_000


@dataclass(frozen=True)
class PrecomputeInputs:
    """Everything one run reads, already in memory.

    users: (user_id, home_cell); restaurants: (restaurant_id, cell, created_ts);
    items: (item_id, restaurant_id); item_ids/item_score: the per-item ranking score of the menu;
    user_embeddings/item_embeddings: the vectors serving scores items with (menu model).
    """

    users: pl.DataFrame
    restaurants: pl.DataFrame
    items: pl.DataFrame
    feed_scorer: FeedScorer
    item_ids: np.ndarray
    item_score: np.ndarray
    user_embeddings: Vectors
    item_embeddings: Vectors
    cell_clicks: CellClicks | None = None


@dataclass(frozen=True)
class PrecomputeOutputs:
    user_top_restaurants: pl.DataFrame
    restaurant_candidates: pl.DataFrame
    user_embedding: pl.DataFrame
    item_embedding: pl.DataFrame

    def frames(self) -> dict[str, pl.DataFrame]:
        return {name: getattr(self, name) for name in VIEWS}


def _need(df: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataContractError(f"{what}: missing columns {missing} (has {df.columns})")


def existing_restaurants(restaurants: pl.DataFrame, run_ts: datetime) -> pl.DataFrame:
    """Restaurants created at or before ``run_ts`` (restaurant_id, cell), sorted by id."""
    _need(restaurants, ("restaurant_id", "cell", "created_ts"), "restaurants")
    if run_ts.tzinfo is None:
        raise DataContractError(f"run_ts={run_ts.isoformat()}: must be timezone-aware (UTC)")
    return (restaurants.filter(pl.col("created_ts") <= run_ts)
            .select(pl.col("restaurant_id").cast(pl.Int64), pl.col("cell").cast(pl.Int64))
            .sort("restaurant_id"))


def feed_lists(table: FeedTable, user_ids, user_cells, scorer: FeedScorer, k: int,
               shard_users: int) -> FeedLists:
    """Every user's top-``k``, one :func:`feed_shard` per user shard (run here, in order)."""
    user_ids = np.asarray(user_ids, dtype=np.int64)
    user_cells = np.asarray(user_cells, dtype=np.int64)
    parts = []
    for shard in user_shards(user_ids, user_cells, shard_users):
        vectors, known = scorer.users.lookup(user_ids[shard])
        parts.append(feed_shard(table, user_ids[shard], user_cells[shard], vectors, known, k))
    return FeedLists.concat(parts)


def _list_column(offsets: np.ndarray, values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(values, value_type))


def feed_frame(lists: FeedLists, model_version: str, run_ts: datetime) -> pl.DataFrame:
    """``user_top_restaurants`` rows, sorted by user_id."""
    table = pa.table({
        "user_id": pa.array(lists.user_ids, pa.int64()),
        "restaurant_ids": _list_column(lists.offsets, lists.restaurant_ids, pa.int64()),
        "scores": _list_column(lists.offsets, lists.scores, pa.float32()),
        "cold_start": pa.array(lists.cold_start, pa.bool_()),
    })
    frame = pl.from_arrow(table).with_columns(pl.col("restaurant_ids").cast(pl.List(pl.Int64)),
                                              pl.col("scores").cast(pl.List(pl.Float32)))
    return _stamp(frame.sort("user_id"), model_version, run_ts).select(
        "user_id", "restaurant_ids", "scores", "model_version", "event_timestamp", "cold_start")


def candidates_frame(items: pl.DataFrame, restaurant_ids: np.ndarray, item_ids, score, cap: int,
                     shard_size: int, model_version: str, run_ts: datetime) -> pl.DataFrame:
    """``restaurant_candidates`` rows of the given restaurants (those with items), by restaurant_id."""
    _need(items, ("item_id", "restaurant_id"), "items")
    scored = item_scores(items, item_ids, score)
    parts = [menu_shard(scored.filter(pl.col("restaurant_id").is_in(pl.Series(shard).implode())), cap)
             for shard in restaurant_shards(restaurant_ids, shard_size)]
    frame = pl.concat(parts) if parts else menu_shard(scored.clear(), cap)
    return _stamp(frame.sort("restaurant_id"), model_version, run_ts)


def embedding_frame(key: str, vectors: Vectors, model_version: str, run_ts: datetime) -> pl.DataFrame:
    """``user_embedding`` / ``item_embedding`` rows (``key`` = user_id / item_id), by id."""
    order = np.argsort(vectors.ids, kind="stable")
    flat = pa.FixedSizeListArray.from_arrays(pa.array(vectors.vectors[order].ravel(), pa.float32()),
                                             vectors.dim)
    frame = pl.from_arrow(pa.table({key: pa.array(vectors.ids[order], pa.int64()), "embedding": flat}))
    frame = frame.with_columns(pl.col("embedding").cast(pl.List(pl.Float32)))
    return _stamp(frame, model_version, run_ts)


def _stamp(frame: pl.DataFrame, model_version: str, run_ts: datetime) -> pl.DataFrame:
    return frame.with_columns(pl.lit(model_version, pl.Utf8).alias("model_version"),
                              pl.lit(run_ts).cast(_TS).alias("event_timestamp"))


def precompute(inputs: PrecomputeInputs, config: Config, model_version: str, run_ts: datetime) -> PrecomputeOutputs:
    """All four frames of ``model_version`` (see the module docstring)."""
    settings = config.precompute
    _need(inputs.users, ("user_id", "home_cell"), "users")
    grid = Grid(config.grid_size, settings.delivery_radius)
    restaurants = existing_restaurants(inputs.restaurants, run_ts)
    table = FeedTable.build(grid, restaurants["restaurant_id"].to_numpy(), restaurants["cell"].to_numpy(),
                            inputs.feed_scorer, inputs.cell_clicks)
    users = inputs.users.select(pl.col("user_id").cast(pl.Int64), pl.col("home_cell").cast(pl.Int64))
    lists = feed_lists(table, users["user_id"].to_numpy(), users["home_cell"].to_numpy(), inputs.feed_scorer,
                       settings.top_k_restaurants, settings.shard_users)
    return PrecomputeOutputs(
        user_top_restaurants=feed_frame(lists, model_version, run_ts),
        restaurant_candidates=candidates_frame(inputs.items, table.restaurant_ids, inputs.item_ids,
                                               inputs.item_score, settings.candidate_items_cap,
                                               RESTAURANT_SHARD, model_version, run_ts),
        user_embedding=embedding_frame("user_id", inputs.user_embeddings, model_version, run_ts),
        item_embedding=embedding_frame("item_id", inputs.item_embeddings, model_version, run_ts),
    )
