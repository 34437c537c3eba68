"""Baselines with the model contract (fit / score / save / load), so metrics and the gate treat
them exactly like ALS.

* :class:`Popularity`: an entity's total confidence in the training window (global).
* :class:`RestaurantPopularity` (menu): an item's share of its restaurant's confidence, smoothed.
* :class:`CellPopularity` (feed): a restaurant's confidence among users of the user's home cell,
  backed off to its global popularity for cells with little data.
* :class:`RandomScorer`: a seeded, fixed uniform score per (user, entity) pair.

Unknown entities score 0 (never seen clicked); unknown users get the global ordering.
"""

from __future__ import annotations

import numpy as np

from recsys.training.errors import ModelArtifactError, ModelFitError, TrainingDataError
from recsys.training.interactions import IdMap, InteractionMatrix, check_matrix
from recsys.training.model import Model


def _lookup(idmap: IdMap, values: np.ndarray, ids) -> np.ndarray:
    idx = idmap.index(ids)
    return np.where(idx >= 0, values[np.maximum(idx, 0)], 0.0).astype(np.float32)


class Popularity(Model):
    """Global popularity: column sums of the confidence matrix."""

    kind = "popularity"

    def __init__(self) -> None:
        self.entities: IdMap | None = None
        self.counts: np.ndarray | None = None

    def fit(self, data: InteractionMatrix) -> Popularity:
        matrix = check_matrix(data.matrix, data.shape)
        self.entities = data.entities
        self.counts = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float64)
        return self

    def _check(self) -> None:
        if self.counts is None:
            raise ModelFitError(f"{type(self).__name__} used before fit() or load()")

    def entity_scores(self, entity_ids) -> np.ndarray:
        self._check()
        return _lookup(self.entities, self.counts, entity_ids)

    def score(self, user_ids, entity_ids) -> np.ndarray:
        return self.entity_scores(entity_ids)

    def score_matrix(self, user_ids, entity_ids) -> np.ndarray:
        return np.broadcast_to(self.entity_scores(entity_ids), (len(user_ids), len(entity_ids))).copy()

    def params(self) -> dict:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        self._check()
        return {"entity_ids": self.entities.ids, "counts": self.counts}

    @classmethod
    def from_arrays(cls, params: dict, arrays: dict[str, np.ndarray]) -> Popularity:
        model = cls(**params)
        model.entities, model.counts = IdMap(arrays["entity_ids"]), arrays["counts"].astype(np.float64)
        if len(model.entities) != len(model.counts):
            raise ModelArtifactError("popularity artifact: entity_ids and counts differ in length")
        return model


class RestaurantPopularity(Popularity):
    """Menu: P(item | restaurant) = (conf_i + prior) / (conf_restaurant + prior * menu size).

    Parameters
    ----------
    item_ids, item_restaurants : the catalogue (items table), aligned.
    prior : additive smoothing per item.
    """

    kind = "restaurant_popularity"

    def __init__(self, item_ids, item_restaurants, prior: float = 1.0) -> None:
        super().__init__()
        item_ids, item_restaurants = np.asarray(item_ids), np.asarray(item_restaurants)
        if item_ids.shape != item_restaurants.shape:
            raise TrainingDataError(f"item_ids {item_ids.shape} and item_restaurants {item_restaurants.shape} differ")
        order = np.argsort(item_ids, kind="stable")
        self.catalogue = IdMap(item_ids[order])
        self.item_restaurants = item_restaurants[order]
        self.prior = float(prior)

    def fit(self, data: InteractionMatrix) -> RestaurantPopularity:
        matrix = check_matrix(data.matrix, data.shape)
        conf = np.zeros(len(self.catalogue))
        idx = self.catalogue.index(data.entities.ids)
        col = np.asarray(matrix.sum(axis=0)).ravel()
        conf[idx[idx >= 0]] = col[idx >= 0]
        _, rest = np.unique(self.item_restaurants, return_inverse=True)
        total = np.bincount(rest, weights=conf)[rest]
        size = np.bincount(rest)[rest]
        self.entities = self.catalogue
        self.counts = (conf + self.prior) / (total + self.prior * size)
        return self

    def params(self) -> dict:
        return {"prior": self.prior}

    def arrays(self) -> dict[str, np.ndarray]:
        return {**super().arrays(), "item_restaurants": self.item_restaurants}

    @classmethod
    def from_arrays(cls, params: dict, arrays: dict[str, np.ndarray]) -> RestaurantPopularity:
        model = cls(arrays["entity_ids"], arrays["item_restaurants"], **params)
        model.entities, model.counts = model.catalogue, arrays["counts"].astype(np.float64)
        return model


