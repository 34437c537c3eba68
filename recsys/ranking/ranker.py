"""The menu re-ranker as serving runs it: a linear model over Feast features, numpy only.

A :class:`LinearRanker` maps Feast-style rows (full feature names such as
``item_stats__menu_ctr_7d``, plus ``als_score`` and ``position``) to a design matrix
(:meth:`LinearRanker.features_from_rows`), standardises it with the training means and scales,
and scores ``bias + sum_j w_j * (x_j - mean_j) / scale_j`` (logits). Every design column is
described by a :class:`Feature` (its input column, transform, default for nulls, and the feature
group it belongs to), so the model, its defaults and its encodings travel together in one JSON
file: no pickles, nothing to keep in step by hand.

Nulls (a missing entity row, a new item, a user without orders) never reach the arithmetic:
a numeric input that is null takes the feature's documented ``default`` (counts -> 0; CTRs -> the
training mean, i.e. the prior; price -> the training median; ``als_score`` -> 0), and the groups
whose rows can be missing carry an ``is_missing`` indicator, so the model learns what a missing
row means instead of reading the default as a real value. A column absent altogether (a view
that could not be read) is treated as null in every row: degraded, never an error.

Position (examination bias): the training rows carry the logged position, encoded as one-hot
columns for positions 1..``max_position`` (position 0 is the reference, all zeros). At serving,
:meth:`features_from_rows` fixes position = 0 for every candidate, whatever the rows say, so the
ranking reflects attractiveness alone, not where the legacy policy used to show an item.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from recsys.errors import RecsysError

FORMAT_VERSION = 1
KIND = "linear_ranker"
POSITION = "position"
ALS_SCORE = "als_score"
HOUR = "request_time__hour_of_day"
CATEGORY = "item_profile__category"

FeatureKind = Literal["numeric", "missing", "onehot", "onehot_x_hour", "position"]
Transform = Literal["identity", "log1p", "log", "logit", "sin_hour", "cos_hour"]
_EPS = 1e-4


class RankerError(RecsysError):
    """A ranker artifact or its input is inconsistent (shapes, names, non-finite values)."""

    exit_code = 7


@dataclass(frozen=True)
class Feature:
    """One column of the design matrix.

    Attributes
    ----------
    name : unique design-column name, e.g. ``"item_stats__menu_ctr_7d:logit"``.
    group : the feature group it belongs to (a Feast view, ``als``, ``position``): the unit of
        ablation and of cost in the feature report.
    kind : ``numeric`` (transform(value or default)), ``missing`` (1 if ``column`` is null),
        ``onehot`` (1 if ``column == value``), ``onehot_x_hour`` (1 if ``column == value`` and
        ``hours[0] <= hour < hours[1]``), ``position`` (1 if min(position, max) == value).
    column : the input column (a full Feast feature name, ``als_score`` or ``position``).
    transform : numeric only: identity, log1p (counts), log (positive), logit (rates in (0, 1)),
        sin_hour / cos_hour (hour of day on the unit circle).
    default : numeric only: the raw value used when the input is null (before the transform).
    value : onehot / onehot_x_hour: the category; position: the position.
    hours : onehot_x_hour: the half-open hour range [lo, hi).
    """

    name: str
    group: str
    kind: FeatureKind
    column: str
    transform: Transform = "identity"
    default: float = 0.0
    value: str | int | None = None
    hours: tuple[int, int] | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        out["hours"] = list(self.hours) if self.hours is not None else None
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> Feature:
        d = dict(d)
        if d.get("hours") is not None:
            d["hours"] = tuple(int(h) for h in d["hours"])
        try:
            return cls(**d)
        except TypeError as exc:
            raise RankerError(f"bad feature definition {d!r}: {exc}") from None


# ---- the input columns -> numpy ----
def _column(rows: Mapping, name: str, n: int, kind: str) -> np.ndarray:
    """``rows[name]`` as float (NaN = null) or object (None = null); all-null if absent."""
    if name not in rows:
        return np.full(n, np.nan) if kind == "float" else np.full(n, None, dtype=object)
    values = rows[name]
    if kind == "float":
        arr = np.asarray(values, dtype=np.float64) if not isinstance(values, np.ndarray) or values.dtype != object \
            else np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    else:
        arr = np.asarray(values, dtype=object)
    if arr.shape != (n,):
        raise RankerError(f"column {name!r} has shape {arr.shape}, expected ({n},) like the other columns")
    return arr


def _is_null(values, n: int) -> np.ndarray:
    """(n,) 1.0 where a value is null (None or NaN); all ones if the column is absent."""
    if values is None:
        return np.ones(n)
    arr = np.asarray(values)
    if arr.dtype.kind in "fc":
        return np.isnan(arr).astype(np.float64)
    if arr.dtype.kind in "iub":
        return np.zeros(n)
    return np.fromiter((v is None or (isinstance(v, float) and math.isnan(v)) for v in arr), dtype=np.float64, count=n)


def _n_rows(rows: Mapping) -> int:
    sizes = {k: len(v) for k, v in rows.items()}
    if not sizes:
        raise RankerError("features_from_rows: no columns given")
    n = set(sizes.values())
    if len(n) != 1:
        raise RankerError(f"features_from_rows: columns differ in length: {sizes}")
    return n.pop()


def apply_transform(x: np.ndarray, transform: str) -> np.ndarray:
    if transform == "identity":
        return x
    if transform == "log1p":
        return np.log1p(np.maximum(x, 0.0))
    if transform == "log":
        return np.log(np.maximum(x, 1e-6))
    if transform == "logit":
        p = np.clip(x, _EPS, 1.0 - _EPS)
        return np.log(p / (1.0 - p))
    if transform == "sin_hour":
        return np.sin(2.0 * math.pi * x / 24.0)
    if transform == "cos_hour":
        return np.cos(2.0 * math.pi * x / 24.0)
    raise RankerError(f"unknown transform {transform!r}")


def _logit(x: float) -> float:
    p = min(max(x, _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


#: :func:`apply_transform` on one float (a request's scalar features: see recsys.serving.scoring).
SCALAR_TRANSFORMS: dict[str, Callable[[float], float]] = {
    "identity": lambda x: x,
    "log1p": lambda x: math.log1p(max(x, 0.0)),
    "log": lambda x: math.log(max(x, 1e-6)),
    "logit": _logit,
    "sin_hour": lambda x: math.sin(2.0 * math.pi * x / 24.0),
    "cos_hour": lambda x: math.cos(2.0 * math.pi * x / 24.0),
}


class DesignPlan:
    """The features compiled once into whole-block numpy steps; ``plan(rows)`` is the design matrix.

    The per-feature loop is the reference semantics (see :class:`Feature`); the plan computes the
    same values with a few array operations per feature *kind* instead of a few per feature:

    - numeric: the input columns stacked as a (k, n) block, nulls replaced by the defaults in one
      ``where``, each transform applied once to its contiguous slice of rows;
    - missing: one null mask per distinct column;
    - onehot / onehot_x_hour: one ``column == value`` per distinct (column, value) and one hour mask
      per distinct range, combined by fancy indexing (the model has 40 onehot_x_hour columns over 5
      categories: 5 object comparisons instead of 40);
    - position: one broadcast comparison.

    Constructor only compiles (no I/O); unknown kinds or transforms are refused here.
    """

    def __init__(self, features: Sequence[Feature]):
        self.features = tuple(features)
        self.d = len(self.features)
        numeric = [(j, f) for j, f in enumerate(self.features) if f.kind == "numeric"]
        for f in self.features:
            if f.kind not in ("numeric", "missing", "onehot", "onehot_x_hour", "position"):
                raise RankerError(f"feature {f.name!r}: unknown kind {f.kind!r}")
            if f.kind == "numeric" and f.transform not in _TRANSFORMS:
                raise RankerError(f"unknown transform {f.transform!r}")
        # numeric: ordered by transform so that each transform is one contiguous slice of rows
        numeric.sort(key=lambda jf: _TRANSFORMS.index(jf[1].transform))
        self.num_cols = np.array([j for j, _ in numeric], dtype=np.intp)
        self.num_inputs = [f.column for _, f in numeric]
        self.num_defaults = np.array([float(f.default) for _, f in numeric], dtype=np.float64)[:, None]
        self.num_slices: list[tuple[str, int, int]] = []
        for i, (_, f) in enumerate(numeric):
            if self.num_slices and self.num_slices[-1][0] == f.transform:
                self.num_slices[-1] = (f.transform, self.num_slices[-1][1], i + 1)
            else:
                self.num_slices.append((f.transform, i, i + 1))
        # missing: column -> design columns
        self.missing: dict[str, list[int]] = {}
        for j, f in enumerate(self.features):
            if f.kind == "missing":
                self.missing.setdefault(f.column, []).append(j)
        # one-hots: distinct (column, value) equalities and hour ranges
        self.eq_keys: list[tuple[str, object]] = []
        self.ranges: list[tuple[int, int]] = []
        onehot, crossed = [], []
        for j, f in enumerate(self.features):
            if f.kind in ("onehot", "onehot_x_hour"):
                key = (f.column, f.value)
                if key not in self.eq_keys:
                    self.eq_keys.append(key)
                e = self.eq_keys.index(key)
                if f.kind == "onehot":
                    onehot.append((j, e))
                else:
                    if f.hours not in self.ranges:
                        self.ranges.append(f.hours)
                    crossed.append((j, e, self.ranges.index(f.hours)))
        self.onehot_cols = np.array([j for j, _ in onehot], dtype=np.intp)
        self.onehot_eq = np.array([e for _, e in onehot], dtype=np.intp)
        self.cross_cols = np.array([j for j, _, _ in crossed], dtype=np.intp)
        self.cross_eq = np.array([e for _, e, _ in crossed], dtype=np.intp)
        self.cross_range = np.array([r for _, _, r in crossed], dtype=np.intp)
        self.range_lo = np.array([lo for lo, _ in self.ranges], dtype=np.float64)
        self.range_hi = np.array([hi for _, hi in self.ranges], dtype=np.float64)
        # position: min(position, last) == value
        positions = [(j, int(f.value)) for j, f in enumerate(self.features) if f.kind == "position"]
        self.pos_cols = np.array([j for j, _ in positions], dtype=np.intp)
        self.pos_values = np.array([v for _, v in positions], dtype=np.float64)
        self.pos_last = max((v for _, v in positions), default=0)

    def __call__(self, rows: Mapping, serving: bool = True) -> np.ndarray:
        n = _n_rows(rows)
        if not serving and POSITION not in rows:
            raise RankerError("training rows need a 'position' column (serving=False)")
        X = np.empty((n, self.d), dtype=np.float64)
        floats: dict[str, np.ndarray] = {}

        def as_float(name: str) -> np.ndarray:
            if name not in floats:
                floats[name] = _column(rows, name, n, "float")
            return floats[name]

        position = np.zeros(n) if serving else np.nan_to_num(as_float(POSITION), nan=0.0)

        if len(self.num_cols):
            raw = np.empty((len(self.num_cols), n), dtype=np.float64)
            for i, name in enumerate(self.num_inputs):
                raw[i] = as_float(name)
            filled = np.where(np.isnan(raw), self.num_defaults, raw)
            for transform, lo, hi in self.num_slices:
                filled[lo:hi] = apply_transform(filled[lo:hi], transform)
            X[:, self.num_cols] = filled.T
        for name, cols in self.missing.items():
            X[:, cols] = _is_null(rows.get(name), n)[:, None]
        if self.eq_keys:
            objects: dict[str, np.ndarray] = {}
            eq = np.empty((n, len(self.eq_keys)), dtype=bool)
            for e, (name, value) in enumerate(self.eq_keys):
                if name not in objects:
                    objects[name] = _column(rows, name, n, "object")
                eq[:, e] = objects[name] == value
            if len(self.onehot_cols):
                X[:, self.onehot_cols] = eq[:, self.onehot_eq]
            if len(self.cross_cols):
                hour = as_float(HOUR)[:, None]
                in_range = (hour >= self.range_lo) & (hour < self.range_hi)
                X[:, self.cross_cols] = eq[:, self.cross_eq] & in_range[:, self.cross_range]
        if len(self.pos_cols):
            X[:, self.pos_cols] = np.minimum(position, self.pos_last)[:, None] == self.pos_values
        return X


_TRANSFORMS = ("identity", "log1p", "log", "logit", "sin_hour", "cos_hour")


@functools.lru_cache(maxsize=16)
def _plan(features: tuple[Feature, ...]) -> DesignPlan:
    return DesignPlan(features)


def design_matrix(features: Sequence[Feature], rows: Mapping, serving: bool = True) -> np.ndarray:
    """(n, len(features)) float64 design matrix of ``rows`` (see :class:`Feature`).

    ``serving=True`` fixes position = 0 for every row (the rows' ``position`` is ignored);
    ``serving=False`` (training) reads ``rows["position"]``, which must then be present.
    Computed by a :class:`DesignPlan` compiled once per feature list (cached).
    """
    return _plan(tuple(features))(rows, serving=serving)


@dataclass
class LinearRanker:
    """A standardised linear model over :class:`Feature` columns. Constructor only stores.

    Parameters
    ----------
    features : the design columns, in order.
    means, scales : (d,) standardisation: z = (x - means) / scales (scales > 0).
    weights : (d,) coefficients on the standardised columns.
    bias : intercept (logit scale).
    metadata : JSON-able facts saved with the model (training windows, ALS version, metrics).
    """

    features: list[Feature]
    means: np.ndarray
    scales: np.ndarray
    weights: np.ndarray
    bias: float
    metadata: dict = field(default_factory=dict)
    _design: DesignPlan | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.features = list(self.features)
        d = len(self.features)
        names = [f.name for f in self.features]
        if len(set(names)) != d:
            raise RankerError(f"duplicate feature names: {sorted({n for n in names if names.count(n) > 1})}")
        for attr in ("means", "scales", "weights"):
            arr = np.asarray(getattr(self, attr), dtype=np.float64)
            if arr.shape != (d,):
                raise RankerError(f"{attr} has shape {arr.shape}, expected ({d},) for {d} features")
            if not np.isfinite(arr).all():
                raise RankerError(f"{attr} has non-finite values")
            setattr(self, attr, arr)
        if (self.scales <= 0).any():
            raise RankerError("scales must be > 0")
        if not math.isfinite(float(self.bias)):
            raise RankerError(f"bias={self.bias} is not finite")
        self.bias = float(self.bias)

    # ---- shape ----
    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def groups(self) -> list[str]:
        """Feature groups in first-seen order."""
        return list(dict.fromkeys(f.group for f in self.features))

    @property
    def input_columns(self) -> list[str]:
        """The row columns the ranker reads (what serving must fetch)."""
        cols = [f.column for f in self.features]
        if any(f.kind == "onehot_x_hour" for f in self.features):
            cols.append(HOUR)
        return list(dict.fromkeys(cols))

    # ---- scoring ----
    def features_from_rows(self, rows: Mapping[str, Sequence | np.ndarray], serving: bool = True) -> np.ndarray:
        """Rows (column -> (n,) values, nulls as None/NaN) to the (n, d) design matrix.

        At serving (default) position is fixed at 0; ``serving=False`` uses ``rows["position"]``.
        """
        if self._design is None or self._design.features != tuple(self.features):  # compiled once
            self._design = DesignPlan(self.features)
        return self._design(rows, serving=serving)

    def _check(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise RankerError(f"X has shape {X.shape}, expected (n, {len(self.features)})")
        return X

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """(n, d) per-feature contributions w_j * z_j; each row sums to score - bias."""
        X = self._check(X)
        return (X - self.means) / self.scales * self.weights

    def score(self, X: np.ndarray) -> np.ndarray:
        """(n,) logits: bias + sum of contributions."""
        X = self._check(X)
        return self.bias + ((X - self.means) / self.scales) @ self.weights

    def score_rows(self, rows: Mapping, serving: bool = True) -> np.ndarray:
        return self.score(self.features_from_rows(rows, serving=serving))

    def group_contributions(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """(n,) summed contribution of each feature group (for explanations)."""
        c = self.contributions(X)
        return {g: c[:, [j for j, f in enumerate(self.features) if f.group == g]].sum(axis=1) for g in self.groups}

    # ---- artifacts ----
    def to_dict(self) -> dict:
        return {"kind": KIND, "format_version": FORMAT_VERSION, "bias": self.bias,
                "features": [f.as_dict() for f in self.features], "means": self.means.tolist(),
                "scales": self.scales.tolist(), "weights": self.weights.tolist(), "metadata": self.metadata}

    @classmethod
    def from_dict(cls, d: Mapping) -> LinearRanker:
        if d.get("kind") != KIND:
            raise RankerError(f"artifact holds kind={d.get('kind')!r}, not {KIND!r}")
        if d.get("format_version") != FORMAT_VERSION:
            raise RankerError(f"format_version={d.get('format_version')!r}, this code reads {FORMAT_VERSION}")
        try:
            return cls([Feature.from_dict(f) for f in d["features"]], np.array(d["means"], dtype=np.float64),
                       np.array(d["scales"], dtype=np.float64), np.array(d["weights"], dtype=np.float64),
                       float(d["bias"]), dict(d.get("metadata", {})))
        except KeyError as exc:
            raise RankerError(f"ranker artifact lacks {exc}") from None

    def save(self, path: Path) -> Path:
        """Write JSON atomically (temp file + rename). Floats round-trip exactly (repr)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.to_dict(), fh, indent=1, allow_nan=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: Path) -> LinearRanker:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise RankerError(f"ranker file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise RankerError(f"ranker file {path} is not valid JSON: {exc}") from None
