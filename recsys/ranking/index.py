"""The FAISS item index of one model version, and exact scores for a request's candidate ids.

The index is ``IndexIDMap2(IndexFlatIP(dim))`` over the model's item factors (float32), keyed by
the external ``item_id``: exact inner products, no training, no tuning knobs. It is saved in
FAISS's own format (``faiss.write_index``, atomically: temp then rename), never pickled.

Serving scores exactly the candidate ids of a request (issue 4: cost O(candidates x dim), not
O(catalog)). :class:`ItemIndex` keeps, beside the FAISS index, a sorted copy of the ids and a
zero-copy numpy view of the flat index's vectors, so scoring is one ``searchsorted`` of the
candidate ids, one gather of their rows (``np.take``) and one matrix-vector product. Measured on 200 candidates
x 64 dims (``benchmarks/bench_precompute.py``, section ``score_candidates``) against the two FAISS
routes, a search on the flat index restricted with ``IDSelectorArray`` (which FAISS turns into
``knn_inner_products_by_idx``, then needs its sorted output put back in candidate order) and
``reconstruct_batch`` + dot: the gather and ``reconstruct_batch`` are equal within noise, the
selector search 2-3x slower (e.g. 1M items, one restaurant's 200 candidates, best of 5 on a
shared 2-core machine: 61 us, 58 us, 136 us per call, id lookup included); the gather is kept as
it is plain numpy on a zero-copy view. The id lookup (``searchsorted``, ~17-25 us) is a good
part of the cost. Rows are stored in item_id order,
so when a restaurant's items have neighbouring ids (as the catalog assigns them) its candidates
are neighbouring rows: the id lookup and the gather stay in cache whatever the catalog size.
Numbers in ``benchmarks/results/precompute.json`` (``score_candidates_200x64``).

Unknown ids are reported, never dropped: :meth:`ItemIndex.score` returns NaN for them with a
``known`` mask, and :func:`score_candidates` raises :class:`UnknownItemsError` naming them unless
asked for NaNs.

Threads: FAISS uses OpenMP for its own searches. A threaded server should call
:func:`set_faiss_threads` (1) once at start-up so FAISS does not oversubscribe the cores that
its request threads already use. Scoring candidates here does not go through OpenMP.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import NamedTuple

import faiss
import numpy as np

from recsys.errors import DataContractError, NotFoundError, RecsysError


class UnknownItemsError(RecsysError):
    """Candidate ids that the model version's index does not hold."""

    exit_code = 6

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids)
        shown = ", ".join(str(int(i)) for i in self.ids[:10])
        more = f" and {len(self.ids) - 10} more" if len(self.ids) > 10 else ""
        super().__init__(f"{len(self.ids)} candidate item_id(s) not in the index: {shown}{more}")


class CandidateScores(NamedTuple):
    """Scores aligned with the candidate ids asked for; NaN where ``known`` is False."""

    scores: np.ndarray  # (n,) float32
    known: np.ndarray  # (n,) bool


def set_faiss_threads(n: int) -> None:
    """FAISS's OpenMP thread count for this process (1 inside a threaded server)."""
    if n < 1:
        raise ValueError(f"n={n}: FAISS needs at least one thread")
    faiss.omp_set_num_threads(int(n))


