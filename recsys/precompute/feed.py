"""The feed: each user's top-K restaurants among those that deliver to the user's home cell.

Work is split into user shards (:func:`user_shards`); :func:`feed_shard` is a pure function of
one shard and the broadcast :class:`FeedTable` (the restaurants that exist at run time, their
vectors, bias and cold-start popularity), so a distributed engine can map it over shards.

Inside a shard users are grouped by home cell: the cell's candidate restaurants (within the
delivery radius) are looked up once, all its users are scored against them with one matrix
product, and the top K of every row come from one ``argpartition`` and a sort of K entries.
Cost per shard ~ users x candidates-per-cell x dim, independent of the catalog size. Shards are
cut from the users sorted by (cell, user_id), so a cell's users are rarely split over shards.

Users without a vector (cold start) get the cell's popularity list: restaurants ranked by feed
clicks among users of that cell, ties and click-less cells backed off to global clicks
(``score = cell_clicks + global_clicks / (1 + total_clicks)``), flagged ``cold_start``.
Ordering: score descending, then restaurant_id ascending.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys.errors import DataContractError
from recsys.precompute.geometry import CellBuckets, Grid
from recsys.precompute.inputs import CellClicks, FeedScorer


@dataclass(frozen=True)
class FeedTable:
    """The restaurants a feed may show at run time, aligned arrays (the shards' broadcast)."""

    grid: Grid
    restaurant_ids: np.ndarray  # (R,)
    cells: np.ndarray  # (R,)
    vectors: np.ndarray  # (R, dim) float32
    bias: np.ndarray  # (R,) float32
    distance_weight: float
    cell_clicks: sp.csr_matrix  # (n_cells, R)
    global_share: np.ndarray  # (R,) float32 in [0, 1)
    buckets: CellBuckets

    @classmethod
    def build(cls, grid: Grid, restaurant_ids, cells, scorer: FeedScorer,
              clicks: CellClicks | None = None) -> "FeedTable":
        """``restaurant_ids``/``cells``: the restaurants that exist at run time."""
        rids = np.asarray(restaurant_ids, dtype=np.int64)
        cells = grid.check_cells(cells, "restaurant cells")
        if rids.shape != cells.shape:
            raise DataContractError(f"restaurant ids {rids.shape} and cells {cells.shape} differ")
        if len(np.unique(rids)) != len(rids):
            raise DataContractError("restaurant ids: duplicates")
        vectors, bias = scorer.restaurant_arrays(rids)
        clicks = clicks or CellClicks.empty()
        if len(rids):
            order = np.argsort(rids)
            col = order[np.minimum(np.searchsorted(rids[order], clicks.restaurant_ids), len(rids) - 1)]
            keep = rids[col] == clicks.restaurant_ids  # clicks on restaurants not in the catalog: ignored
        else:
            col, keep = np.zeros(len(clicks.cells), np.int64), np.zeros(len(clicks.cells), bool)
        keep &= (clicks.cells >= 0) & (clicks.cells < grid.n_cells)
        matrix = sp.csr_matrix((clicks.clicks[keep], (clicks.cells[keep], col[keep])),
                               shape=(grid.n_cells, len(rids)), dtype=np.float64)
        total = np.asarray(matrix.sum(axis=0)).ravel()
        share = (total / (1.0 + total.sum())).astype(np.float32)
        return cls(grid, rids, cells, vectors, bias, float(scorer.distance_weight), matrix, share,
                   CellBuckets.of(cells, grid.n_cells))

    def candidates(self, cell: int) -> np.ndarray:
        """Positions of the restaurants delivering to ``cell``."""
        return self.buckets.within(self.grid, cell)


@dataclass(frozen=True)
class FeedLists:
    """Ragged top lists: user ``user_ids[i]`` gets ``restaurant_ids[offsets[i]:offsets[i+1]]``."""

    user_ids: np.ndarray
    offsets: np.ndarray  # (n+1,) int64
    restaurant_ids: np.ndarray
    scores: np.ndarray  # float32
    cold_start: np.ndarray  # (n,) bool

    @staticmethod
    def concat(parts: list["FeedLists"]) -> "FeedLists":
        if not parts:
            z = np.zeros(0, np.int64)
            return FeedLists(z, np.zeros(1, np.int64), z, np.zeros(0, np.float32), np.zeros(0, bool))
        shifts = np.cumsum([0] + [p.offsets[-1] for p in parts[:-1]])
        return FeedLists(
            np.concatenate([p.user_ids for p in parts]),
            np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, shifts)]).astype(np.int64),
            np.concatenate([p.restaurant_ids for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.cold_start for p in parts]),
        )


