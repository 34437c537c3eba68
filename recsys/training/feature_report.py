"""What each feature group of the ranker is worth, beside what it costs.

Worth: ablation on held-out logs. The ranker is refitted without the group (same data, seed and
settings) and scored on the explored held-out requests (see ranker_fit: unbiased clicks); the
group's contribution is the full model's per-request AUC (and NDCG) minus the ablated one's.
Groups whose AUC gain is below ``settings.ablation_min_gain`` are flagged ``adds_nothing``.
``position`` is not ablated: it is fixed at serving and exists only to de-bias training.

Cost, per group:
* ``online_bytes_per_row``: the stored value bytes of one entity row of the Feast view, from the
  view's dtypes (Int64/Float64 8, Int32/Float32 4, Bool 1, String the mean length seen in the
  held-out rows) plus the 8-byte join key; 0 for on-demand views (computed per request) and for
  ``position``; for ``als``, the two Float32 embeddings (user + item) of ``als_factors``.
* ``transform_us_per_row``: time to build the group's design columns (numpy, serving path).
* ``retrieval_ms_per_1k_rows``: Feast historical retrieval of that view alone on a sample of
  held-out rows (offline store: a relative cost, not the online latency).
The result is a JSON-able dict that the nightly saves with the model.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl

from recsys.ranking.ranker import LinearRanker, design_matrix
from recsys.training.ranker_data import RankerRows, retrieval_calls, retrieve, rows_dict
from recsys.training.params import RankerSettings
from recsys.training.ranker_fit import (
    fit_linear,
    heldout_comparison,
    subset,
)

_DTYPE_BYTES = {"Int64": 8, "Float64": 8, "Int32": 4, "Float32": 4, "Bool": 1, "UnixTimestamp": 8}
NOT_ABLATED = ("position",)


def _view_bytes(view, rows: dict) -> tuple[int, int]:
    """(value bytes of one online row, number of features) of a Feast feature view."""
    total = 8  # the Int64 join key
    for f in view.features:
        kind = str(f.dtype)
        if kind == "String":
            values = rows.get(f"{view.name}__{f.name}")
            seen = [len(v) for v in values[:10_000] if isinstance(v, str)] if values is not None else []
            total += round(float(np.mean(seen))) if seen else 8
        else:
            total += _DTYPE_BYTES.get(kind, 8)
    return total, len(view.features)


def _retrieval_ms(store, frame: pl.DataFrame, group: str, n: int) -> float | None:
    """Feast historical retrieval of one group's call on the first ``n`` rows, ms per 1000 rows."""
    calls = {c.prefix[:-2]: c for c in retrieval_calls(store)}
    if n <= 0 or group not in calls:
        return None
    sample = frame.head(n)
    _, seconds = retrieve(store, sample, calls[group])
    return seconds * 1000.0 * 1000.0 / sample.height


def group_cost(store, group: str, ranker: LinearRanker, heldout: RankerRows, rows: dict,
               settings: RankerSettings, als_factors: int | None) -> dict:
    feats = [f for f in ranker.features if f.group == group]
    started = time.perf_counter()
    design_matrix(feats, rows)
    transform_us = (time.perf_counter() - started) * 1e6 / max(heldout.n, 1)
    out: dict = {"design_columns": len(feats), "transform_us_per_row": round(transform_us, 4)}
    if group == "als":
        out.update(source="ALS embeddings (user_embedding, item_embedding)",
                   online_bytes_per_row=2 * 4 * als_factors if als_factors else None)
    elif group == "position":
        out.update(source="fixed at serving", online_bytes_per_row=0)
    else:
        if group in {v.name for v in store.list_on_demand_feature_views()}:  # computed per request
            odfv = store.get_on_demand_feature_view(group)
            out.update(source=f"on-demand view {group}", online_bytes_per_row=0, view_features=len(odfv.features))
        else:
            nbytes, nfeat = _view_bytes(store.get_feature_view(group), rows)
            out.update(source=f"feature view {group}", online_bytes_per_row=nbytes, view_features=nfeat)
        ms = _retrieval_ms(store, heldout.frame, group, settings.cost_sample_rows)
        out["retrieval_ms_per_1k_rows"] = round(ms, 2) if ms is not None else None
    return out


def feature_report(ranker: LinearRanker, X: np.ndarray, y: np.ndarray, w: np.ndarray, heldout: RankerRows, store,
                   settings: RankerSettings = RankerSettings(), seed: int = 0, als_factors: int | None = None) -> dict:
    """Ablation gain and cost of every feature group of ``ranker`` (fitted on X, y, w)."""
    full = heldout_comparison(ranker, heldout)["ranker"]
    rows = rows_dict(heldout.frame)
    groups: dict[str, dict] = {}
    for group in ranker.groups:
        entry: dict = {}
        if group not in NOT_ABLATED:
            feats, Xg = subset(ranker.features, X, {group})
            ablated = fit_linear(feats, Xg, y, w, settings.c, seed, settings.max_iter)
            m = heldout_comparison(ablated, heldout)["ranker"]
            entry.update(auc_without=m["auc"], ndcg_without=m["ndcg"], auc_gain=full["auc"] - m["auc"],
                         ndcg_gain=full["ndcg"] - m["ndcg"],
                         adds_nothing=bool(full["auc"] - m["auc"] < settings.ablation_min_gain))
        entry["cost"] = group_cost(store, group, ranker, heldout, rows, settings, als_factors)
        groups[group] = entry
    return {"metric": "per-request AUC / NDCG of clicks on explored held-out requests",
            "full": full, "min_gain": settings.ablation_min_gain, "groups": groups,
            "flagged": sorted(g for g, e in groups.items() if e.get("adds_nothing"))}
