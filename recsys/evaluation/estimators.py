"""Off-policy estimators of a target policy's reward per shown slot, per position and overall.

Every estimator has one signature, ``estimator(events, options) -> Estimate``, where ``events``
is a log joined to the target's lists (:func:`recsys.evaluation.logs.join_policy`). With, for a
logged slot at position p of request r: reward y, logging propensity mu, match m (the target puts
the logged entry at p), target probability pi of it (1 for a deterministic policy), weight
``w = m * pi / mu`` (optionally capped at ``clip``):

- naive : sum y / slots (the logged CTR, ignores the target; a reference and negative control)
- replay: sum m*y / sum m (Li et al. 2011; unbiased when the match is independent of the reward,
  e.g. uniform logging; biased under greedy logging)
- ips   : sum w*y / slots (unbiased when mu > 0 wherever the target puts an entry)
- snips : sum w*y / sum w (self-normalised: a little biased, much less variance)
- dr    : sum [q + w*(y - q)] / slots, q the reward model's prediction for the target's entry
  (Dudik et al. 2011): unbiased if either mu or q is right.

The overall number is the mean over shown slots. For ips, dr and naive it is the ratio of the
overall sums; replay and snips normalise per position, so their overall is the slot-weighted mean
of the per-position estimates (over positions with a matched event).

The reward model of dr is a position-based model fitted on the log, cross-fitted over two folds
of requests (each fold predicted by the model of the other): ``q(p, e) = ctr[p] * lift[e]``
with ``ctr[p]`` the logged CTR at position p and ``lift[e] = (clicks_e + k) / (expected_e + k)``,
``expected_e`` the sum of ``ctr[p]`` over e's logged slots and k = ``options.prior_strength``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import polars as pl

from recsys.evaluation.bootstrap import bootstrap_sums, percentile_interval
from recsys.evaluation.columns import (
    ENTITY, ESTIMATOR_NAMES, MATCH, POLICY_ENTITY, POLICY_PROPENSITY, POSITION, PROPENSITY, REQ_IDX,
    EvalOptions,
)

# Slot quantities, summed per request and position: the columns of the per-request matrix.
N, Y, M, MY, W, WY, DR, W2 = range(8)
N_QUANTITIES = 8


@dataclass(frozen=True)
class Stat:
    """One estimate: a position (``label``) or ``overall``."""

    label: str
    estimate: float
    low: float
    high: float
    matched: int
    ess: float
    slots: int
    warning: bool


@dataclass(frozen=True)
class Estimate:
    estimator: str
    overall: Stat
    positions: tuple[Stat, ...]
    reward: str
    clip: float | None
    n_bootstrap: int

    def to_dict(self) -> dict:
        return {
            "estimator": self.estimator, "reward": self.reward, "clip": self.clip,
            "n_bootstrap": self.n_bootstrap, "overall": asdict(self.overall),
            "positions": [asdict(s) for s in self.positions],
        }


@dataclass(frozen=True)
class SlotMatrix:
    """Per-request, per-position sums of the slot quantities of one (log, policy) pair."""

    per_request: np.ndarray | None  # (R, P * N_QUANTITIES) float32, None without bootstrap
    sums: np.ndarray  # (P, N_QUANTITIES) float64
    labels: tuple[str, ...]  # position bucket labels, length P


def reward_model(events: pl.DataFrame, options: EvalOptions) -> np.ndarray:
    """Cross-fitted predictions q of the target's entry's reward at every logged slot.

    q = CTR of the position in the other fold x the entry's smoothed lift in the other fold (its
    clicks over the clicks expected at the positions it was shown). Integer ids of a moderate range
    take a np.bincount path (no hash joins over every slot); other ids the polars joins below.
    """
    fast = _reward_model_integer_ids(events, options)
    if fast is not None:
        return fast
    y = pl.col(options.reward).cast(pl.Float64)
    k = options.prior_strength
    frame = events.select(REQ_IDX, POSITION, ENTITY, POLICY_ENTITY, y.alias("_y")).with_columns(
        (pl.col(REQ_IDX) % 2).cast(pl.Int8).alias("_fold")
    )
    base = frame["_y"].mean() or 0.0
    pos_ctr = frame.group_by("_fold", POSITION).agg(
        ((pl.col("_y").sum() + k * base) / (pl.len() + k)).alias("_ctr")
    )
    frame = frame.join(pos_ctr, on=["_fold", POSITION], how="left", maintain_order="left")
    lift = frame.group_by("_fold", ENTITY).agg(
        ((pl.col("_y").sum() + k) / (pl.col("_ctr").sum() + k)).alias("_lift")
    ).select((1 - pl.col("_fold")).cast(pl.Int8).alias("_fold"), pl.col(ENTITY).alias(POLICY_ENTITY), "_lift")
    other_ctr = pos_ctr.select((1 - pl.col("_fold")).cast(pl.Int8).alias("_fold"), POSITION,
                               pl.col("_ctr").alias("_octr"))
    q = (
        frame.join(other_ctr, on=["_fold", POSITION], how="left", maintain_order="left")
        .join(lift, on=["_fold", POLICY_ENTITY], how="left", maintain_order="left")
        .select(
            pl.when(pl.col(POLICY_ENTITY).is_null()).then(0.0)
            .otherwise(pl.col("_octr").fill_null(base) * pl.col("_lift").fill_null(1.0))
            .clip(0.0, 1.0)
        )
        .to_series()
    )
    return q.to_numpy()


_MAX_DENSE_ID = 50_000_000  # ids up to this use arrays indexed by id


def _reward_model_integer_ids(events: pl.DataFrame, options: EvalOptions) -> np.ndarray | None:
    """:func:`reward_model` for integer ids in [0, _MAX_DENSE_ID]; None for any other ids."""
    if not (events[ENTITY].dtype.is_integer() and events[POLICY_ENTITY].dtype.is_integer()):
        return None
    entity = events[ENTITY].to_numpy()
    target_col = events[POLICY_ENTITY]
    has_target = target_col.is_not_null().to_numpy()
    target = target_col.fill_null(0).to_numpy()
    n = events.height
    if n == 0 or min(entity.min(), target.min()) < 0 or max(entity.max(), target.max()) > _MAX_DENSE_ID:
        return None
    k = options.prior_strength
    y = events[options.reward].cast(pl.Float64).to_numpy()
    fold = (events[REQ_IDX].to_numpy() % 2).astype(np.int64)
    position = events[POSITION].to_numpy().astype(np.int64)
    base = float(y.mean())
    n_pos = int(position.max()) + 1
    width = int(max(entity.max(), target.max())) + 1
    slot = fold * n_pos + position
    pos_ctr = ((np.bincount(slot, weights=y, minlength=2 * n_pos) + k * base)
               / (np.bincount(slot, minlength=2 * n_pos) + k))
    cell = fold * width + entity.astype(np.int64)
    lift = ((np.bincount(cell, weights=y, minlength=2 * width) + k)
            / (np.bincount(cell, weights=pos_ctr[slot], minlength=2 * width) + k))
    other = 1 - fold
    q = pos_ctr[other * n_pos + position] * lift[other * width + target.astype(np.int64)]
    return np.where(has_target, np.clip(q, 0.0, 1.0), 0.0)


def _position_buckets(position: np.ndarray, max_positions: int) -> tuple[np.ndarray, tuple[str, ...]]:
    top = int(position.max()) if position.size else 0
    n = min(top + 1, max_positions)
    labels = tuple(str(p) for p in range(n))
    if top + 1 > max_positions:
        labels = labels[:-1] + (f"{max_positions - 1}+",)
    return np.minimum(position, n - 1).astype(np.int64), labels


def slot_matrix(
    events: pl.DataFrame, options: EvalOptions, *, with_dr: bool = True, per_request: bool = True,
    n_requests: int | None = None,
) -> SlotMatrix:
    """Sum the slot quantities per position (and per request, for the bootstrap).

    ``n_requests`` fixes R when ``events`` is a subset of a log (default: max req_idx + 1).
    """
    y = events[options.reward].cast(pl.Float64).to_numpy()
    m = events[MATCH].cast(pl.Float64).to_numpy()
    w = m * events[POLICY_PROPENSITY].to_numpy() / events[PROPENSITY].to_numpy()
    if options.clip is not None:
        w = np.minimum(w, options.clip)
    dr = np.zeros_like(y)
    if with_dr:
        q = reward_model(events, options)
        dr = q + w * (y - q)
    pos, labels = _position_buckets(events[POSITION].to_numpy(), options.max_positions)
    n_pos = len(labels)
    quantities = (np.ones_like(y), y, m, m * y, w, w * y, dr, w * w)
    sums = np.stack([np.bincount(pos, weights=v, minlength=n_pos) for v in quantities], axis=1)
    matrix = None
    if per_request:
        n_req = n_requests if n_requests is not None else int(events[REQ_IDX].max()) + 1
        cell = events[REQ_IDX].to_numpy() * n_pos + pos
        matrix = np.empty((n_req, n_pos, N_QUANTITIES), dtype=np.float32)
        for j, v in enumerate(quantities):
            matrix[:, :, j] = np.bincount(cell, weights=v, minlength=n_req * n_pos).reshape(n_req, n_pos)
        matrix = matrix.reshape(n_req, n_pos * N_QUANTITIES)
    return SlotMatrix(per_request=matrix, sums=sums, labels=labels)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def estimates_from_sums(name: str, sums: np.ndarray) -> np.ndarray:
    """Estimator ``name`` from sums of shape (..., P, N_QUANTITIES): (..., P + 1), overall last."""
    s = sums
    slots = s[..., N]
    if name in ("naive", "ips", "dr"):
        num = {"naive": Y, "ips": WY, "dr": DR}[name]
        per_pos = _ratio(s[..., num], slots)
        overall = _ratio(s[..., num].sum(-1), slots.sum(-1))
    elif name in ("replay", "snips"):
        num, den = (MY, M) if name == "replay" else (WY, W)
        per_pos = _ratio(s[..., num], s[..., den])
        ok = ~np.isnan(per_pos)
        overall = _ratio(np.where(ok, per_pos * slots, 0.0).sum(-1), np.where(ok, slots, 0.0).sum(-1))
    else:
        raise ValueError(f"unknown estimator {name!r}; expected one of {ESTIMATOR_NAMES}")
    return np.concatenate([per_pos, overall[..., None]], axis=-1)


def _ess(name: str, sums: np.ndarray) -> np.ndarray:
    if name == "naive":
        ess = sums[:, N]
    elif name == "replay":
        ess = sums[:, M]
    else:
        ess = _ratio(sums[:, W] ** 2, sums[:, W2])
        overall = _ratio(sums[:, W].sum() ** 2, sums[:, W2].sum())
        return np.nan_to_num(np.append(ess, overall))
    return np.append(ess, ess.sum())


def summarise(
    name: str, matrix: SlotMatrix, boot: np.ndarray | None, options: EvalOptions,
) -> Estimate:
    """Point estimate, interval, matched events, ESS and warning per position and overall."""
    point = estimates_from_sums(name, matrix.sums)
    if boot is not None and boot.shape[0] > 0:
        resampled = estimates_from_sums(name, boot.reshape(boot.shape[0], len(matrix.labels), N_QUANTITIES))
        low, high = percentile_interval(resampled)
    else:
        low = high = np.full_like(point, np.nan)
    matched_col = N if name == "naive" else M
    matched = np.append(matrix.sums[:, matched_col], matrix.sums[:, matched_col].sum())
    slots = np.append(matrix.sums[:, N], matrix.sums[:, N].sum())
    ess = _ess(name, matrix.sums)
    stats = [
        Stat(label=label, estimate=float(point[i]), low=float(low[i]), high=float(high[i]),
             matched=int(round(matched[i])), ess=float(ess[i]), slots=int(round(slots[i])),
             warning=bool(matched[i] < options.min_matched or ess[i] < options.min_ess or np.isnan(point[i])))
        for i, label in enumerate((*matrix.labels, "overall"))
    ]
    return Estimate(estimator=name, overall=stats[-1], positions=tuple(stats[:-1]), reward=options.reward,
                    clip=options.clip, n_bootstrap=options.n_bootstrap if boot is not None else 0)


def estimate_all(
    events: pl.DataFrame,
    options: EvalOptions = EvalOptions(),
    estimators: Sequence[str] = ESTIMATOR_NAMES,
) -> dict[str, Estimate]:
    """Every estimator in ``estimators`` from one pass and one shared bootstrap."""
    unknown = [e for e in estimators if e not in ESTIMATOR_NAMES]
    if unknown:
        raise ValueError(f"unknown estimator(s) {unknown}; expected some of {ESTIMATOR_NAMES}")
    boot_on = options.n_bootstrap > 0
    matrix = slot_matrix(events, options, with_dr="dr" in estimators, per_request=boot_on)
    boot = None
    if boot_on:
        (boot,) = bootstrap_sums([matrix.per_request], n_resamples=options.n_bootstrap, seed=options.seed,
                                 chunk_elements=options.chunk_elements)
    return {name: summarise(name, matrix, boot, options) for name in estimators}


def naive(events: pl.DataFrame, options: EvalOptions = EvalOptions()) -> Estimate:
    """The logged CTR (mean reward per shown slot), whatever the target: the negative control."""
    return estimate_all(events, options, ("naive",))["naive"]


def replay(events: pl.DataFrame, options: EvalOptions = EvalOptions()) -> Estimate:
    """Li et al. (2011): mean reward over slots whose logged entry is the target's."""
    return estimate_all(events, options, ("replay",))["replay"]


def ips(events: pl.DataFrame, options: EvalOptions = EvalOptions()) -> Estimate:
    """Inverse propensity scoring: sum of w * reward over the number of logged slots."""
    return estimate_all(events, options, ("ips",))["ips"]


def snips(events: pl.DataFrame, options: EvalOptions = EvalOptions()) -> Estimate:
    """Self-normalised IPS: sum of w * reward over sum of w, per position."""
    return estimate_all(events, options, ("snips",))["snips"]


def doubly_robust(events: pl.DataFrame, options: EvalOptions = EvalOptions()) -> Estimate:
    """Doubly robust: the reward model's prediction, corrected by the weighted residual."""
    return estimate_all(events, options, ("dr",))["dr"]
