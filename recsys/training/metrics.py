"""Offline metrics: recall@k and NDCG@k on held-out interactions, and the TRUE CTR of a policy on
the simulator (ground truth), beside random, popularity and the oracle.

Ranking metrics are pure numpy, vectorised over users; relevance is binary (a held-out click).
Users without any held-out relevant entity are left out of the means.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.ranking.exploration import rank_within_groups
from recsys.simulation.calibration import ENTITY, popularity_scores, ranked_lists
from recsys.simulation.truth import GroundTruth, Surface
from recsys.training.als import shards, top_k
from recsys.training.errors import TrainingDataError
from recsys.training.interactions import IdMap, InteractionMatrix
from recsys.training.model import Scorer


def _hits(ranked: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """(U, k) bool: ranked[u, j] (an entity index, -1 = empty slot) is relevant to user u."""
    ranked = np.asarray(ranked, dtype=np.int64)
    if ranked.ndim != 2 or ranked.shape[0] != relevant.shape[0]:
        raise TrainingDataError(f"ranked {ranked.shape} must be (users={relevant.shape[0]}, k)")
    rows = np.repeat(np.arange(ranked.shape[0]), ranked.shape[1])
    cols = ranked.ravel()
    ok = cols >= 0
    coo = relevant.tocoo()
    positive = coo.data > 0
    width = np.int64(relevant.shape[1])
    rel_keys = coo.row[positive].astype(np.int64) * width + coo.col[positive]
    out = np.zeros(len(cols), dtype=bool)
    out[ok] = np.isin(rows[ok] * width + cols[ok], rel_keys)
    return out.reshape(ranked.shape)


def _n_relevant(relevant: sp.csr_matrix) -> np.ndarray:
    rel = relevant.copy()
    rel.data = (rel.data > 0).astype(np.float32)
    return np.asarray(rel.sum(axis=1)).ravel()


def recall_at_k(ranked: np.ndarray, relevant: sp.csr_matrix, k: int | None = None, per_user: bool = False):
    """Recall@k = |top-k ∩ relevant| / |relevant|, averaged over users with >= 1 relevant.

    Parameters
    ----------
    ranked : (U, K) entity indices, best first (-1 for an empty slot); only the first k are used.
    relevant : (U, E) sparse, > 0 where the entity is relevant to the user.
    """
    ranked = np.asarray(ranked)[:, :k] if k else np.asarray(ranked)
    hits = _hits(ranked, relevant).sum(axis=1)
    n = _n_relevant(relevant)
    users = n > 0
    values = hits[users] / n[users]
    return values if per_user else (float(values.mean()) if len(values) else float("nan"))


def ndcg_at_k(ranked: np.ndarray, relevant: sp.csr_matrix, k: int | None = None, per_user: bool = False):
    """NDCG@k with binary gains: DCG = sum_j hit_j / log2(j + 2); IDCG puts min(|rel|, k) hits first."""
    ranked = np.asarray(ranked)[:, :k] if k else np.asarray(ranked)
    width = ranked.shape[1]
    discount = 1.0 / np.log2(np.arange(width) + 2.0)
    dcg = (_hits(ranked, relevant) * discount).sum(axis=1)
    n = _n_relevant(relevant)
    ideal = np.r_[0.0, np.cumsum(discount)][np.minimum(n, width).astype(np.int64)]
    users = n > 0
    values = dcg[users] / ideal[users]
    return values if per_user else (float(values.mean()) if len(values) else float("nan"))


def evaluate_ranking(scorer: Scorer, heldout: InteractionMatrix, k: int, entity_ids=None,
                     max_users: int = 0, seed: int = 0, shard_users: int = 2048) -> dict:
    """recall@k and NDCG@k of a scorer ranking ``entity_ids`` (default: the held-out entities) for
    each held-out user (a seeded sample of ``max_users`` if > 0), shard by shard."""
    entities = IdMap.from_values(heldout.entities.ids if entity_ids is None else entity_ids)
    n_rel = _n_relevant(heldout.matrix)
    rows = np.flatnonzero(n_rel > 0)
    if max_users and len(rows) > max_users:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_users, replace=False))
    user_ids = heldout.users.ids[rows]
    relevant = heldout.rows(user_ids)
    # re-index the held-out columns into the ranked entity space (entities outside it cannot be hit)
    col_map = entities.index(heldout.entities.ids)
    coo = relevant.tocoo()
    keep = col_map[coo.col] >= 0
    rel = sp.csr_matrix((coo.data[keep], (coo.row[keep], col_map[coo.col[keep]])),
                        shape=(len(user_ids), len(entities)))
    # users whose relevant entities all fall outside the ranked set still count (recall 0)
    rel_full = _n_relevant(relevant)
    ids, _ = top_k(scorer, user_ids, entities.ids, k, shard_users)
    ranked = entities.index(ids.ravel()).reshape(ids.shape)
    hits = _hits(ranked, rel)
    discount = 1.0 / np.log2(np.arange(ranked.shape[1]) + 2.0)
    recall = hits.sum(axis=1) / rel_full
    ideal = np.r_[0.0, np.cumsum(discount)][np.minimum(rel_full, ranked.shape[1]).astype(np.int64)]
    ndcg = (hits * discount).sum(axis=1) / ideal
    return {"users": len(user_ids), "k": int(k), f"recall@{k}": float(recall.mean()) if len(recall) else float("nan"),
            f"ndcg@{k}": float(ndcg.mean()) if len(ndcg) else float("nan")}


# ---- true CTR on the simulator ----
def policy_lists(truth: GroundTruth, requests: pl.DataFrame, surface: Surface, slots: int, scorer: Scorer,
                 pair_chunk: int = 500_000) -> pl.DataFrame:
    """Lists of a scorer: each request's true candidates ranked by score(user, entity), best first
    (NaN last, ties by entity id). Same shape as :func:`recsys.simulation.calibration.ranked_lists`."""
    requests = requests.unique("request_id", keep="first", maintain_order=True)
    user = requests["user_id"].to_numpy()
    ts = requests["ts"].dt.epoch("us").to_numpy()
    rest = requests["restaurant_id"].to_numpy() if surface == "menu" else None
    group, entity = truth.candidates(surface, user, ts, rest)
    score = np.empty(len(entity), dtype=np.float64)
    for part in shards(len(entity), pair_chunk):  # bounded memory: scorers may gather factors per pair
        score[part] = scorer.score(user[group[part]], entity[part])
    score = np.nan_to_num(score, nan=-np.inf)
    rank = rank_within_groups(group, -score, entity)
    keep = rank < slots
    return pl.DataFrame({"request_id": requests["request_id"].to_numpy()[group[keep]],
                         "position": rank[keep].astype(np.int16), ENTITY[surface]: entity[keep]})


@dataclass(frozen=True)
class TrueCTR:
    """True CTR per shown slot (ground truth) of policies on one surface's requests."""

    surface: str
    requests: int
    random: float
    popularity: float
    oracle: float
    policies: dict[str, float] = field(default_factory=dict)

    def gap_closed(self, name: str) -> float:
        """(policy - popularity) / (oracle - popularity): share of popularity's gap to the oracle."""
        return (self.policies[name] - self.popularity) / (self.oracle - self.popularity)

    def as_dict(self) -> dict:
        return {**asdict(self), "gap_closed": {n: self.gap_closed(n) for n in self.policies}}


def true_ctr_report(truth: GroundTruth, history: pl.DataFrame, requests: pl.DataFrame, surface: Surface,
                    slots: int, scorers: dict[str, Scorer]) -> TrueCTR:
    """True CTR of each scorer's lists on ``requests``, with random, popularity (click counts of
    ``history``, as in calibration) and the oracle beside them.

    requests : request_id, ts, user_id, restaurant_id (the held-out requests of ``surface``).
    """
    requests = requests.unique("request_id", keep="first", maintain_order=True)
    n_entities = truth.world.n_restaurants if surface == "feed" else truth.world.n_items
    pop = ranked_lists(truth, requests, surface, slots, popularity_scores(history, surface, n_entities))
    return TrueCTR(
        surface=surface,
        requests=requests.height,
        random=truth.random_reward(requests, surface, slots),
        popularity=truth.expected_reward(pop, requests, surface),
        oracle=truth.expected_reward(truth.oracle_lists(requests, surface, slots), requests, surface),
        policies={name: truth.expected_reward(policy_lists(truth, requests, surface, slots, s), requests, surface)
                  for name, s in scorers.items()},
    )