class CellPopularity(Model):
    """Feed: a restaurant's confidence among users of the same home cell, plus
    ``backoff`` x its global share (so sparse cells fall back on global popularity).

    Parameters
    ----------
    user_ids, user_cells : home cell of every user (users table), aligned.
    backoff : weight of the global popularity share added to each cell's counts.
    """

    kind = "cell_popularity"

    def __init__(self, user_ids, user_cells, backoff: float = 1.0) -> None:
        user_ids, user_cells = np.asarray(user_ids), np.asarray(user_cells, dtype=np.int64)
        if user_ids.shape != user_cells.shape:
            raise TrainingDataError(f"user_ids {user_ids.shape} and user_cells {user_cells.shape} differ")
        order = np.argsort(user_ids, kind="stable")
        self.user_map = IdMap(user_ids[order])
        self.user_cells = user_cells[order]
        self.backoff = float(backoff)
        self.entities: IdMap | None = None
        self.cell_counts: np.ndarray | None = None  # (n_cells, n_entities)

    def fit(self, data: InteractionMatrix) -> CellPopularity:
        matrix = check_matrix(data.matrix, data.shape).tocoo()
        uidx = self.user_map.index(data.users.ids)
        cell_of_row = np.where(uidx >= 0, self.user_cells[np.maximum(uidx, 0)], -1)
        n_cells = int(self.user_cells.max()) + 1 if len(self.user_cells) else 0
        cells = cell_of_row[matrix.row]
        keep = cells >= 0
        counts = np.zeros((n_cells, data.shape[1]))
        np.add.at(counts, (cells[keep], matrix.col[keep]), matrix.data[keep])
        total = np.asarray(matrix.sum(axis=0)).ravel()
        share = total / total.sum() if total.sum() else total
        self.entities = data.entities
        self.cell_counts = counts + self.backoff * share[None, :]
        return self

    def _check(self) -> None:
        if self.cell_counts is None:
            raise ModelFitError("CellPopularity used before fit() or load()")

    def score(self, user_ids, entity_ids) -> np.ndarray:
        self._check()
        uidx = self.user_map.index(user_ids)
        eidx = self.entities.index(entity_ids)
        cell = np.where(uidx >= 0, self.user_cells[np.maximum(uidx, 0)], -1)
        glob = self.cell_counts.sum(axis=0)
        ok_cell = (cell >= 0) & (cell < len(self.cell_counts))
        out = np.where(ok_cell, self.cell_counts[np.clip(cell, 0, max(len(self.cell_counts) - 1, 0)), np.maximum(eidx, 0)],
                       glob[np.maximum(eidx, 0)])
        return np.where(eidx >= 0, out, 0.0).astype(np.float32)

    def params(self) -> dict:
        return {"backoff": self.backoff}

    def arrays(self) -> dict[str, np.ndarray]:
        self._check()
        return {"user_ids": self.user_map.ids, "user_cells": self.user_cells,
                "entity_ids": self.entities.ids, "cell_counts": self.cell_counts}

    @classmethod
    def from_arrays(cls, params: dict, arrays: dict[str, np.ndarray]) -> CellPopularity:
        model = cls(arrays["user_ids"], arrays["user_cells"], **params)
        model.entities, model.cell_counts = IdMap(arrays["entity_ids"]), arrays["cell_counts"]
        if model.cell_counts.shape[1] != len(model.entities):
            raise ModelArtifactError("cell_popularity artifact: cell_counts and entity_ids disagree")
        return model


def _pair_uniform(seed: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A fixed U(0, 1) per (seed, a, b): splitmix64 of the pair (pure function of the ids)."""
    with np.errstate(over="ignore"):
        x = (a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ b.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
             ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return ((x >> np.uint64(40)).astype(np.float64) / float(1 << 24)).astype(np.float32)


def _as_int_keys(ids) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    # string ids: a stable 64-bit key per string (FNV-1a), no Python hash randomisation
    out = np.empty(len(ids), dtype=np.uint64)
    for i, s in enumerate(ids.tolist()):  # only for non-integer id vocabularies
        h = 0xCBF29CE484222325
        for byte in str(s).encode():
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
        out[i] = h
    return out


class RandomScorer(Model):
    """Uniform random ranking, fixed per (seed, user, entity): the floor every model must clear."""

    kind = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def fit(self, data: InteractionMatrix) -> RandomScorer:
        return self

    def score(self, user_ids, entity_ids) -> np.ndarray:
        return _pair_uniform(self.seed, _as_int_keys(user_ids), _as_int_keys(entity_ids))

    def params(self) -> dict:
        return {"seed": self.seed}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def from_arrays(cls, params: dict, arrays: dict[str, np.ndarray]) -> RandomScorer:
        return cls(**params)
