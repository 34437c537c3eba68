"""Validation of the estimators against the simulator's ground truth (docs/EVALUATION.md).

The simulator knows the true click probability of every (user, entry, position, time), so the
true CTR of any policy over the logged slots is exact (``GroundTruth.expected_reward``). This
module builds target policies over each request's *true candidates* (so that the logging
propensities apply to whatever the target shows), runs the estimators on the log, and puts each
estimate beside the truth of the same lists on the same slots.

Used by tests/integration/test_evaluation_truth.py (CI-sized) and benchmarks/bench_replay_truth.py
(the full run: coverage over 20 seeds and offline/online agreement).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.evaluation.columns import (
    ESTIMATOR_NAMES,
    POSITION,
    REQ_IDX,
    REQUEST_ID,
    EvalOptions,
    entity_column,
)
from recsys.evaluation.estimators import Estimate, estimate_all
from recsys.evaluation.logs import check_policy_lists, join_policy
from recsys.ranking.exploration import rank_within_groups
from recsys.simulation.truth import GroundTruth

# score(user_id, entity_id, ts_us) per candidate -> higher ranks first
CandidateScore = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def log_requests(log: pl.DataFrame) -> pl.DataFrame:
    """One row per request of a checked log: ``request_id, ts, user_id, restaurant_id``."""
    return (log.filter(pl.col(POSITION) == 0)
            .select(REQUEST_ID, "ts", "user_id", "restaurant_id"))


def candidate_lists(truth: GroundTruth, requests: pl.DataFrame, surface: str, slots: int,
                    score: CandidateScore) -> pl.DataFrame:
    """Lists ranking each request's true candidates by ``score`` (ties by id), first ``slots``.

    ``score`` sees the user, the candidate and the request time, so it can be personalised
    (a noisy oracle) or not (popularity, a random key).
    """
    user = requests["user_id"].to_numpy().astype(np.int64)
    ts = requests["ts"].dt.epoch("us").to_numpy()
    rest = requests["restaurant_id"].to_numpy().astype(np.int64) if surface == "menu" else None
    group, entity = truth.candidates(surface, user, ts, rest)
    rank = rank_within_groups(group, -score(user[group], entity, ts[group]), entity)
    keep = rank < slots
    return pl.DataFrame({REQUEST_ID: requests[REQUEST_ID].to_numpy()[group[keep]],
                         POSITION: rank[keep].astype(np.int16), entity_column(surface): entity[keep]})


def noisy_oracle_score(truth: GroundTruth, surface: str, noise_sd: float, seed: int) -> CandidateScore:
    """True attractiveness on the logit scale plus N(0, noise_sd) noise per candidate slot.

    noise_sd = 0 is the oracle; larger values degrade it smoothly towards random.
    """
    rng = np.random.default_rng(seed)

    def score(user: np.ndarray, entity: np.ndarray, ts: np.ndarray) -> np.ndarray:
        p = np.clip(truth.attractiveness(surface, user, entity, ts), 1e-9, 1 - 1e-9)
        return np.log(p / (1 - p)) + noise_sd * rng.standard_normal(len(entity))

    return score


def entity_score(scores: np.ndarray) -> CandidateScore:
    """A per-entity score (e.g. popularity counts), the same for every user and time."""
    return lambda user, entity, ts: scores[entity]


def random_score(seed: int) -> CandidateScore:
    """A uniformly random ranking of the candidates (one fixed draw: a deterministic policy)."""
    rng = np.random.default_rng(seed)
    return lambda user, entity, ts: rng.random(len(entity))


@dataclass(frozen=True)
class TruthCheck:
    """The estimates of one target policy on one log, beside its true CTR on the same slots."""

    truth: float  # true reward per logged slot of the target's lists
    estimates: dict[str, Estimate]
    slots: int

    def covered(self, estimator: str) -> bool:
        o = self.estimates[estimator].overall
        return bool(o.low <= self.truth <= o.high)

    def error(self, estimator: str) -> float:
        return self.estimates[estimator].overall.estimate - self.truth

    def row(self, estimator: str) -> dict:
        o = self.estimates[estimator].overall
        return {"estimate": o.estimate, "low": o.low, "high": o.high, "truth": self.truth,
                "error": o.estimate - self.truth, "covered": self.covered(estimator),
                "width": o.high - o.low, "matched": o.matched, "ess": o.ess}


def check_against_truth(
    truth: GroundTruth,
    log: pl.DataFrame,
    lists: pl.DataFrame,
    *,
    surface: str,
    options: EvalOptions,
    estimators: Sequence[str] = ESTIMATOR_NAMES,
) -> TruthCheck:
    """Estimate ``lists`` on ``log`` (from :func:`~recsys.evaluation.logs.load_log`) and compute
    its true reward over the same logged slots: the lists joined to the log on
    (request_id, position), so both sides cover exactly the slots the estimators see."""
    events = join_policy(log, check_policy_lists(lists, surface=surface), surface=surface)
    ent = entity_column(surface)
    slots = log.select(REQUEST_ID, POSITION).with_columns(pl.col(POSITION).cast(pl.Int16))
    on_log = lists.with_columns(pl.col(POSITION).cast(pl.Int16)).join(slots, on=[REQUEST_ID, POSITION])
    per_slot = truth.expected_reward_per_slot(on_log.select(REQUEST_ID, POSITION, ent),
                                              log_requests(log), surface, options.reward)
    # A logged slot the lists leave empty earns 0 (as the estimators count it).
    true_value = float(per_slot.sum() / log.height)
    return TruthCheck(truth=true_value, estimates=estimate_all(events, options, estimators), slots=log.height)


def subset_requests(log: pl.DataFrame, keep: pl.Expr) -> pl.DataFrame:
    """The rows of the requests for which the request-level expression ``keep`` holds, with
    ``req_idx`` renumbered 0..R'-1 (canonical order is kept: whole requests are dropped)."""
    kept = log.filter(keep)
    return kept.with_columns((pl.col(REQ_IDX).rank("dense") - 1).cast(pl.Int64).alias(REQ_IDX))
