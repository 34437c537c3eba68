"""The one exploration scheme of the system (DESIGN.md, "Exploration and propensities").

With probability ``epsilon`` a request shows a uniformly random permutation of its ``n``
candidates, otherwise the greedy ranking. The logging probability of entry ``i`` at position
``p`` is then::

    propensity = (1 - epsilon) * [greedy puts i at p] + epsilon / n

The simulator's logging policy and the server call the same functions, so both log exact
propensities. Everything works on *ragged groups*: candidates of many requests laid end to end,
``group`` giving each candidate's request index (0..n_groups-1), so a batch of requests is ranked
with two sorts and no Python loop per request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ranked:
    """Per-candidate ranking outcome, aligned with the input candidates.

    Attributes
    ----------
    greedy_rank : (N,) int32, the candidate's position in its group's greedy ranking.
    shown_rank : (N,) int32, the position actually shown (== greedy_rank unless explored).
    group_size : (N,) int32, n: the number of candidates in the candidate's group.
    explored : (N,) bool, whether the candidate's request explored.
    """

    greedy_rank: np.ndarray
    shown_rank: np.ndarray
    group_size: np.ndarray
    explored: np.ndarray

    def propensity(self, epsilon: float) -> np.ndarray:
        return propensity(self.greedy_rank, self.shown_rank, self.group_size, epsilon)


def propensity(greedy_rank: np.ndarray, shown_rank: np.ndarray, n: np.ndarray, epsilon: float) -> np.ndarray:
    """Logging probability of each entry at the position it was shown."""
    greedy_here = (greedy_rank == shown_rank).astype(np.float64)
    return (1.0 - epsilon) * greedy_here + epsilon / n.astype(np.float64)


def rank_within_groups(group: np.ndarray, key: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """0-based rank of each element within its group, ascending by ``key`` then ``tiebreak``.

    ``group`` must be non-decreasing (candidates of one request contiguous).
    """
    n = len(group)
    if n == 0:
        return np.empty(0, dtype=np.int32)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    sizes = np.diff(np.r_[starts, n])
    within = np.arange(n) - np.repeat(starts, sizes)
    row = np.repeat(np.arange(len(starts)), sizes)
    width = int(sizes.max())
    ordered_ties = np.all((np.diff(tiebreak) >= 0) | (np.diff(group) != 0))
    if ordered_ties and len(starts) * width <= 4 * n:
        # Fast path (3-4x np.lexsort here): ties already in tiebreak order inside each group, so
        # a stable sort of each row of a padded (groups x width) matrix ranks by (key, tiebreak).
        padded = np.full((len(starts), width), np.inf)
        padded[row, within] = key
        order = np.argsort(padded, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.broadcast_to(np.arange(width), order.shape), axis=1)
        return ranks[row, within].astype(np.int32)
    order = np.lexsort((tiebreak, key, group))
    rank = np.empty(n, dtype=np.int32)
    rank[order] = np.arange(n) - np.repeat(starts, sizes)
    return rank


def explore_rank(
    group: np.ndarray,
    greedy_score: np.ndarray,
    entity_id: np.ndarray,
    explore: np.ndarray,
    rng: np.random.Generator,
) -> Ranked:
    """Rank ragged groups greedily (descending score, ties by ascending id), or at random
    for the groups whose ``explore`` flag is set.

    Parameters
    ----------
    group : (N,) int, non-decreasing request index of each candidate.
    greedy_score : (N,) float, higher is better.
    entity_id : (N,) int, tie-break so greedy ranking is deterministic.
    explore : (n_groups,) bool, whether each request explores.
    rng : source of the random permutations.
    """
    if len(group) and np.any(np.diff(group) < 0):
        raise ValueError("group must be non-decreasing (each request's candidates contiguous)")
    greedy_rank = rank_within_groups(group, -np.asarray(greedy_score, dtype=np.float64), entity_id)
    explored = explore[group]
    # Explored groups sort by a uniform key: a uniformly random permutation of the group.
    random_key = rng.random(len(group))
    shown_key = np.where(explored, random_key, greedy_rank.astype(np.float64))
    shown_rank = rank_within_groups(group, shown_key, entity_id)
    sizes = np.bincount(group, minlength=len(explore)).astype(np.int32)
    return Ranked(greedy_rank, shown_rank, sizes[group], explored)


class RequestDraws:
    """The random draws of one request, seeded by (seed, request id), so a request can be replayed.

    Why not ``np.random.default_rng([seed, id])``: building a Generator costs ~60 us, a large share
    of a request's ranking time, while 1 - epsilon of the requests need only the one uniform draw
    that decides whether to explore. That draw is taken from the hash of (seed, request id) itself;
    the Generator (seeded by the hash's other half) is built only when a permutation is drawn.
    """

    __slots__ = ("_uniform", "_seed")

    def __init__(self, seed: int, request_id: str):
        digest = hashlib.blake2b(f"{seed}:{request_id}".encode(), digest_size=16).digest()
        self._uniform = (int.from_bytes(digest[:8], "little") >> 11) * 2.0**-53  # 53 bits, in [0, 1)
        self._seed = int.from_bytes(digest[8:], "little")

    def random(self) -> float:
        """The request's uniform draw in [0, 1) (the same value on every call)."""
        return self._uniform

    def permutation(self, n: int) -> np.ndarray:
        return np.random.default_rng(self._seed).permutation(n)


@dataclass(frozen=True)
class Shown:
    """The first k entries one request shows, in position order (entry j is at position j).

    index : (m,) the entries' indices among the request's candidates.
    greedy_rank : (m,) each entry's position in the greedy ranking.
    propensity : (m,) each entry's logging probability at its position.
    explored : whether the request showed a random permutation.
    """

    index: np.ndarray
    greedy_rank: np.ndarray
    propensity: np.ndarray
    explored: bool


def explore_top(score: np.ndarray, entity_id: np.ndarray, epsilon: float,
                rng: np.random.Generator | RequestDraws, k: int) -> Shown:
    """The scheme of :func:`explore_rank` for ONE request, computed for the k entries it shows.

    Greedy = descending ``score``, ties by ascending ``entity_id``; with probability ``epsilon``
    (one ``rng.random()`` draw) the shown order is ``rng.permutation(n)`` (candidate i at position
    ``permutation[i]``) instead. Why not :func:`explore_rank` on one group: serving needs k
    entries, not n ranks, and the greedy case (1 - epsilon of the requests) is one sort; the
    ragged-group machinery costs ~10x more for one request.
    """
    score = np.asarray(score, dtype=np.float64)
    n = len(score)
    explored = bool(rng.random() < epsilon)
    order = np.lexsort((np.asarray(entity_id), -score))  # the candidate at each greedy position
    if not explored:
        index = order[:k]
        greedy = np.arange(len(index))
    else:
        index = np.argsort(rng.permutation(n), kind="stable")[:k]
        greedy_rank = np.empty(n, dtype=np.int64)
        greedy_rank[order] = np.arange(n)
        greedy = greedy_rank[index]
    prop = (1.0 - epsilon) * (greedy == np.arange(len(index))) + epsilon / max(n, 1)
    return Shown(index, greedy, prop, explored)
