"""The menu ranker's logit for a request's candidates, evaluated in parts by what each feature reads.

Why: the linear ranker has ~80 design columns, and building all of them for 200 candidates per
request cost more than the Feast read and the FAISS scoring together. But most columns read only
the item (``item_stats``, ``item_profile``: fixed for a model version's lifetime, see
:mod:`recsys.serving.item_features`), or the item and the request hour (category x hour crosses),
or only the request's context (user, restaurant, request time: one value for every candidate).
A linear score splits exactly along those lines::

    score = bias + sum_j w_j (x_j - m_j) / s_j
          = item_part[item] + item_hour_part[item, hour band] + context_part + candidate_part

The item parts are computed once per model version for every item of the table (and once for an
item the table lacks: all its item features null); the context part in plain Python over the
request's scalars (:class:`_ContextPart`); only the columns that read per-candidate inputs (the
ALS score, price vs basket) are built per candidate. Same :class:`~recsys.ranking.ranker.Feature`
semantics; the item and candidate parts use the same design code (a
:class:`~recsys.ranking.ranker.DesignPlan` of the part's features): a test checks the scores
equal the full design's. Explanations (per-feature contributions) still use the full design.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import math

import numpy as np

from recsys.ranking.ranker import HOUR, POSITION, SCALAR_TRANSFORMS, DesignPlan, Feature, LinearRanker, apply_transform
from recsys.serving.item_features import ITEM_VIEWS, ItemFeatureTable

ITEM, ITEM_HOUR, CONTEXT, CANDIDATE = "item", "item_hour", "context", "candidate"
HOURS = np.arange(24)


def part_of(feature: Feature, context_views: Sequence[str], context_columns: Sequence[str]) -> str:
    """Which part of the score ``feature`` belongs to, from the columns it reads."""
    view = feature.column.partition("__")[0] if "__" in feature.column else None
    if view in ITEM_VIEWS:
        return ITEM_HOUR if feature.kind == "onehot_x_hour" else ITEM
    if view in context_views or feature.column in context_columns or feature.column == POSITION:
        return CONTEXT
    return CANDIDATE


class _Part:
    """One part's features and its slice of the linear model: ``design @ coef + offset``."""

    def __init__(self, ranker: LinearRanker, columns: list[int]):
        self.features = [ranker.features[j] for j in columns]
        self.plan = DesignPlan(self.features)
        self.coef = ranker.weights[columns] / ranker.scales[columns]
        self.offset = -float(np.dot(ranker.means[columns], self.coef))

    def __bool__(self) -> bool:
        return bool(self.features)

    def __call__(self, rows: Mapping[str, Any], n: int | None = None) -> np.ndarray:
        return self.plan(rows, serving=True) @ self.coef + self.offset


