"""Hyperparameter search for ALS on a time-based validation split.

Train on the events before a cutoff, validate on the ``validation_days`` after it: recall@k and
NDCG@k of each held-out user's clicked entities. A seeded sample of the grid (or all of it);
each trial is a pure function of (split, params, seed), so trials could run in parallel.
The trials come back as plain dicts, to be saved with the model.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from recsys.training.als import ALSModel
from recsys.training.errors import TrainingDataError
from recsys.training.interactions import (
    ENTITY,
    InteractionMatrix,
    Surface,
    build_interactions,
)
from recsys.training.metrics import evaluate_ranking
from recsys.training.params import (
    ALSParams,
    ConfidenceWeights,
    SearchSpace,
    TrainingConfig,
)


@dataclass(frozen=True)
class Split:
    """Train (confidences before ``cutoff``) and validation (clicks in [cutoff, end)), same id maps."""

    train: InteractionMatrix
    valid: InteractionMatrix
    cutoff: datetime
    end: datetime


def time_split(impressions: pl.LazyFrame | pl.DataFrame, surface: Surface, validation_days: int,
               weights: ConfidenceWeights = ConfidenceWeights(), end: datetime | None = None,
               user_ids=None, entity_ids=None) -> Split:
    """Split the log at ``end - validation_days`` (end defaults to just after the last event)."""
    lf = impressions.lazy().filter(pl.col("surface") == surface)
    if end is None:
        last = lf.select(pl.col("ts").max()).collect().item()
        if last is None:
            raise TrainingDataError(f"no {surface} events in the impressions log")
        end = last + timedelta(microseconds=1)
    cutoff = end - timedelta(days=validation_days)
    window = lf.filter(pl.col("ts") < end)
    if user_ids is None or entity_ids is None:
        ids = window.select(pl.col("user_id").unique().implode(), pl.col(ENTITY[surface]).unique().implode()).collect()
        user_ids = ids["user_id"][0].to_numpy() if user_ids is None else user_ids
        entity_ids = ids[ENTITY[surface]][0].to_numpy() if entity_ids is None else entity_ids
    train = build_interactions(window, surface, weights, until=cutoff, user_ids=user_ids, entity_ids=entity_ids)
    valid = build_interactions(window, surface, ConfidenceWeights(click=1.0, order=0.0), since=cutoff,
                               user_ids=user_ids, entity_ids=entity_ids)
    if train.matrix.nnz == 0 or valid.matrix.nnz == 0:
        raise TrainingDataError(f"{surface} split at {cutoff}: {train.matrix.nnz} train and {valid.matrix.nnz} "
                                "validation interactions; need both > 0 (fewer validation_days?)")
    return Split(train, valid, cutoff, end)


def grid(space: SearchSpace, seed: int) -> list[ALSParams]:
    """The points to try: the whole grid, or ``space.trials`` of them drawn without replacement."""
    points = [ALSParams(factors=f, regularization=r, alpha=a, iterations=i)
              for f, r, a, i in itertools.product(space.factors, space.regularization, space.alpha, space.iterations)]
    if space.trials and space.trials < len(points):
        pick = np.sort(np.random.default_rng(seed).choice(len(points), space.trials, replace=False))
        points = [points[i] for i in pick]
    return points


def evaluate_params(split: Split, params: ALSParams, seed: int, k: int, num_threads: int = 1,
                    eval_users: int = 0, shard_users: int = 2048) -> dict:
    """One trial: fit on the split's train part, score the validation part."""
    started = time.perf_counter()
    model = ALSModel(params, seed=seed, num_threads=num_threads).fit(split.train)
    fit_seconds = time.perf_counter() - started
    metrics = evaluate_ranking(model, split.valid, k, entity_ids=split.train.entities.ids,
                               max_users=eval_users, seed=seed, shard_users=shard_users)
    return {**params.model_dump(), **metrics, "fit_seconds": round(fit_seconds, 4)}


@dataclass(frozen=True)
class SearchResult:
    best: ALSParams
    trials: list[dict]
    metric: str


def search(split: Split, space: SearchSpace, seed: int, k: int = 10, num_threads: int = 1,
           eval_users: int = 0, shard_users: int = 2048) -> SearchResult:
    """Try each grid point; the best has the highest NDCG@k (ties: recall@k, then grid order)."""
    trials = [evaluate_params(split, p, seed, k, num_threads, eval_users, shard_users) for p in grid(space, seed)]
    metric = f"ndcg@{k}"
    best = max(range(len(trials)), key=lambda i: (trials[i][metric], trials[i][f"recall@{k}"], -i))
    return SearchResult(ALSParams(**{f: trials[best][f] for f in ALSParams.model_fields}), trials, metric)


def search_surface(impressions: pl.LazyFrame | pl.DataFrame, surface: Surface, config: TrainingConfig,
                   seed: int, end: datetime | None = None, user_ids=None, entity_ids=None) -> SearchResult:
    """The search as the nightly job runs it: split by ``config.validation_days``, search ``config.search``."""
    split = time_split(impressions, surface, config.validation_days, config.weights, end, user_ids, entity_ids)
    return search(split, config.search, seed, config.k, config.num_threads, config.eval_users, config.shard_users)
