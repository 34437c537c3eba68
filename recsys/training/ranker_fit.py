"""Fit the menu ranker, evaluate it against ALS-only, decide whether it ships.

:func:`train_ranker` is what the nightly pipeline calls::

    ALS on [start, t1) --score--> ranker rows of [t1, t2) --fit--> LinearRanker
    serving ALS on [start, t2) --> held-out rows of [t2, end) --> ranker vs ALS-only --> ships?

Position (examination) bias. Training: the logged position is a feature (one-hot 1..7, position 0
the reference), fixed at 0 at serving, so the other weights are learned net of where the legacy
policy put an item. Evaluation: only held-out requests that EXPLORED (a uniformly random
permutation, detected exactly from the logged propensities) are used to compare rankings: there
the position is independent of the item, so a policy that puts the clicked items higher is better
without any correction, and with none of the variance of IPS weights. Metrics per request over
the shown items, averaged over requests with a click and a non-click: AUC (clicked above
non-clicked) and NDCG of the clicks.

Ship rule: the ranker ships only if its held-out AUC beats ALS-only's by more than
``min_auc_lift``; when a ground truth is given (the simulator), also only if its true CTR on the
held-out requests beats ALS-only's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from recsys.contracts.schemas import ITEM_CATEGORIES
from recsys.ranking.exploration import rank_within_groups
from recsys.ranking.ranker import (
    ALS_SCORE,
    CATEGORY,
    HOUR,
    Feature,
    LinearRanker,
    design_matrix,
)
from recsys.simulation.truth import GroundTruth
from recsys.training.errors import TrainingDataError
from recsys.training.interactions import scan_impressions
from recsys.training.metrics import true_ctr_report
from recsys.training.params import ALSParams, ConfidenceWeights, RankerSettings
from recsys.training.ranker_data import (
    RankerRows,
    TimedALS,
    Windows,
    add_als_score,
    build_training_set,
    candidate_rows,
    fit_als,
    historical_features,
    menu_requests,
    rows_dict,
)


# ---------------------------------------------------------------- the feature set
def _stats(view: str, specs: list[tuple[str, str]], rows: dict, missing_of: str) -> list[Feature]:
    out = []
    for column, transform in specs:
        full = f"{view}__{column}"
        values = rows.get(full, np.array([np.nan]))
        known = values[~np.isnan(values)]
        default = 0.0 if transform == "log1p" else float(known.mean()) if len(known) else 0.0
        out.append(Feature(f"{full}:{transform}", view, "numeric", full, transform, default))
    out.append(Feature(f"{view}:is_missing", view, "missing", f"{view}__{missing_of}"))
    return out


def _median(rows: dict, column: str, fallback: float) -> float:
    values = rows.get(column, np.array([np.nan]))
    known = values[~np.isnan(values)]
    return float(np.median(known)) if len(known) else fallback


def default_features(rows: dict, settings: RankerSettings = RankerSettings()) -> list[Feature]:
    """The ranker's design columns; defaults for nulls from the training rows (CTR: the mean, i.e.
    the prior; counts: 0; prices: the median). Groups are Feast views, plus ``als`` and ``position``.

    Item and restaurant rates are position-debiased (``*_dctr_*``: clicks per expected
    examination, ``*_exam_*``: expected examinations; ``recsys.features.stats``): the legacy
    policy shows mains first, so raw CTRs mix attractiveness with exposure. The item's raw 7d CTR
    and impressions stay beside them (raw vs debiased tells how the legacy policy placed it).
    ``user_profile`` is left out: it added nothing in the feature report on the small and medium
    worlds (AUC gain < 0.001).
    """
    f: list[Feature] = [Feature(f"{ALS_SCORE}:identity", "als", "numeric", ALS_SCORE, "identity", 0.0),
                        Feature("als:is_missing", "als", "missing", ALS_SCORE)]
    f += _stats("item_stats", [("menu_dctr_1d", "logit"), ("menu_dctr_7d", "logit"), ("menu_dctr_28d", "logit"),
                               ("menu_ctr_7d", "logit"), ("menu_impressions_28d", "log1p"),
                               ("menu_exam_28d", "log1p"), ("menu_clicks_7d", "log1p"),
                               ("menu_clicks_28d", "log1p"), ("menu_orders_28d", "log1p")],
                rows, "menu_impressions_28d")
    f += _stats("restaurant_stats", [("menu_dctr_7d", "logit"), ("menu_dctr_28d", "logit"),
                                     ("feed_dctr_28d", "logit"), ("menu_exam_28d", "log1p")],
                rows, "menu_impressions_28d")
    f += _stats("user_stats", [("menu_dctr_28d", "logit"), ("feed_dctr_28d", "logit"), ("menu_clicks_28d", "log1p"),
                               ("menu_orders_28d", "log1p")], rows, "menu_impressions_28d")
    basket = "user_stats__avg_basket_price_28d"
    f += [Feature(f"{basket}:log", "user_stats", "numeric", basket, "log", _median(rows, basket, 10.0)),
          Feature("user_stats:basket_missing", "user_stats", "missing", basket)]
    f += [Feature("restaurant_profile__price_level:identity", "restaurant_profile", "numeric",
                  "restaurant_profile__price_level", "identity", 2.0),
          Feature("restaurant_profile__rating:identity", "restaurant_profile", "numeric",
                  "restaurant_profile__rating", "identity", _median(rows, "restaurant_profile__rating", 4.0))]
    f += [Feature(f"{CATEGORY}={c}", "item_profile", "onehot", CATEGORY, value=c) for c in ITEM_CATEGORIES]
    f += [Feature("item_profile__price:log", "item_profile", "numeric", "item_profile__price", "log",
                  _median(rows, "item_profile__price", 10.0))]
    f += [Feature(f"{HOUR}:{t}", "request_time", "numeric", HOUR, t, 12.0) for t in ("sin_hour", "cos_hour")]
    width = settings.hour_bucket_hours
    f += [Feature(f"{CATEGORY}={c}&hour[{lo},{min(lo + width, 24)})", "request_time", "onehot_x_hour", CATEGORY,
                  value=c, hours=(lo, min(lo + width, 24)))
          for c in ITEM_CATEGORIES for lo in range(0, 24, width)]
    pvb = "price_vs_basket__price_vs_basket"
    f += [Feature(f"{pvb}:log", "price_vs_basket", "numeric", pvb, "log", 1.0)]
    f += [Feature(f"position={p}", "position", "position", "position", value=p)
          for p in range(1, settings.max_position + 1)]
    return f


# ---------------------------------------------------------------- fitting
def fit_linear(features: list[Feature], X: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None,
               c: float = 1.0, seed: int = 0, max_iter: int = 2000) -> LinearRanker:
    """Standardise X (means, std; constant columns keep scale 1) and fit a seeded L2 logistic regression."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y).astype(np.int64)
    if len(np.unique(y)) < 2:
        raise TrainingDataError(f"ranker labels have a single class ({np.unique(y)}): nothing to learn")
    means = X.mean(axis=0)
    scales = X.std(axis=0)
    scales = np.where(scales > 1e-12, scales, 1.0)
    model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed, tol=1e-6)
    model.fit((X - means) / scales, y, sample_weight=weight)
    return LinearRanker(features, means, scales, model.coef_.ravel().astype(np.float64), float(model.intercept_[0]))