class _ColumnPart:
    """A part whose features are each ``numeric`` or ``missing`` over one float column (the
    candidate part: the ALS score and price vs basket): one ``where`` and one transform per feature.

    Why not a :class:`DesignPlan`: it builds a design matrix through ~15 numpy calls whatever the
    feature count; for these 3 features that cost 4x the direct sum. Same semantics as
    :class:`~recsys.ranking.ranker.Feature` (an absent column is all null); the parts test checks it.
    """

    KINDS = ("numeric", "missing")

    def __init__(self, ranker: LinearRanker, columns: list[int]):
        self.features = [ranker.features[j] for j in columns]
        coef = ranker.weights[columns] / ranker.scales[columns]
        self.offset = -float(np.dot(ranker.means[columns], coef))
        self.terms = list(zip(self.features, coef.tolist()))

    def __bool__(self) -> bool:
        return bool(self.features)

    def __call__(self, rows: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        total = np.full(n, self.offset)
        for f, c in self.terms:
            x = rows.get(f.column)
            null = np.ones(n, dtype=bool) if x is None else np.isnan(x)
            if f.kind == "missing":
                total += c * null
            else:
                filled = np.full(n, float(f.default)) if x is None else np.where(null, f.default, x)
                total += c * apply_transform(filled, f.transform)
        return total


def _is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


class _ContextPart:
    """The context part: features of the request's scalars (user, restaurant, request time).

    Why not a one-row :class:`DesignPlan`: its ~20 numpy calls cost ~100 us per request whatever
    the row count, more than the rest of the ranker; a Python loop over these ~20 features costs
    a tenth of that. The features are sorted by kind at construction so each loop does one thing,
    and the position features (0 at serving) are constants folded into the offset. The semantics
    are :class:`~recsys.ranking.ranker.Feature`'s at serving; the parts test checks them against
    the full design.
    """

    def __init__(self, ranker: LinearRanker, columns: list[int]):
        self.features = [ranker.features[j] for j in columns]
        coef = ranker.weights[columns] / ranker.scales[columns]
        self.offset = -float(np.dot(ranker.means[columns], coef))
        self.numeric, self.missing, self.onehot, self.crossed = [], [], [], []
        for f, c in zip(self.features, coef.tolist()):
            if f.kind == "numeric":
                if f.transform not in SCALAR_TRANSFORMS:
                    raise ValueError(f"feature {f.name!r}: unknown transform {f.transform!r}")
                self.numeric.append((f.column, float(f.default), SCALAR_TRANSFORMS[f.transform], c))
            elif f.kind == "missing":
                self.missing.append((f.column, c))
            elif f.kind == "onehot":
                self.onehot.append((f.column, f.value, c))
            elif f.kind == "onehot_x_hour":
                self.crossed.append((f.column, f.value, *f.hours, c))
            else:  # position: 0 at serving
                self.offset += c * (1.0 if int(f.value) == 0 else 0.0)

    def __bool__(self) -> bool:
        return bool(self.features)

    def __call__(self, context: Mapping[str, Any]) -> float:
        total = self.offset
        get = context.get
        for column, default, fn, c in self.numeric:
            v = get(column)
            total += c * fn(default if _is_null(v) else float(v))
        for column, c in self.missing:
            if _is_null(get(column)):
                total += c
        for column, value, c in self.onehot:
            if get(column) == value:  # a null never equals a category
                total += c
        hour = get(HOUR)
        if not _is_null(hour):
            for column, value, lo, hi, c in self.crossed:
                if lo <= hour < hi and get(column) == value:
                    total += c
        return total


class MenuScorer:
    """``score(prepare(candidate_ids), context, hour, candidate_rows)`` == the ranker's score of the
    full rows.

    Built once per model version (computation, no I/O): the item parts for every item of
    ``items`` and for an unknown item, by hour band (the distinct patterns of the crosses' hour
    ranges over the 24 hours).
    """

    def __init__(self, ranker: LinearRanker, items: ItemFeatureTable, context_views: Sequence[str],
                 context_columns: Sequence[str], row_columns: Sequence[str] = ()):
        parts: dict[str, list[int]] = {ITEM: [], ITEM_HOUR: [], CONTEXT: [], CANDIDATE: []}
        for j, f in enumerate(ranker.features):
            parts[part_of(f, context_views, context_columns)].append(j)
        self.bias = ranker.bias
        self.item_ids = items.item_ids
        self.context = _ContextPart(ranker, parts[CONTEXT])
        simple = all(ranker.features[j].kind in _ColumnPart.KINDS for j in parts[CANDIDATE])
        self.candidate = (_ColumnPart if simple else _Part)(ranker, parts[CANDIDATE])
        self.candidate_columns = tuple(dict.fromkeys(f.column for f in self.candidate.features))
        item, item_hour = _Part(ranker, parts[ITEM]), _Part(ranker, parts[ITEM_HOUR])
        # Row 0 of each table: an item the table lacks (every item feature null); row i + 1: item i.
        all_rows = _with_unknown(items)
        # Item columns the per-candidate inputs read (the price of price_vs_basket), by table row.
        self.row_values = {c: all_rows[c] for c in row_columns if c in all_rows}
        self.item_part = item(all_rows) if item else np.zeros(len(self.item_ids) + 1)
        bands = [tuple((lo <= h < hi) for lo, hi in (f.hours for f in item_hour.features)) for h in HOURS]
        distinct = list(dict.fromkeys(bands))
        self.band_of_hour = np.array([distinct.index(b) for b in bands], dtype=np.intp)
        representative = [bands.index(b) for b in distinct]
        n = len(self.item_ids) + 1
        self.item_hour_part = np.stack(
            [item_hour({**all_rows, HOUR: np.full(n, float(h))}) if item_hour else np.zeros(n)
             for h in representative], axis=1)

    def rows_of(self, candidate_ids: np.ndarray) -> np.ndarray:
        """Each candidate's row in the item-part tables (0 for items the table lacks)."""
        n = len(self.item_ids)
        if n == 0:
            return np.zeros(len(candidate_ids), dtype=np.intp)
        at = np.minimum(np.searchsorted(self.item_ids, candidate_ids), n - 1)
        return np.where(self.item_ids[at] == candidate_ids, at + 1, 0)

    def prepare(self, candidate_ids: np.ndarray) -> Prepared:
        """What the score of a candidate list needs besides the request (cacheable per list)."""
        rows = self.rows_of(np.asarray(candidate_ids, dtype=np.int64))
        base = self.item_part[rows, None] + self.item_hour_part[rows] + self.bias
        return Prepared(rows, base, {c: v[rows] for c, v in self.row_values.items()})

    def score(self, prepared: Prepared, context: Mapping[str, Any], hour: int,
              candidate_rows: Callable[[tuple[str, ...], Prepared], Mapping[str, np.ndarray]]) -> np.ndarray:
        """Logits of the candidates :meth:`prepare` d. ``context``: scalars by column (user,
        restaurant, request time); ``candidate_rows(columns, prepared)``: the per-candidate columns
        asked for (only called if needed)."""
        score = prepared.base[:, self.band_of_hour[hour]] + (self.context(context) if self.context else 0.0)
        if self.candidate:
            score += self.candidate(candidate_rows(self.candidate_columns, prepared), len(score))
        return score


@dataclass(frozen=True)
class Prepared:
    """A candidate list as :class:`MenuScorer` sees it: each item's row in its tables, the item
    parts of its logit per hour band (bias included), and the values of its ``row_columns``."""

    rows: np.ndarray  # (n,)
    base: np.ndarray  # (n, hour bands)
    values: Mapping[str, np.ndarray]

    def value(self, column: str) -> np.ndarray:
        """An item column's values (NaN for items the table lacks, or a column it does not hold)."""
        got = self.values.get(column)
        return np.full(len(self.rows), np.nan) if got is None else got


def _with_unknown(items: ItemFeatureTable) -> dict[str, np.ndarray]:
    """The table's columns with a first row of nulls (the unknown item)."""
    out = {}
    for name, col in items.values.items():
        null = np.array([np.nan] if col.dtype.kind == "f" else [None], dtype=col.dtype)
        out[name] = np.concatenate([null, col])
    return out or {"_": np.zeros(len(items.item_ids) + 1)}
