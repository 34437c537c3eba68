"""The menu: each restaurant's candidate items, ranked by a given per-item score and capped.

The per-item score is the caller's choice (popularity, the ALS item norm, a learned prior);
items without one score ``fill`` (0). Ordering: score descending, then item_id ascending.
:func:`restaurant_shards` partitions the restaurants; :func:`menu_shard` is a pure function of
one shard's items, so a distributed engine can map it.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys.errors import DataContractError

CANDIDATE_COLUMNS = ("restaurant_id", "item_ids", "scores")


def item_scores(items: pl.DataFrame, item_ids, scores, fill: float = 0.0) -> pl.DataFrame:
    """``items`` (item_id, restaurant_id) with a float32 ``score`` column from aligned arrays."""
    missing = {"item_id", "restaurant_id"} - set(items.columns)
    if missing:
        raise DataContractError(f"items: missing columns {sorted(missing)}")
    scores = np.asarray(scores, dtype=np.float32)
    if not np.isfinite(scores).all():
        raise DataContractError("item scores: NaN or inf values")
    given = pl.DataFrame({"item_id": np.asarray(item_ids, dtype=np.int64), "score": scores})
    if given["item_id"].n_unique() != given.height:
        raise DataContractError("item scores: duplicate item ids")
    return (items.select(pl.col("item_id").cast(pl.Int64), pl.col("restaurant_id").cast(pl.Int64))
            .join(given, on="item_id", how="left")
            .with_columns(pl.col("score").fill_null(fill).cast(pl.Float32)))


def restaurant_shards(restaurant_ids, shard_size: int) -> list[np.ndarray]:
    """Sorted restaurant ids cut into shards of ``shard_size``."""
    if shard_size < 1:
        raise DataContractError(f"shard_size={shard_size}: must be >= 1")
    ids = np.unique(np.asarray(restaurant_ids, dtype=np.int64))
    return [ids[i:i + shard_size] for i in range(0, len(ids), shard_size)]


def menu_shard(scored_items: pl.DataFrame, cap: int) -> pl.DataFrame:
    """Per restaurant of ``scored_items`` (item_id, restaurant_id, score): its best ``cap`` items.

    Returns (restaurant_id, item_ids List[Int64], scores List[Float32]) sorted by restaurant_id.
    """
    if cap < 1:
        raise DataContractError(f"cap={cap}: must be >= 1")
    return (scored_items.sort(["restaurant_id", "score", "item_id"], descending=[False, True, False])
            .group_by("restaurant_id", maintain_order=True)
            .agg(pl.col("item_id").head(cap).alias("item_ids"), pl.col("score").head(cap).alias("scores")))