def user_shards(user_ids, user_cells, shard_users: int) -> list[np.ndarray]:
    """Positions of users, sorted by (cell, user_id), cut into shards of ``shard_users``."""
    if shard_users < 1:
        raise DataContractError(f"shard_users={shard_users}: must be >= 1")
    order = np.lexsort((np.asarray(user_ids), np.asarray(user_cells)))
    return [order[i:i + shard_users] for i in range(0, len(order), shard_users)]


def top_k_rows(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best columns as (rows, k) ids and scores: score descending, then id ascending."""
    n = scores.shape[1]
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), scores.shape)
    part_scores = np.take_along_axis(scores, part, axis=1)
    part_ids = ids[part]
    order = np.lexsort((part_ids, -part_scores), axis=1)
    return np.take_along_axis(part_ids, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def feed_shard(table: FeedTable, user_ids, user_cells, user_vectors: np.ndarray, has_vector: np.ndarray,
               k: int) -> FeedLists:
    """Top-``k`` restaurants of each user of one shard (pure: no I/O, no shared state).

    Parameters
    ----------
    user_ids, user_cells : (n,) the shard's users and their home cells.
    user_vectors : (n, dim) float32 feed vectors (rows of cold-start users are ignored).
    has_vector : (n,) bool, False for cold-start users.
    k : list length (shorter where fewer restaurants deliver).

    Returns
    -------
    FeedLists in the order of ``user_ids`` sorted ascending.
    """
    if k < 1:
        raise DataContractError(f"k={k}: must be >= 1")
    user_ids = np.asarray(user_ids, dtype=np.int64)
    user_cells = table.grid.check_cells(user_cells, "user home cells")
    by_id = np.argsort(user_ids, kind="stable")
    user_ids, user_cells = user_ids[by_id], user_cells[by_id]
    user_vectors, has_vector = np.asarray(user_vectors, np.float32)[by_id], np.asarray(has_vector, bool)[by_id]
    n = len(user_ids)
    lengths = np.zeros(n, np.int64)
    blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (user rows, ids, scores)
    by_cell = np.argsort(user_cells, kind="stable")
    cells, starts = np.unique(user_cells[by_cell], return_index=True)
    for cell, lo, hi in zip(cells.tolist(), starts, np.r_[starts[1:], n]):
        rows = by_cell[lo:hi]
        cand = table.candidates(cell)
        if len(cand) == 0:
            continue
        kk = min(k, len(cand))
        cand_ids = table.restaurant_ids[cand]
        warm, cold = rows[has_vector[rows]], rows[~has_vector[rows]]
        if len(warm):
            offset = table.bias[cand]
            if table.distance_weight:
                offset = offset - table.distance_weight * table.grid.euclidean(np.int64(cell), table.cells[cand])
            # float64 products rounded to float32: a row's scores do not depend on how many rows
            # share the product (BLAS kernels differ by shape), so shard sizes do not change results
            scores = (user_vectors[warm].astype(np.float64) @ table.vectors[cand].T.astype(np.float64)
                      + offset[None, :]).astype(np.float32)
            blocks.append((warm, *top_k_rows(scores, cand_ids, kk)))
        if len(cold):
            pop = (table.cell_clicks[cell].toarray().ravel()[cand] + table.global_share[cand]).astype(np.float32)
            ids, scores = top_k_rows(pop[None, :], cand_ids, kk)
            blocks.append((cold, np.broadcast_to(ids, (len(cold), kk)), np.broadcast_to(scores, (len(cold), kk))))
        lengths[rows] = kk
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    out_ids = np.empty(offsets[-1], np.int64)
    out_scores = np.empty(offsets[-1], np.float32)
    for rows, ids, scores in blocks:
        at = (offsets[rows][:, None] + np.arange(ids.shape[1])[None, :]).ravel()
        out_ids[at] = ids.ravel()
        out_scores[at] = scores.ravel()
    return FeedLists(user_ids, offsets, out_ids, out_scores, ~has_vector)
