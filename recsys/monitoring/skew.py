"""Training/serving skew: the feature values serving used against Feast's offline values.

Serving logs a sample of the ranker inputs it used (:mod:`recsys.monitoring.samples`, long
format). For every sampled (user_id, restaurant_id, item_id, ts) this module asks Feast's offline
store for the same features at the same time (``get_historical_features``, point-in-time: the
latest row with ``event_timestamp <= ts`` within the view's ttl; on-demand features computed by
Feast from the request time ``ts`` and their source views), i.e. the value training would have
used for that request, and compares, per feature:

- ``mismatch_share``: rows whose values differ by more than ``abs_tol + rel_tol * |offline|``,
  a missing value (NaN) on one side only counting as a mismatch;
- ``mean_abs_diff`` over the rows where both sides have a value, and a few example rows.

A feature alerts when its mismatch share exceeds ``max_mismatch_share``. Names without a view
prefix (``als_score``: the model's score) are not Feast features; they, and names whose view or
field the Feast registry does not know, are skipped and listed with the reason.

Time semantics (why the sample's ``ts`` matters). Serving reads the *latest materialized* row:
the stats snapshot stamped at the midnight ending the previous day, once the nightly has
materialized it. Offline, at ``ts``, the point-in-time row is the latest snapshot stamped at or
before ``ts``. The two agree for a request made after the materialization of the snapshot that is
current at ``ts`` (and before the next one is stamped). A request served between a snapshot's
stamp time and its materialization (serving still on yesterday's values) shows as a mismatch of
the stats features: that lag is a real skew and is reported as such. Retrieval moves rows sharing
a timestamp a few microseconds earlier (:func:`recsys.training.ranker_data.retrieve`), so a
request stamped exactly at a snapshot's time would see the previous one: tests sample at least a
second after the snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from recsys.errors import DataContractError, NotFoundError
from recsys.monitoring.samples import SCHEMA
from recsys.training.ranker_data import ENTITY_KEYS, RetrievalCall, retrieve

EXAMPLES = 3
_REQUEST = ("request_id", "user_id", "restaurant_id", "item_id", "ts")


@dataclass(frozen=True)
class SkewThresholds:
    """Values agree when ``|online - offline| <= abs_tol + rel_tol * |offline|`` (float32 round trips
    stay well inside the defaults); a feature alerts above ``max_mismatch_share`` mismatched rows."""

    abs_tol: float = 1e-6
    rel_tol: float = 1e-5
    max_mismatch_share: float = 0.01

    def __post_init__(self) -> None:
        for name in ("abs_tol", "rel_tol"):
            if not getattr(self, name) >= 0:
                raise DataContractError(f"skew threshold {name}={getattr(self, name)}: must be >= 0")
        if not 0.0 <= self.max_mismatch_share < 1.0:
            raise DataContractError(f"skew threshold max_mismatch_share={self.max_mismatch_share}: must be in [0, 1)")


@dataclass(frozen=True)
class FeatureSkew:
    feature: str
    rows: int
    mismatches: int
    mean_abs_diff: float | None  # None: no row with a value on both sides
    examples: tuple[dict[str, Any], ...]
    alert: bool

    @property
    def mismatch_share(self) -> float:
        return self.mismatches / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class SkewReport:
    """Per compared feature, and the features skipped with the reason."""

    features: tuple[FeatureSkew, ...]
    skipped: dict[str, str]
    rows: int  # sampled feature vectors (request x item)
    thresholds: SkewThresholds

    @property
    def alerts(self) -> list[str]:
        return [f.feature for f in self.features if f.alert]

    @property
    def alert(self) -> bool:
        return bool(self.alerts)

    def to_dict(self) -> dict[str, Any]:
        return {"alert": self.alert, "alerts": self.alerts, "rows": self.rows, "thresholds": asdict(self.thresholds),
                "skipped": self.skipped,
                "features": [asdict(f) | {"mismatch_share": f.mismatch_share} for f in self.features]}


# ---------------------------------------------------------------- reading samples
def sample_files(path: Path) -> list[Path]:
    """One Parquet file, or every ``*.parquet`` under a directory; hidden files and folders (a
    writer's temporaries) skipped."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise NotFoundError(f"feature samples {path}: no such file or directory")
    files = sorted(p for p in path.rglob("*.parquet")
                   if not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise NotFoundError(f"feature samples {path}: no *.parquet files in it")
    return files


def read_samples(path: Path) -> pl.DataFrame:
    """The feature sample at ``path`` (:func:`sample_files`), checked against the contract's
    columns (:data:`recsys.monitoring.samples.SCHEMA`) and cast to its types."""
    frames = []
    for file in sample_files(path):
        try:
            frame = pl.read_parquet(file)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise DataContractError(f"feature samples {file}: cannot read: {exc}") from None
        missing = [c for c in SCHEMA if c not in frame.columns]
        if missing:
            raise DataContractError(f"feature samples {file}: lacks columns {missing} (contract: "
                                    "recsys.monitoring.samples.SCHEMA)")
        try:
            frames.append(frame.select(pl.col(c).cast(t) for c, t in SCHEMA.items()))
        except pl.exceptions.PolarsError as exc:
            raise DataContractError(f"feature samples {file}: does not cast to the contract's types: {exc}") from None
    return pl.concat(frames)


# ---------------------------------------------------------------- which features, which calls
def retrieval_plan(store, features: Iterable[str]) -> tuple[list[RetrievalCall], dict[str, str]]:
    """One retrieval per view of the sampled ``view__name`` features, and the names skipped (why).

    Per view, as the training set is built (:func:`recsys.training.ranker_data.retrieval_calls`
    says why one call per view): a feature view with its join keys; an on-demand view with the
    features of its source views and their keys; a request-only on-demand view beside one
    feature of a sampled feature view (Feast's offline retrieval needs one).
    """
    by_view: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    for name in sorted(set(features)):
        view, sep, field = name.partition("__")
        if sep and field:
            by_view.setdefault(view, []).append(field)
        else:
            skipped[name] = "not a Feast feature (no view__ prefix): computed by the model at serving"
    views = {v.name: v for v in store.list_feature_views()}
    odfvs = {v.name: v for v in store.list_on_demand_feature_views()}
    sampled = [views[v] for v in by_view if v in views]
    calls = []
    for view, fields in by_view.items():
        definition = views.get(view) or odfvs.get(view)
        known = {f.name for f in definition.features} if definition is not None else set()
        for f in fields:
            if definition is None:
                skipped[f"{view}__{f}"] = f"view {view!r} is not in the Feast registry"
            elif f not in known:
                skipped[f"{view}__{f}"] = f"view {view!r} has no field {f!r}"
        refs = tuple(f"{view}:{f}" for f in fields if f in known)
        if not refs:
            continue
        if view in views:
            calls.append(RetrievalCall(refs, tuple(definition.join_keys), f"{view}__"))
            continue
        sources = definition.source_feature_view_projections
        if sources:
            refs += tuple(f"{n}:{f.name}" for n, p in sources.items() for f in p.features)
            keys = tuple(dict.fromkeys(k for n in sources for k in views[n].join_keys))
        elif sampled:
            companion = min(sampled, key=lambda v: len(v.features))
            refs += (f"{companion.name}:{companion.features[0].name}",)
            keys = tuple(companion.join_keys)
        else:
            skipped.update({f"{view}__{f}": "a request-only on-demand view needs a sampled feature view beside it"
                            for f in fields})
            continue
        calls.append(RetrievalCall(refs, keys, f"{view}__"))
    return calls, skipped


# ---------------------------------------------------------------- offline values and comparison
def offline_values(store, sample: pl.DataFrame, calls: Sequence[RetrievalCall]) -> pl.DataFrame:
    """The sample's rows with column ``offline``: Feast's point-in-time value of the same feature
    for the same entities at the same ``ts`` (null where the offline store has none)."""
    requests = sample.select(*ENTITY_KEYS, "ts").unique()
    parts = []
    for call in calls:
        values, _ = retrieve(store, requests, call)
        columns = [c for c in values.columns if c.startswith(call.prefix)]
        for c in columns:
            if not (values.schema[c].is_numeric() or values.schema[c] == pl.Boolean):
                raise DataContractError(f"feature {c} is {values.schema[c]} offline: samples hold numbers only")
        long = (values.with_columns(pl.col(c).cast(pl.Float64) for c in columns)
                .unpivot(on=columns, index=[*call.keys, "ts"], variable_name="feature", value_name="offline"))
        part = sample.filter(pl.col("feature").is_in(columns))
        parts.append(part.join(long, on=[*call.keys, "ts", "feature"], how="left"))
    if not parts:
        return sample.clear().with_columns(pl.lit(None, pl.Float64).alias("offline"))
    return pl.concat(parts)


def compare(joined: pl.DataFrame, thresholds: SkewThresholds) -> list[FeatureSkew]:
    """Per feature of ``joined`` (sample rows with ``value`` online and ``offline``), in name order."""
    online_missing = pl.col("value").is_null() | pl.col("value").is_nan()
    offline_missing = pl.col("offline").is_null() | pl.col("offline").is_nan()
    both = ~online_missing & ~offline_missing
    diff = (pl.col("value") - pl.col("offline")).abs()
    flagged = joined.with_columns(
        ((online_missing != offline_missing)
         | (both & (diff > thresholds.abs_tol + thresholds.rel_tol * pl.col("offline").abs()))).alias("mismatch"),
        pl.when(both).then(diff).alias("diff"))
    out = []
    for (feature,), rows in flagged.sort("feature").group_by("feature", maintain_order=True):
        mismatches = int(rows["mismatch"].sum())
        mean = rows["diff"].mean()
        examples = (rows.filter(pl.col("mismatch")).head(EXAMPLES)
                    .select(*_REQUEST, pl.col("value").alias("online"), "offline"))
        out.append(FeatureSkew(
            feature=feature, rows=rows.height, mismatches=mismatches,
            mean_abs_diff=None if mean is None or math.isnan(mean) else float(mean),
            examples=tuple({k: (v.isoformat() if k == "ts" else _plain(v)) for k, v in r.items()}
                           for r in examples.iter_rows(named=True)),
            alert=mismatches > thresholds.max_mismatch_share * rows.height))
    return out


def _plain(value: Any) -> Any:
    """JSON-safe: NaN (a missing value) as None."""
    return None if isinstance(value, float) and math.isnan(value) else value


def check_skew(store, sample: pl.DataFrame, thresholds: SkewThresholds = SkewThresholds()) -> SkewReport:
    """The skew report of a feature sample (:func:`read_samples`) against Feast's offline store."""
    if sample.height == 0:
        raise DataContractError("feature samples: no rows to compare")
    calls, skipped = retrieval_plan(store, sample["feature"].unique().to_list())
    joined = offline_values(store, sample.filter(~pl.col("feature").is_in(list(skipped))), calls)
    vectors = sample.select("request_id", "item_id").n_unique()
    return SkewReport(tuple(compare(joined, thresholds)), skipped, vectors, thresholds)
