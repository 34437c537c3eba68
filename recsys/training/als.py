"""ALS (implicit feedback) over a confidence matrix, on ``implicit``'s CPU class.

The backend is chosen here, not from the hardware: always ``implicit.cpu.als.AlternatingLeastSquares``,
float32, seeded through ``random_state``. BLAS is pinned to one thread during the fit (implicit's
own advice, and a condition of bit-identical refits); the solver's ``num_threads`` only splits the
rows of each half-step, each row solved independently, so it does not change the result (tested).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.recommender_base import ModelFitError as ImplicitModelFitError
from threadpoolctl import threadpool_limits

from recsys.training.errors import ModelArtifactError, ModelFitError, TrainingDataError
from recsys.training.interactions import IdMap, InteractionMatrix, check_matrix
from recsys.training.model import Model
from recsys.training.params import ALSParams


def check_factors(user_factors: np.ndarray, item_factors: np.ndarray, factors: int | None = None) -> None:
    """Numerical checks of fitted factors: 2-d float32, finite, matching widths."""
    for name, f in (("user_factors", user_factors), ("item_factors", item_factors)):
        if f is None:
            raise ModelFitError(f"{name} missing: the model is not fitted")
        if f.ndim != 2 or f.dtype != np.float32:
            raise ModelFitError(f"{name}: expected a 2-d float32 array, got {f.ndim}-d {f.dtype}")
        if factors is not None and f.shape[1] != factors:
            raise ModelFitError(f"{name} has {f.shape[1]} columns, params say factors={factors}")
        bad = ~np.isfinite(f)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            raise ModelFitError(f"{name} has {int(bad.sum())} NaN/inf values in {len(rows)} rows "
                                f"(first row {int(rows[0])})")


class ALSModel(Model):
    """Implicit-feedback ALS: score(u, e) = <x_u, y_e>.

    Parameters
    ----------
    params : factors, regularization, alpha, iterations.
    seed : random_state of the factor initialisation.
    num_threads : solver threads (0 = all cores); the result does not depend on it.
    """

    kind = "als"

    def __init__(self, params: ALSParams = ALSParams(), seed: int = 0, num_threads: int = 1):
        self.hyper = params
        self.seed = int(seed)
        self.num_threads = int(num_threads)
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.users: IdMap | None = None
        self.entities: IdMap | None = None
        self._implicit: AlternatingLeastSquares | None = None

    # ---- fit ----
    def _new_implicit(self) -> AlternatingLeastSquares:
        p = self.hyper
        return AlternatingLeastSquares(factors=p.factors, regularization=p.regularization, alpha=p.alpha,
                                       dtype=np.float32, iterations=p.iterations,
                                       calculate_training_loss=False, num_threads=self.num_threads,
                                       random_state=self.seed)

    def fit(self, data: InteractionMatrix) -> ALSModel:
        """Factorise ``data.matrix`` (users x entities confidences, CSR float32)."""
        matrix = check_matrix(data.matrix, (len(data.users), len(data.entities)))
        if matrix.nnz == 0:
            raise TrainingDataError(f"{data.surface} matrix {matrix.shape} has no interactions to learn from")
        als = self._new_implicit()
        try:
            # overflow becomes NaN factors, reported below as a ModelFitError, not as a warning
            with threadpool_limits(limits=1, user_api="blas"), np.errstate(over="ignore", invalid="ignore"):
                als.fit(matrix, show_progress=False)
        except ImplicitModelFitError as exc:
            raise ModelFitError(f"ALS fit on {data.surface} {matrix.shape} diverged: {exc}") from None
        check_factors(als.user_factors, als.item_factors, self.hyper.factors)
        self._implicit = als
        self.user_factors, self.item_factors = als.user_factors, als.item_factors
        self.users, self.entities = data.users, data.entities
        return self

    def _fitted(self) -> AlternatingLeastSquares:
        if self._implicit is None:
            raise ModelFitError("ALSModel used before fit() or load()")
        return self._implicit

    # ---- scoring ----
    def user_vectors(self, user_ids) -> tuple[np.ndarray, np.ndarray]:
        """(U, f) user factors (zeros for unknown users) and the (U,) known mask."""
        self._fitted()
        idx = self.users.index(user_ids)
        known = idx >= 0
        return np.where(known[:, None], self.user_factors[np.maximum(idx, 0)], 0).astype(np.float32), known

    def entity_vectors(self, entity_ids) -> tuple[np.ndarray, np.ndarray]:
        self._fitted()
        idx = self.entities.index(entity_ids)
        known = idx >= 0
        return np.where(known[:, None], self.item_factors[np.maximum(idx, 0)], 0).astype(np.float32), known

    def score(self, user_ids, entity_ids) -> np.ndarray:
        """<x_u, y_e> per aligned pair; NaN where the user or the entity is not in the model."""
        x, ku = self.user_vectors(user_ids)
        y, ke = self.entity_vectors(entity_ids)
        out = np.einsum("nf,nf->n", x, y).astype(np.float32)
        out[~(ku & ke)] = np.nan
        return out

    def score_matrix(self, user_ids, entity_ids) -> np.ndarray:
        x, ku = self.user_vectors(user_ids)
        y, ke = self.entity_vectors(entity_ids)
        out = x @ y.T
        out[~ku, :] = np.nan
        out[:, ~ke] = np.nan
        return out

    def recalculate_user(self, user_items_row: sp.csr_matrix) -> np.ndarray:
        """Exact least-squares user vector for one row of confidences, item factors fixed.

        ``user_items_row``: a (1, n_entities) CSR float32 row in this model's entity index space
        (e.g. ``InteractionMatrix.rows([user_id])`` of the same id maps). Returns (factors,) float32.
        """
        return self.recalculate_users(user_items_row)[0]

    def recalculate_users(self, user_items: sp.csr_matrix) -> np.ndarray:
        """:meth:`recalculate_user` for a batch: (n, n_entities) rows -> (n, factors) float32, in
        one call of implicit's solver (and one BLAS thread-limit scope: taking it rescans every
        loaded library, which per user cost ~100x the solve)."""
        als = self._fitted()
        rows = check_matrix(user_items, (user_items.shape[0], len(self.entities)))
        with threadpool_limits(limits=1, user_api="blas"):
            return np.asarray(als.recalculate_user(np.arange(rows.shape[0]), rows), dtype=np.float32)

    # ---- artifacts ----
    def params(self) -> dict:
        return {**self.hyper.model_dump(), "seed": self.seed, "num_threads": self.num_threads}

    def arrays(self) -> dict[str, np.ndarray]:
        self._fitted()
        return {"user_factors": self.user_factors, "item_factors": self.item_factors,
                "user_ids": self.users.ids, "entity_ids": self.entities.ids}

    @classmethod
    def from_arrays(cls, params: dict, arrays: dict[str, np.ndarray]) -> ALSModel:
        missing = {"user_factors", "item_factors", "user_ids", "entity_ids"} - set(arrays)
        if missing:
            raise ModelArtifactError(f"ALS artifact lacks {sorted(missing)}")
        params = dict(params)
        model = cls(ALSParams(**{k: params.pop(k) for k in ALSParams.model_fields}), **params)
        uf, itf = arrays["user_factors"], arrays["item_factors"]
        check_factors(uf, itf, model.hyper.factors)
        users, entities = IdMap(arrays["user_ids"]), IdMap(arrays["entity_ids"])
        if len(users) != len(uf) or len(entities) != len(itf):
            raise ModelArtifactError(f"id maps ({len(users)} users, {len(entities)} entities) do not match "
                                     f"factors {uf.shape}, {itf.shape}")
        als = model._new_implicit()
        als.user_factors, als.item_factors = uf, itf
        model._implicit, model.user_factors, model.item_factors = als, uf, itf
        model.users, model.entities = users, entities
        return model


def shards(n: int, size: int) -> Iterator[slice]:
    """Contiguous partitions of range(n): the unit of work a distributed run would map."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def top_k(scorer, user_ids, entity_ids, k: int, shard_users: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Each user's k best entities among ``entity_ids``, computed shard by shard of users.

    Returns (U, k) entity ids and (U, k) scores, best first; NaN scores rank last. Each shard is independent: ``top_k_shard`` is the map step.
    """
    user_ids, entity_ids = np.asarray(user_ids), np.asarray(entity_ids)
    k = min(k, len(entity_ids))
    ids = np.empty((len(user_ids), k), dtype=entity_ids.dtype)
    scores = np.empty((len(user_ids), k), dtype=np.float32)
    for part in shards(len(user_ids), shard_users):
        ids[part], scores[part] = top_k_shard(scorer, user_ids[part], entity_ids, k)
    return ids, scores


def top_k_shard(scorer, user_ids, entity_ids, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = np.nan_to_num(np.asarray(scorer.score_matrix(user_ids, entity_ids), dtype=np.float32), nan=-np.inf)
    if k < s.shape[1]:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(s.shape[1]), (s.shape[0], 1))
    part_scores = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    best = np.take_along_axis(part, order, axis=1)
    return entity_ids[best], np.take_along_axis(s, best, axis=1)