def subset(ranker_features: list[Feature], X: np.ndarray, drop_groups: set[str]) -> tuple[list[Feature], np.ndarray]:
    keep = [j for j, f in enumerate(ranker_features) if f.group not in drop_groups]
    return [ranker_features[j] for j in keep], X[:, keep]


# ---------------------------------------------------------------- held-out metrics
def _groups(request_id: np.ndarray) -> np.ndarray:
    """Dense group index of contiguous request ids (rows sorted by request)."""
    change = np.r_[True, request_id[1:] != request_id[:-1]]
    return np.cumsum(change) - 1


def request_metrics(score: np.ndarray, request_id: np.ndarray, clicked: np.ndarray) -> dict:
    """Mean per-request AUC and NDCG of clicks, over requests with >= 1 click and >= 1 non-click.

    Rows must be contiguous per request. Ties get average ranks (AUC) / item order (NDCG);
    NaN scores rank last.
    """
    score = np.nan_to_num(np.asarray(score, np.float64), nan=-np.inf)
    clicked = np.asarray(clicked).astype(bool)
    g = _groups(np.asarray(request_id))
    n_groups = int(g[-1]) + 1 if len(g) else 0
    pos = np.bincount(g, weights=clicked, minlength=n_groups)
    size = np.bincount(g, minlength=n_groups)
    neg = size - pos
    # average ascending ranks within each request
    order = np.lexsort((score, g))
    gs, ss = g[order], score[order]
    new_run = np.r_[True, (gs[1:] != gs[:-1]) | (ss[1:] != ss[:-1])]
    run = np.cumsum(new_run) - 1
    start_of_group = np.r_[0, np.cumsum(size)[:-1]]
    rank_in_group = np.arange(len(g)) - start_of_group[gs]
    avg = (np.bincount(run, weights=rank_in_group) / np.bincount(run))[run]
    ranks = np.empty(len(g))
    ranks[order] = avg + 1.0
    rank_sum = np.bincount(g, weights=ranks * clicked, minlength=n_groups)
    ok = (pos > 0) & (neg > 0)
    auc = (rank_sum[ok] - pos[ok] * (pos[ok] + 1) / 2) / (pos[ok] * neg[ok])
    # NDCG of the clicks when each request's shown items are re-ordered by score
    desc = rank_within_groups(g, -score, np.arange(len(g)))
    gain = clicked / np.log2(desc + 2.0)
    dcg = np.bincount(g, weights=gain, minlength=n_groups)
    disc = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(int(size.max()) if n_groups else 0) + 2.0))]
    ndcg = dcg[ok] / disc[pos[ok].astype(np.int64)]
    return {"requests": int(ok.sum()), "auc": float(auc.mean()) if ok.any() else float("nan"),
            "ndcg": float(ndcg.mean()) if ok.any() else float("nan")}


