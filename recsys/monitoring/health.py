"""Health checks of a model version's outputs: NaN/inf vectors and scores, vector norms, empty
lists, age.

Each check is a pure function of frames (so the same check runs on a version's artifacts and on
rows read back from the online store) returning :class:`HealthAlert` s; :func:`check_version`
runs them all on ``models/<version>/`` (layout of :mod:`recsys.registry.publish`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

# artifact -> (key column, vector/score list columns checked for NaN/inf, id list columns checked non-empty)
CHECKS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "embeddings/user_embedding.parquet": ("user_id", ("embedding",), ()),
    "embeddings/item_embedding.parquet": ("item_id", ("embedding",), ()),
    "precompute/user_top_restaurants.parquet": ("user_id", ("scores",), ("restaurant_ids",)),
    "precompute/restaurant_candidates.parquet": ("restaurant_id", ("scores",), ("item_ids",)),
}
#: Vector columns whose row norms are checked: a vector far longer than the rest dominates every
#: list it enters (the gate's absolute bound misses one that is long only relative to the others).
#: Zero vectors are not anomalies here: ALS leaves the rows of entities without interactions in
#: the training window at zero (about 1 in 8 users and 1 in 4 items of the tiny world).
NORM_CHECKED = {"embeddings/user_embedding.parquet": "embedding", "embeddings/item_embedding.parquet": "embedding"}
#: A row norm above this many times the artifact's median non-zero norm alerts.
MAX_NORM_RATIO = 100.0


@dataclass(frozen=True)
class HealthAlert:
    check: str  # "non_finite", "norm", "empty_list", "model_age", "missing_artifact"
    source: str
    column: str
    count: int
    examples: list[int]
    message: str


def non_finite_rows(frame: pl.DataFrame, key: str, column: str, source: str) -> list[HealthAlert]:
    """Rows of ``frame`` whose list column ``column`` holds a NaN or an inf."""
    bad = frame.filter(pl.col(column).list.eval(~pl.element().cast(pl.Float64).is_finite()).list.any())
    if bad.height == 0:
        return []
    ids = bad[key].head(5).to_list()
    return [HealthAlert("non_finite", source, column, bad.height, ids,
                        f"{source}: {bad.height} rows with NaN/inf in {column} ({key} {ids}...)")]


def norm_outliers(frame: pl.DataFrame, key: str, column: str, source: str,
                  max_ratio: float = MAX_NORM_RATIO) -> list[HealthAlert]:
    """Rows whose vector ``column`` is longer than ``max_ratio`` x the median non-zero norm (finite
    rows only: non-finite ones are :func:`non_finite_rows`' to report)."""
    norms = frame.select(pl.col(key), pl.col(column).list.eval(pl.element().cast(pl.Float64) ** 2).list.sum()
                         .sqrt().alias("norm")).filter(pl.col("norm").is_finite() & (pl.col("norm") > 0))
    if norms.height == 0:
        return []
    median = float(norms["norm"].median())
    bad = norms.filter(pl.col("norm") > max_ratio * median)
    if bad.height == 0:
        return []
    ids = bad[key].head(5).to_list()
    return [HealthAlert("norm", source, column, bad.height, ids,
                        f"{source}: {bad.height} rows with a {column} norm above {max_ratio:g}x the median "
                        f"{median:.3g} ({key} {ids}...)")]


def empty_rows(frame: pl.DataFrame, key: str, column: str, source: str) -> list[HealthAlert]:
    """Rows of ``frame`` whose list column ``column`` is empty or null."""
    bad = frame.filter(pl.col(column).is_null() | (pl.col(column).list.len() == 0))
    if bad.height == 0:
        return []
    ids = bad[key].head(5).to_list()
    return [HealthAlert("empty_list", source, column, bad.height, ids,
                        f"{source}: {bad.height} rows with an empty {column} ({key} {ids}...)")]


def model_age(trained_until: datetime, now: datetime, max_age: timedelta) -> list[HealthAlert]:
    age = now - trained_until
    if age <= max_age:
        return []
    return [HealthAlert("model_age", "registry", "trained_until", int(age.total_seconds()), [],
                        f"model trained until {trained_until.isoformat()} is {age} old (max {max_age})")]


def check_frame(frame: pl.DataFrame, source: str) -> list[HealthAlert]:
    """All checks of ``CHECKS[source]`` on one frame (an artifact or online rows of that view)."""
    key, finite_cols, list_cols = CHECKS[source]
    alerts: list[HealthAlert] = []
    for col in finite_cols:
        if col in frame.columns:
            alerts += non_finite_rows(frame, key, col, source)
    if NORM_CHECKED.get(source) in frame.columns:
        alerts += norm_outliers(frame, key, NORM_CHECKED[source], source)
    for col in list_cols:
        if col in frame.columns:
            alerts += empty_rows(frame, key, col, source)
    return alerts


def check_version(version_dir: Path, trained_until: datetime | None = None, *,
                  now: datetime | None = None, max_age: timedelta = timedelta(days=2)) -> list[HealthAlert]:
    """Health alerts of the version stored at ``version_dir`` (empty list: healthy)."""
    alerts: list[HealthAlert] = []
    for source in CHECKS:
        path = version_dir / source
        if not path.exists():
            alerts.append(HealthAlert("missing_artifact", source, "", 0, [], f"{path}: missing"))
            continue
        alerts += check_frame(pl.read_parquet(path), source)
    if trained_until is not None:
        alerts += model_age(trained_until, now or datetime.now(UTC), max_age)
    return alerts


def to_dicts(alerts: list[HealthAlert]) -> list[dict]:
    return [asdict(a) for a in alerts]
