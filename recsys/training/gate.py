"""The quality gate: a candidate model serves only if it passes every check.

* numerical: every factor matrix is finite, not all zero, and its row norms are sane;
* freshness: it was trained on data at least as new as the serving model's;
* baseline: it beats the popularity baseline on held-out recall@k, on each surface;
* no regression: its recall@k is not below the serving model's by more than ``tolerance``
  overall, nor by more than ``slice_tolerance`` on any important slice (new users, each cuisine,
  each cell band) with enough users on both sides.

Metrics come from :func:`slice_recall` on the candidate's held-out window; the serving model's are
the ones recorded in its registry metadata when it was gated. Everything here is a pure function
of its inputs, so each refusal is testable and explained: a refused model is kept in the
registry with the report, never served.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Mapping

import numpy as np
import scipy.sparse as sp

from recsys.config import GateConfig
from recsys.training.als import top_k
from recsys.training.interactions import IdMap, InteractionMatrix
from recsys.training.model import Scorer

OVERALL = "overall"


@dataclass(frozen=True)
class GateCheck:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateReport:
    checks: tuple[GateCheck, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "checks": [asdict(c) for c in self.checks]}

    def summary(self) -> str:
        if self.passed:
            return f"passed {len(self.checks)} checks"
        return "refused: " + "; ".join(self.reasons)


def slice_recall(scorer: Scorer, heldout: InteractionMatrix, k: int, candidates,
                 user_slices: Mapping[str, np.ndarray], entity_slices: Mapping[str, np.ndarray],
                 shard_users: int = 2048) -> dict[str, dict[str, float]]:
    """recall@k overall and per slice, with the number of users behind each value.

    user_slices: name -> bool mask over ``heldout.users.ids`` (e.g. new users, a cell band).
    entity_slices: name -> bool mask over ``heldout.entities.ids`` (e.g. a cuisine): recall of the
    relevant entities in that slice, over users with at least one of them.
    """
    entities = IdMap.from_values(candidates)
    relevant_all = heldout.matrix.copy()
    relevant_all.data = (relevant_all.data > 0).astype(np.float32)
    rows = np.flatnonzero(np.asarray(relevant_all.sum(axis=1)).ravel() > 0)
    user_ids = heldout.users.ids[rows]
    relevant = relevant_all[rows]
    ids, _ = top_k(scorer, user_ids, entities.ids, k, shard_users)
    # top-k as a sparse (users x held-out entities) indicator, to intersect with relevance
    cols = heldout.entities.index(ids.ravel())
    r = np.repeat(np.arange(len(user_ids)), ids.shape[1])
    ok = cols >= 0
    shown = sp.csr_matrix((np.ones(ok.sum(), np.float32), (r[ok], cols[ok])), shape=relevant.shape)
    hits = relevant.multiply(shown).tocsr()

    def recall(user_mask: np.ndarray, entity_mask: np.ndarray | None) -> dict[str, float]:
        rel, hit = relevant[user_mask], hits[user_mask]
        if entity_mask is not None:
            rel, hit = rel[:, entity_mask], hit[:, entity_mask]
        n_rel = np.asarray(rel.sum(axis=1)).ravel()
        n_hit = np.asarray(hit.sum(axis=1)).ravel()
        users = n_rel > 0
        value = float((n_hit[users] / n_rel[users]).mean()) if users.any() else float("nan")
        return {"recall": value, "users": int(users.sum())}

    everyone = np.ones(len(rows), dtype=bool)
    out = {OVERALL: recall(everyone, None)}
    for name, mask in user_slices.items():
        out[name] = recall(np.asarray(mask)[rows], None)
    for name, mask in entity_slices.items():
        out[name] = recall(everyone, np.asarray(mask))
    return out


def _numerical_checks(factors: Mapping[str, np.ndarray], cfg: GateConfig) -> list[GateCheck]:
    checks = []
    for name, matrix in factors.items():
        matrix = np.asarray(matrix)
        bad = int((~np.isfinite(matrix)).sum())
        if bad:
            rows = np.flatnonzero(~np.isfinite(matrix).all(axis=1))[:5].tolist()
            checks.append(GateCheck(f"numerical:{name}", False, f"{bad} NaN/inf values (rows {rows})"))
            continue
        norms = np.linalg.norm(matrix, axis=1)
        if not norms.any():
            checks.append(GateCheck(f"numerical:{name}", False, "all factors are zero"))
        elif norms.max() > cfg.max_factor_norm:
            checks.append(GateCheck(f"numerical:{name}", False,
                                    f"max row norm {norms.max():.3g} > {cfg.max_factor_norm:g}"))
        else:
            checks.append(GateCheck(f"numerical:{name}", True, f"finite, max row norm {norms.max():.3g}"))
    return checks


def run_gate(
    candidate: Mapping[str, Mapping[str, Mapping[str, float]]],
    popularity: Mapping[str, Mapping[str, float]],
    factors: Mapping[str, np.ndarray],
    trained_until: datetime,
    cfg: GateConfig,
    serving: Mapping[str, Any] | None = None,
) -> GateReport:
    """Decide whether a candidate may serve.

    candidate: surface -> slice -> {"recall", "users"} (from :func:`slice_recall`).
    popularity: surface -> {"recall", "users"} overall, of the popularity baseline, same window.
    serving: the serving model's {"version", "trained_until", "metrics": like candidate} or None.
    """
    checks = _numerical_checks(factors, cfg)
    if serving is not None:
        served_until = datetime.fromisoformat(str(serving["trained_until"]))
        checks.append(GateCheck(
            "freshness", trained_until >= served_until,
            f"trained until {trained_until.isoformat()}, serving model {serving['version']} until "
            f"{served_until.isoformat()}" + ("" if trained_until >= served_until else ": older data than the serving model")))
    for surface, slices in candidate.items():
        mine = slices[OVERALL]["recall"]
        pop = popularity[surface]["recall"]
        checks.append(GateCheck(f"beats_popularity:{surface}", bool(mine > pop),
                                f"recall@{cfg.k} {mine:.4f} vs popularity {pop:.4f}"))
        if serving is None:
            continue
        theirs_all = serving["metrics"].get(surface, {})
        for name, value in slices.items():
            theirs = theirs_all.get(name)
            if theirs is None:
                continue
            tolerance = cfg.tolerance if name == OVERALL else cfg.slice_tolerance
            if name != OVERALL and min(value["users"], theirs["users"]) < cfg.min_slice_users:
                continue
            floor = theirs["recall"] * (1 - tolerance)
            passed = not (value["recall"] < floor)
            checks.append(GateCheck(
                f"no_regression:{surface}:{name}", passed,
                f"recall@{cfg.k} {value['recall']:.4f} vs serving {theirs['recall']:.4f} "
                f"(floor {floor:.4f} at {tolerance:.0%} tolerance, {value['users']} users)"))
    return GateReport(tuple(checks))
