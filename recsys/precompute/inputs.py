"""What precompute reads, as plain arrays validated at construction (no I/O here).

- :class:`Vectors`: ids and their float32 vectors (a model's user or entity factors).
- :class:`FeedScorer`: ``score(u, r) = <x_u, y_r> + bias_r - distance_weight * dist(cell_u, cell_r)``,
  given as arrays so training can plug in a learned blend (plain ALS: no bias, weight 0).
- :class:`CellClicks`: feed clicks per (home cell, restaurant), the cold-start popularity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl

from recsys.errors import DataContractError


def _ids(values, what: str) -> np.ndarray:
    ids = np.asarray(values)
    if ids.ndim != 1 or (len(ids) and ids.dtype.kind not in "iu"):
        raise DataContractError(f"{what}: expected a 1-d array of integer ids, got {ids.dtype} {ids.shape}")
    return ids.astype(np.int64)


@dataclass(frozen=True)
class Vectors:
    """``vectors[i]`` is the vector of ``ids[i]``; ids unique, vectors finite float32."""

    ids: np.ndarray
    vectors: np.ndarray
    _order: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = _ids(self.ids, "Vectors.ids")
        vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise DataContractError(f"Vectors: {len(ids)} ids but vectors of shape {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise DataContractError("Vectors: NaN or inf values")
        order = np.argsort(ids, kind="stable")
        if len(ids) > 1 and (np.diff(ids[order]) == 0).any():
            raise DataContractError("Vectors.ids: duplicate ids")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "vectors", vectors)
        object.__setattr__(self, "_order", order)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def positions(self, ids) -> np.ndarray:
        """Row of each id, -1 where it has no vector."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.ids) == 0:
            return np.full(len(ids), -1, np.int64)
        sorted_ids = self.ids[self._order]
        at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        return np.where(sorted_ids[at] == ids, self._order[at], -1)

    def lookup(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) vectors (zeros where unknown) and the (n,) known mask."""
        pos = self.positions(ids)
        known = pos >= 0
        out = self.vectors[np.maximum(pos, 0)] if len(self.ids) else np.zeros((len(pos), self.dim), np.float32)
        out[~known] = 0.0
        return out, known

    @classmethod
    def from_model(cls, model, side: str) -> "Vectors":
        """An ALS model's ``"users"`` or ``"entities"`` factors with their id maps."""
        if side == "users":
            return cls(model.users.ids, model.user_factors)
        if side == "entities":
            return cls(model.entities.ids, model.item_factors)
        raise ValueError(f"side={side!r}: expected 'users' or 'entities'")


@dataclass(frozen=True)
class FeedScorer:
    """Feed scores as arrays: ``<x_u, y_r> + bias_r - distance_weight * euclidean(cell_u, cell_r)``.

    ``restaurant_bias`` is aligned with ``restaurants.ids`` (None: zeros). Restaurants without a
    vector score ``bias - distance penalty`` (a zero vector); users without one are cold start.
    """

    users: Vectors
    restaurants: Vectors
    restaurant_bias: np.ndarray | None = None
    distance_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.users.dim != self.restaurants.dim:
            raise DataContractError(f"FeedScorer: user vectors have {self.users.dim} dims, "
                                    f"restaurant vectors {self.restaurants.dim}")
        if self.restaurant_bias is not None:
            bias = np.asarray(self.restaurant_bias, dtype=np.float32)
            if bias.shape != (len(self.restaurants.ids),) or not np.isfinite(bias).all():
                raise DataContractError(f"FeedScorer.restaurant_bias: expected ({len(self.restaurants.ids)},) "
                                        f"finite values, got {bias.shape}")
            object.__setattr__(self, "restaurant_bias", bias)
        if not np.isfinite(self.distance_weight):
            raise DataContractError(f"FeedScorer.distance_weight={self.distance_weight}: not finite")

    def restaurant_arrays(self, restaurant_ids) -> tuple[np.ndarray, np.ndarray]:
        """(R, dim) vectors and (R,) bias aligned with ``restaurant_ids`` (zeros where unknown)."""
        vectors, known = self.restaurants.lookup(restaurant_ids)
        if self.restaurant_bias is None:
            return vectors, np.zeros(len(vectors), np.float32)
        pos = self.restaurants.positions(restaurant_ids)
        bias = np.where(known, self.restaurant_bias[np.maximum(pos, 0)], 0.0).astype(np.float32)
        return vectors, bias


@dataclass(frozen=True)
class CellClicks:
    """Feed clicks by users of ``cells[i]`` on ``restaurant_ids[i]`` (one row per pair)."""

    cells: np.ndarray
    restaurant_ids: np.ndarray
    clicks: np.ndarray

    def __post_init__(self) -> None:
        cells, rids = _ids(self.cells, "CellClicks.cells"), _ids(self.restaurant_ids, "CellClicks.restaurant_ids")
        clicks = np.asarray(self.clicks, dtype=np.float64)
        if not (len(cells) == len(rids) == len(clicks)) or (clicks < 0).any() or not np.isfinite(clicks).all():
            raise DataContractError("CellClicks: cells, restaurant_ids and clicks must align, clicks finite >= 0")
        object.__setattr__(self, "cells", cells)
        object.__setattr__(self, "restaurant_ids", rids)
        object.__setattr__(self, "clicks", clicks)

    @classmethod
    def empty(cls) -> "CellClicks":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))

    @classmethod
    def from_log(cls, impressions: pl.LazyFrame | pl.DataFrame, users: pl.DataFrame,
                 until: datetime | None = None) -> "CellClicks":
        """Feed clicks (``ts < until`` when given) summed per (user's home cell, restaurant)."""
        lf = impressions.lazy().filter((pl.col("surface") == "feed") & pl.col("clicked"))
        if until is not None:
            lf = lf.filter(pl.col("ts") < until)
        homes = users.lazy().select(pl.col("user_id").cast(pl.Int64), pl.col("home_cell").cast(pl.Int64))
        agg = (lf.select(pl.col("user_id").cast(pl.Int64), pl.col("restaurant_id").cast(pl.Int64))
               .join(homes, on="user_id", how="inner")
               .group_by("home_cell", "restaurant_id").agg(pl.len().alias("clicks"))
               .sort("home_cell", "restaurant_id").collect())
        return cls(agg["home_cell"].to_numpy(), agg["restaurant_id"].to_numpy(), agg["clicks"].to_numpy())