def heldout_comparison(ranker: LinearRanker, heldout: RankerRows) -> dict:
    """Ranker (position fixed at 0) vs ALS-only on the explored held-out requests."""
    frame = heldout.frame.filter(pl.col("explored")).sort("request_id", "position")
    rows = rows_dict(frame)
    rid, clicked = frame["request_id"].to_numpy(), frame["clicked"].to_numpy()
    ranker_m = request_metrics(ranker.score(ranker.features_from_rows(rows)), rid, clicked)
    als_m = request_metrics(rows[ALS_SCORE], rid, clicked)
    return {"explored_rows": frame.height, "ranker": ranker_m, "als_only": als_m,
            "auc_lift": ranker_m["auc"] - als_m["auc"], "ndcg_lift": ranker_m["ndcg"] - als_m["ndcg"]}


# ---------------------------------------------------------------- true CTR on the simulator
def ranker_lists(ranker: LinearRanker, candidates: pl.DataFrame, slots: int) -> pl.DataFrame:
    """Policy lists: each request's candidates ranked by the ranker at serving (position 0)."""
    score = ranker.score(ranker.features_from_rows(rows_dict(candidates)))
    group = candidates["group"].to_numpy()
    item = candidates["item_id"].to_numpy()
    rank = rank_within_groups(group, -np.nan_to_num(score, nan=-np.inf), item)
    keep = rank < slots
    return pl.DataFrame({"request_id": candidates["request_id"].to_numpy()[keep],
                         "position": rank[keep].astype(np.int16), "item_id": item[keep]})


def true_ctr_comparison(truth: GroundTruth, store, log: pl.LazyFrame | pl.DataFrame, rankers: dict[str, LinearRanker],
                        serving_als: TimedALS, windows: Windows, slots: int, sample: int, seed: int) -> dict:
    """True CTR per slot on a seeded sample of held-out menu requests: each ranker (features for every
    candidate through the same Feast historical retrieval), ALS-only, popularity (clicks before t2),
    random and the oracle; and each policy's share of the popularity -> oracle gap closed."""
    requests = menu_requests(log, windows.t2, windows.end, sample, seed)
    history = log.lazy().filter((pl.col("ts") >= windows.start) & (pl.col("ts") < windows.t2)).collect()
    base = true_ctr_report(truth, history, requests, "menu", slots, {"als_only": serving_als.model})
    cands, seconds = historical_features(store, candidate_rows(truth, requests))
    cands = add_als_score(cands, serving_als.model)
    policies = dict(base.policies)
    for name, ranker in rankers.items():
        policies[name] = truth.expected_reward(ranker_lists(ranker, cands, slots), requests, "menu")
    gap = base.oracle - base.popularity
    return {"requests": base.requests, "candidates": cands.height, "retrieval_seconds": round(seconds, 2),
            "random": base.random, "popularity": base.popularity, "oracle": base.oracle, "policies": policies,
            "gap_closed": {n: (v - base.popularity) / gap for n, v in policies.items()}}


# ---------------------------------------------------------------- the nightly entry point
@dataclass
class RankerResult:
    ranker: LinearRanker
    metrics: dict
    feature_report: dict
    ships: bool
    reason: str
    timings: dict = field(default_factory=dict)


