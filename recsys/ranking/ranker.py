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

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
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


def _transform(x: np.ndarray, transform: str) -> np.ndarray:
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


def design_matrix(features: Sequence[Feature], rows: Mapping, serving: bool = True) -> np.ndarray:
    """(n, len(features)) float64 design matrix of ``rows`` (see :class:`Feature`).

    ``serving=True`` fixes position = 0 for every row (the rows' ``position`` is ignored);
    ``serving=False`` (training) reads ``rows["position"]``, which must then be present.
    """
    n = _n_rows(rows)
    if not serving and POSITION not in rows:
        raise RankerError("training rows need a 'position' column (serving=False)")
    X = np.empty((n, len(features)), dtype=np.float64)
    cache: dict[tuple[str, str], np.ndarray] = {}

    def col(name: str, kind: str) -> np.ndarray:
        if (name, kind) not in cache:
            cache[(name, kind)] = _column(rows, name, n, kind)
        return cache[(name, kind)]

    position = np.zeros(n) if serving else np.nan_to_num(col(POSITION, "float"), nan=0.0)
    for j, f in enumerate(features):
        if f.kind == "numeric":
            raw = col(f.column, "float")
            X[:, j] = _transform(np.where(np.isnan(raw), f.default, raw), f.transform)
        elif f.kind == "missing":
            X[:, j] = _is_null(rows.get(f.column), n)
        elif f.kind == "onehot":
            X[:, j] = col(f.column, "object") == f.value
        elif f.kind == "onehot_x_hour":
            hour = col(HOUR, "float")
            lo, hi = f.hours
            X[:, j] = (col(f.column, "object") == f.value) & (hour >= lo) & (hour < hi)
        elif f.kind == "position":
            last = max(int(g.value) for g in features if g.kind == "position")
            X[:, j] = np.minimum(position, last) == int(f.value)
        else:
            raise RankerError(f"feature {f.name!r}: unknown kind {f.kind!r}")
    return X


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
        return design_matrix(self.features, rows, serving=serving)

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
