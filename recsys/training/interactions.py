"""Training data from the impressions log: confidence-weighted sparse matrices with explicit id maps.

Two matrices, one per surface (docs/DATA_CONTRACTS.md, impressions):

* menu events -> user x item,
* feed events -> user x restaurant,

with ``confidence = w_click * clicks + w_order * orders`` summed over the window's events of a
(user, entity) pair. Rows and columns are indexed through :class:`IdMap` (sorted unique external
ids), so the same log always gives the same matrix, byte for byte. Work is lazy polars up to the
final aggregate; only nonzero pairs reach numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.training.errors import TrainingDataError
from recsys.training.params import ConfidenceWeights

Surface = Literal["feed", "menu"]
ENTITY = {"feed": "restaurant_id", "menu": "item_id"}
IMPRESSIONS_FILE = "impressions.parquet"


@dataclass(frozen=True)
class IdMap:
    """External ids <-> dense indices 0..n-1 (``ids`` sorted, unique; int64 or str)."""

    ids: np.ndarray

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids)
        if ids.ndim != 1:
            raise TrainingDataError(f"IdMap.ids must be 1-d, got shape {ids.shape}")
        if ids.dtype.kind not in "iuU":
            raise TrainingDataError(f"IdMap.ids dtype {ids.dtype}: expected integers or str")
        if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
            raise TrainingDataError("IdMap.ids must be sorted and unique")
        object.__setattr__(self, "ids", ids.astype(np.int64) if ids.dtype.kind in "iu" else ids)

    @classmethod
    def from_values(cls, values) -> IdMap:
        values = np.asarray(values)
        return cls(np.unique(values))

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, ids) -> np.ndarray:
        """Dense index of each id, -1 for ids not in the map."""
        ids = np.asarray(ids)
        if len(self.ids) == 0 or len(ids) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        if (ids.dtype.kind in "iu") != (self.ids.dtype.kind in "iu"):
            raise TrainingDataError(f"id dtype {ids.dtype} does not match the map's {self.ids.dtype}")
        pos = np.searchsorted(self.ids, ids)
        pos_c = np.minimum(pos, len(self.ids) - 1)
        return np.where(self.ids[pos_c] == ids, pos_c, -1).astype(np.int64)


@dataclass(frozen=True)
class InteractionMatrix:
    """A confidence matrix (CSR float32, users x entities) and its id maps."""

    matrix: sp.csr_matrix
    users: IdMap
    entities: IdMap
    surface: str

    def __post_init__(self) -> None:
        check_matrix(self.matrix, (len(self.users), len(self.entities)))

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def rows(self, user_ids) -> sp.csr_matrix:
        """The rows of these users, in the entity index space (unknown users: empty rows)."""
        idx = self.users.index(user_ids)
        known = np.flatnonzero(idx >= 0)
        select = sp.csr_matrix((np.ones(len(known), np.float32), (known, idx[known])),
                               shape=(len(idx), len(self.users)), dtype=np.float32)
        out = (select @ self.matrix).tocsr()
        out.sort_indices()
        return out


def check_matrix(matrix, shape: tuple[int, int] | None = None) -> sp.csr_matrix:
    """Strict edge check: a scipy CSR matrix, float32, finite, non-negative, of ``shape``."""
    if not isinstance(matrix, sp.csr_matrix):
        raise TrainingDataError(f"matrix must be a scipy.sparse.csr_matrix, got {type(matrix).__name__}")
    if matrix.dtype != np.float32:
        raise TrainingDataError(f"matrix dtype must be float32, got {matrix.dtype}")
    if shape is not None and matrix.shape != tuple(shape):
        raise TrainingDataError(f"matrix shape {matrix.shape} does not match the id maps {tuple(shape)}")
    data = matrix.data
    if data.size and not np.isfinite(data).all():
        raise TrainingDataError(f"matrix has {int((~np.isfinite(data)).sum())} non-finite confidences")
    if data.size and (data < 0).any():
        raise TrainingDataError(f"matrix has {int((data < 0).sum())} negative confidences")
    return matrix


def scan_impressions(directory: Path) -> pl.LazyFrame:
    """The impressions log of a data directory (raw or clean: same columns)."""
    path = Path(directory) / IMPRESSIONS_FILE
    if not path.exists():
        raise TrainingDataError(f"impressions log not found: {path}")
    return pl.scan_parquet(path)


def build_interactions(
    impressions: pl.LazyFrame | pl.DataFrame,
    surface: Surface,
    weights: ConfidenceWeights = ConfidenceWeights(),
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    user_ids=None,
    entity_ids=None,
) -> InteractionMatrix:
    """Confidence matrix of one surface from the events with ``since <= ts < until``.

    Parameters
    ----------
    impressions : the log (lazy or eager), columns as in DATA_CONTRACTS.md.
    surface : ``"menu"`` (user x item) or ``"feed"`` (user x restaurant).
    weights : confidence = ``weights.click * clicks + weights.order * orders``.
    since, until : half-open time window; None leaves that side open.
    user_ids, entity_ids : the id universes (e.g. all users, all items); by default, the ids shown
        in the window. Events of ids outside a given universe are dropped.

    Returns
    -------
    InteractionMatrix with a (n_users, n_entities) float32 CSR matrix of nonzero confidences.
    """
    if surface not in ENTITY:
        raise TrainingDataError(f"surface={surface!r}: expected 'feed' or 'menu'")
    entity = ENTITY[surface]
    lf = impressions.lazy().filter(pl.col("surface") == surface)
    if since is not None:
        lf = lf.filter(pl.col("ts") >= since)
    if until is not None:
        lf = lf.filter(pl.col("ts") < until)
    lf = lf.select("user_id", pl.col(entity).alias("entity"), "clicked", "ordered")
    conf = (pl.col("clicked").cast(pl.Float64) * weights.click + pl.col("ordered").cast(pl.Float64) * weights.order)
    pairs = lf.group_by("user_id", "entity").agg(conf.sum().alias("confidence"))
    if user_ids is None or entity_ids is None:
        shown, pairs_df = pl.collect_all([
            lf.select(pl.col("user_id").unique().implode(), pl.col("entity").unique().implode()),
            pairs.filter(pl.col("confidence") > 0),
        ])
    else:
        shown, pairs_df = None, pairs.filter(pl.col("confidence") > 0).collect()
    users = IdMap.from_values(user_ids if user_ids is not None else shown["user_id"][0].to_numpy())
    entities = IdMap.from_values(entity_ids if entity_ids is not None else shown["entity"][0].to_numpy())
    rows = users.index(pairs_df["user_id"].to_numpy())
    cols = entities.index(pairs_df["entity"].to_numpy())
    keep = (rows >= 0) & (cols >= 0)
    matrix = sp.csr_matrix(
        (pairs_df["confidence"].to_numpy()[keep].astype(np.float32), (rows[keep], cols[keep])),
        shape=(len(users), len(entities)), dtype=np.float32,
    )
    matrix.sum_duplicates()
    matrix.sort_indices()
    return InteractionMatrix(matrix, users, entities, surface)