def _xy(ranker_features: list[Feature], data: RankerRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = rows_dict(data.frame)
    return design_matrix(ranker_features, rows, serving=False), rows["clicked"], rows["weight"]


def train_ranker(config, store, impressions_dir: Path, als_params: ALSParams, seed: int, t1: datetime, t2: datetime,
                 end: datetime, start: datetime | None = None, truth: GroundTruth | None = None,
                 settings: RankerSettings = RankerSettings(),
                 weights: ConfidenceWeights = ConfidenceWeights()) -> RankerResult:
    """Train, evaluate and judge the menu ranker (see the module docstring).

    Parameters
    ----------
    config : the run's Config (only ``config.training.num_threads`` is read).
    store : an open Feast store with ``ranker_v1`` applied over the offline stats of the log.
    impressions_dir : directory of the (validated) impressions log.
    als_params : menu ALS hyperparameters (e.g. the searched best).
    t1, t2, end : ALS-train [start, t1), ranker-train [t1, t2), held-out [t2, end).
    start : first time ALS may learn from (default: the log's first event).
    truth : the simulator's ground truth; when given, the true-CTR check runs and gates shipping.
    """
    from recsys.training.feature_report import feature_report

    timings: dict[str, float] = {}
    log = scan_impressions(impressions_dir)
    if start is None:
        start = log.select(pl.col("ts").min()).collect().item()
    windows = Windows(start, t1, t2, end)
    threads = config.training.num_threads

    clock = time.perf_counter()
    ranker_als = fit_als(log, als_params, seed, until=t1, weights=weights, num_threads=threads, since=start)
    serving_als = fit_als(log, als_params, seed, until=t2, weights=weights, num_threads=threads, since=start)
    timings["als_seconds"] = time.perf_counter() - clock

    clock = time.perf_counter()
    train = build_training_set(store, log, ranker_als, t1, t2, settings.negative_rate, seed)
    heldout = build_training_set(store, log, serving_als, t2, end)
    timings["training_set_seconds"] = time.perf_counter() - clock
    timings["retrieval_seconds"] = train.retrieval_seconds + heldout.retrieval_seconds

    clock = time.perf_counter()
    features = default_features(rows_dict(train.frame), settings)
    X, y, w = _xy(features, train)
    ranker = fit_linear(features, X, y, w, settings.c, seed, settings.max_iter)
    timings["fit_seconds"] = time.perf_counter() - clock

    comparison = heldout_comparison(ranker, heldout)
    metrics: dict = {"windows": windows.as_dict(), "als_params": als_params.model_dump(),
                     "als_trained_until": {"ranker_features": ranker_als.trained_until.isoformat(),
                                           "serving": serving_als.trained_until.isoformat()},
                     "train_rows": train.n, "train_clicks": int(y.sum()), "negative_rate": train.negative_rate,
                     "heldout_rows": heldout.n, "heldout": comparison}
    if truth is not None:
        clock = time.perf_counter()
        metrics["true_ctr"] = true_ctr_comparison(truth, store, log, {"ranker": ranker}, serving_als, windows,
                                                  settings.menu_slots, settings.eval_requests, seed)
        timings["true_ctr_seconds"] = time.perf_counter() - clock

    clock = time.perf_counter()
    report = feature_report(ranker, X, y, w, heldout, store, settings, seed, als_params.factors)
    timings["feature_report_seconds"] = time.perf_counter() - clock

    ships, reason = ship_decision(metrics, settings)
    ranker.metadata = {"windows": windows.as_dict(), "als_params": als_params.model_dump(), "seed": seed,
                       "feature_service": "ranker_v1", "ships": ships, "reason": reason}
    metrics["timings"] = {k: round(v, 2) for k, v in timings.items()}
    return RankerResult(ranker, metrics, report, ships, reason, timings)


def ship_decision(metrics: dict, settings: RankerSettings) -> tuple[bool, str]:
    """The ranker ships only if it beats ALS-only on held-out logs (AUC) and, with a truth, in true CTR."""
    h = metrics["heldout"]
    lift = h["auc_lift"]
    if not np.isfinite(lift) or lift <= settings.min_auc_lift:
        return False, (f"held-out AUC {h['ranker']['auc']:.4f} does not beat ALS-only {h['als_only']['auc']:.4f} "
                       f"by more than {settings.min_auc_lift} on {h['ranker']['requests']} explored requests")
    reason = (f"held-out AUC {h['ranker']['auc']:.4f} vs ALS-only {h['als_only']['auc']:.4f} "
              f"({h['ranker']['requests']} explored requests)")
    if "true_ctr" in metrics:
        t = metrics["true_ctr"]
        r, a = t["policies"]["ranker"], t["policies"]["als_only"]
        if r <= a:
            return False, reason + f"; but true CTR {r:.4f} does not beat ALS-only {a:.4f}"
        reason += (f"; true CTR {r:.4f} vs ALS-only {a:.4f}, popularity {t['popularity']:.4f}, oracle "
                   f"{t['oracle']:.4f} (gap closed {t['gap_closed']['ranker']:.1%})")
    return True, reason
