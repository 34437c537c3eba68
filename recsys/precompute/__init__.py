"""Batch predictions of one model version: each user's restaurants, each restaurant's items.

Work over partitions (user shards, restaurant shards); each shard is a pure function
(:func:`feed_shard`, :func:`menu_shard`) so the same step can run on a distributed engine.
:func:`precompute` runs the shards locally and returns the frames publishing writes
(:mod:`recsys.registry.publish`).
"""

from recsys.precompute.feed import FeedLists, FeedTable, feed_shard, top_k_rows, user_shards
from recsys.precompute.geometry import CellBuckets, Grid
from recsys.precompute.inputs import CellClicks, FeedScorer, Vectors
from recsys.precompute.menu import item_scores, menu_shard, restaurant_shards
from recsys.precompute.run import (VIEWS, PrecomputeInputs, PrecomputeOutputs, candidates_frame,
                                   embedding_frame, existing_restaurants, feed_frame, feed_lists, precompute)

__all__ = [
    "CellBuckets", "CellClicks", "FeedLists", "FeedScorer", "FeedTable", "Grid", "PrecomputeInputs",
    "PrecomputeOutputs", "VIEWS", "Vectors", "candidates_frame", "embedding_frame", "existing_restaurants",
    "feed_frame", "feed_lists", "feed_shard", "item_scores", "menu_shard", "precompute", "restaurant_shards",
    "top_k_rows", "user_shards",
]