def _check_inputs(vectors: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vectors, ids = np.asarray(vectors), np.asarray(ids)
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise DataContractError(f"item vectors: expected a 2-d (n, dim) array, got shape {vectors.shape}")
    if ids.ndim != 1 or len(ids) != len(vectors):
        raise DataContractError(f"item ids: expected ({len(vectors)},) ids, got shape {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise DataContractError(f"item ids: expected integers, got {ids.dtype}")
    if len(np.unique(ids)) != len(ids):
        raise DataContractError("item ids: duplicates (each item needs one vector)")
    if not np.isfinite(vectors).all():
        raise DataContractError("item vectors: NaN or inf values")
    return np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64)


class ItemIndex:
    """One model version's item vectors in FAISS, with exact scoring of given candidate ids.

    Build with :meth:`build` (in memory) or :meth:`load` (from a file written by :meth:`save`).
    Read-only after construction, so one instance may serve many threads.
    """

    def __init__(self, index: "faiss.IndexIDMap2") -> None:
        if not isinstance(index, faiss.IndexIDMap2):
            raise DataContractError(f"expected a faiss.IndexIDMap2, got {type(index).__name__}")
        flat = faiss.downcast_index(index.index)
        if not isinstance(flat, faiss.IndexFlat) or flat.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise DataContractError(f"expected IndexIDMap2 over IndexFlatIP, got over {type(flat).__name__}")
        self.faiss_index = index
        self._flat = flat  # keep a reference: the view below points into its memory
        n, d = index.ntotal, index.d
        self.ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        self.vectors = (faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d) if n
                        else np.zeros((0, d), np.float32))
        if len(self.ids) < 2 or bool(np.all(self.ids[1:] > self.ids[:-1])):
            self._order, self._sorted = None, self.ids  # built here: rows already sorted by id
        else:
            self._order = np.argsort(self.ids, kind="stable")
            self._sorted = self.ids[self._order]

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray) -> "ItemIndex":
        """Index ``vectors`` (n, dim) under the external ``ids`` (n,)."""
        vectors, ids = _check_inputs(vectors, ids)
        order = np.argsort(ids, kind="stable")  # rows by id: see the module docstring (locality)
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
        if len(ids):
            index.add_with_ids(np.ascontiguousarray(vectors[order]), ids[order])
        return cls(index)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]  # not faiss_index.d: a SWIG attribute read costs ~1 us per request

    def __len__(self) -> int:
        return int(self.faiss_index.ntotal)

    # ---- files ----
    def save(self, path: Path) -> Path:
        """Write the index to ``path`` in FAISS's format, atomically (temp file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
        try:
            faiss.write_index(self.faiss_index, str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: Path) -> "ItemIndex":
        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"FAISS index not found: {path}")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise DataContractError(f"{path} is not a readable FAISS index: {exc}") from None
        # read_index already returns the concrete, owning wrapper; a downcast copy would not own
        # the memory (freed with the original)
        return cls(index)

    # ---- scoring ----
    def positions(self, item_ids: np.ndarray) -> np.ndarray:
        """Row of each id in the flat index, -1 for ids it does not hold."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if len(self._sorted) == 0:
            return np.full(len(item_ids), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted, item_ids), len(self._sorted) - 1)
        return np.where(self._sorted[at] == item_ids, at if self._order is None else self._order[at], -1)

    def score(self, user_vector: np.ndarray, item_ids: np.ndarray,
              positions: np.ndarray | None = None) -> CandidateScores:
        """Inner products of ``user_vector`` (dim,) with exactly ``item_ids``, in their order.
        ``positions``: ``self.positions(item_ids)``, when the caller has it already."""
        user_vector = np.asarray(user_vector, dtype=np.float32).reshape(-1)
        if user_vector.shape[0] != self.dim:
            raise DataContractError(f"user vector has {user_vector.shape[0]} dims, the index {self.dim}")
        pos = self.positions(item_ids) if positions is None else positions
        known = pos >= 0
        if known.all():
            return CandidateScores(np.take(self.vectors, pos, axis=0) @ user_vector, known)
        scores = np.full(len(pos), np.nan, dtype=np.float32)
        scores[known] = np.take(self.vectors, pos[known], axis=0) @ user_vector
        return CandidateScores(scores, known)


def score_candidates(index: ItemIndex, user_vector: np.ndarray, candidate_ids: np.ndarray,
                     *, unknown: str = "raise") -> np.ndarray:
    """(n,) float32 inner products of ``user_vector`` with each of ``candidate_ids``, in order.

    Cost O(n x dim) whatever the catalog size. ``unknown="raise"`` (default) raises
    :class:`UnknownItemsError` naming ids the index does not hold; ``unknown="nan"`` scores them
    NaN (the caller drops and reports them).
    """
    if unknown not in ("raise", "nan"):
        raise ValueError(f"unknown={unknown!r}: expected 'raise' or 'nan'")
    candidate_ids = np.asarray(candidate_ids, dtype=np.int64)
    result = index.score(user_vector, candidate_ids)
    if unknown == "raise" and not result.known.all():
        raise UnknownItemsError(candidate_ids[~result.known])
    return result.scores
