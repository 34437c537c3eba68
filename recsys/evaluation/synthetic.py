"""Synthetic impressions logs with a known truth, for tests and benchmarks (no simulator needed).

Each request ranks ``slots`` distinct candidates out of ``n_entities``. The logging policy follows
the one exploration scheme: with probability ``epsilon`` a uniformly random permutation of the
candidates, otherwise the greedy ranking by a fixed logging score; the propensity of entry i at
position p is ``(1 - epsilon) * [greedy puts i at p] + epsilon / slots``. Clicks follow a
position-based model: ``P(click | entity e, position p) = examination[p] * attraction[e]``.
The target policy ranks the same candidates by ``target_score``; its true CTR is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import polars as pl


@dataclass(frozen=True)
class SyntheticLog:
    log: pl.DataFrame  # impressions contract, feed surface, request-contiguous
    target_lists: pl.DataFrame  # request_id, position, restaurant_id
    true_ctr: float  # the target's expected clicks per slot
    true_ctr_by_position: np.ndarray  # shape (slots,)
    logging_true_ctr: float  # the logging policy's expected clicks per slot


def synthetic_log(
    n_requests: int = 2000,
    *,
    slots: int = 5,
    n_entities: int = 30,
    epsilon: float = 0.2,
    seed: int = 0,
    string_ids: bool = False,
    chunk: int = 200_000,
) -> SyntheticLog:
    """A seeded synthetic log (``n_requests * slots`` rows) and a target policy with its truth."""
    rng = np.random.default_rng(seed)
    attraction = rng.uniform(0.05, 0.6, n_entities)
    examination = 1.0 / (1.0 + np.arange(slots)) ** 0.7
    logging_score = attraction + rng.normal(0, 0.25, n_entities)  # a noisy greedy ranker
    target_score = attraction + rng.normal(0, 0.05, n_entities)  # a better one
    parts, targets = [], []
    truth = np.zeros(slots)
    logging_truth = 0.0
    for start in range(0, n_requests, chunk):
        r = min(chunk, n_requests - start)
        cand = np.argpartition(rng.random((r, n_entities), dtype=np.float32), slots - 1, axis=1)[:, :slots]
        greedy = np.take_along_axis(cand, np.argsort(-logging_score[cand], axis=1, kind="stable"), 1)
        target = np.take_along_axis(cand, np.argsort(-target_score[cand], axis=1, kind="stable"), 1)
        explore = rng.random(r) < epsilon
        perm = np.argsort(rng.random((r, slots), dtype=np.float32), axis=1)
        shown = np.where(explore[:, None], np.take_along_axis(greedy, perm, 1), greedy)
        propensity = (1 - epsilon) * (shown == greedy) + epsilon / slots
        p_click = examination[None, :] * attraction[shown]
        clicked = rng.random((r, slots)) < p_click
        ordered = clicked & (rng.random((r, slots)) < 0.3)
        truth += (examination[None, :] * attraction[target]).sum(0)
        logging_truth += (examination[None, :] * ((1 - epsilon) * attraction[greedy]
                                                  + epsilon * attraction[cand].mean(1, keepdims=True))).sum()
        req = np.repeat(np.arange(start, start + r), slots)
        pos = np.tile(np.arange(slots, dtype=np.int16), r)
        parts.append(pl.DataFrame({
            "request_id": req, "user_id": req % max(1, n_requests // 4), "position": pos,
            "restaurant_id": shown.ravel().astype(np.int64), "propensity": propensity.ravel(),
            "clicked": clicked.ravel(), "ordered": ordered.ravel(),
        }))
        targets.append(pl.DataFrame({"request_id": req, "position": pos,
                                     "restaurant_id": target.ravel().astype(np.int64)}))
    t0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
    log = pl.concat(parts).with_columns(
        (pl.lit(t0) + pl.duration(seconds=pl.col("request_id") * 60)).dt.cast_time_unit("us").alias("ts"),
        pl.lit("feed").alias("surface"), pl.lit(None, pl.Int64).alias("item_id"),
        pl.lit("logging-eps").alias("policy"),
    )
    lists = pl.concat(targets)
    if string_ids:
        as_str = [pl.format("r{}", "request_id").alias("request_id"), pl.format("e{}", "restaurant_id").alias("restaurant_id")]
        log = log.with_columns(*as_str, pl.format("u{}", "user_id").alias("user_id"))
        lists = lists.with_columns(*as_str)
    order = ["request_id", "ts", "user_id", "surface", "restaurant_id", "item_id", "position",
             "propensity", "policy", "clicked", "ordered"]
    return SyntheticLog(
        log=log.select(order), target_lists=lists,
        true_ctr=float(truth.sum() / (n_requests * slots)),
        true_ctr_by_position=truth / n_requests,
        logging_true_ctr=float(logging_truth / (n_requests * slots)),
    )
