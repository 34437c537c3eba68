"""Reference profile: per monitored feature, quantile bin edges and bin shares, saved as JSON.

Seasonality (the choice). A row of the monitored frame summarises one user's whole day, so the
hourly cycle is integrated out. The weekly cycle is handled by comparing like with like: the
profile keeps, besides the pooled distribution ``all``, one distribution per weekday
(``"0"`` = Monday .. ``"6"``), and :func:`recsys.monitoring.drift.check_drift` compares a day with
the profile of the same weekday when it holds at least ``min_rows`` rows, and with the pooled one
otherwise. A sample of raw values (``sample``) is kept per group for the KS test.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from recsys.errors import DataContractError

PROFILE_FORMAT = 1
POOLED = "all"


@dataclass(frozen=True)
class Distribution:
    """One feature's reference distribution: ``len(edges) + 1`` bins (open-ended outer bins)."""

    edges: list[float]
    shares: list[float]
    sample: list[float]
    rows: int


@dataclass(frozen=True)
class Profile:
    """``features[name][group]``: groups are ``"all"`` and weekdays ``"0"`` .. ``"6"``."""

    features: dict[str, dict[str, Distribution]]
    window: tuple[str, str] | None = None
    format: int = PROFILE_FORMAT
    meta: dict[str, str] = field(default_factory=dict)

    def distribution(self, feature: str, weekday: int | None, min_rows: int) -> tuple[str, Distribution]:
        """The same-weekday distribution when it has ``min_rows`` rows, else the pooled one."""
        groups = self.features.get(feature)
        if groups is None:
            raise KeyError(f"feature={feature!r}: not in the profile ({sorted(self.features)})")
        if weekday is not None and str(weekday) in groups and groups[str(weekday)].rows >= min_rows:
            return str(weekday), groups[str(weekday)]
        return POOLED, groups[POOLED]


def bin_shares(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Shares of ``values`` in the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    idx = np.searchsorted(np.asarray(edges, dtype=float), values, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(float)
    return counts / max(counts.sum(), 1.0)


def describe(values: np.ndarray, n_bins: int, sample_size: int, seed: int) -> Distribution:
    """Quantile edges (deduplicated, so ties make fewer bins), bin shares, and a value sample."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise DataContractError("profile: no finite values to describe")
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1]))
    rng = np.random.default_rng(seed)
    sample = values if values.size <= sample_size else rng.choice(values, sample_size, replace=False)
    return Distribution(edges.tolist(), bin_shares(values, edges).tolist(), np.sort(sample).tolist(), int(values.size))


def build_profile(
    frame: pl.DataFrame,
    columns: Sequence[str],
    *,
    weekday_column: str | None = "weekday",
    n_bins: int = 10,
    sample_size: int = 5_000,
    seed: int = 0,
    window: tuple[str, str] | None = None,
) -> Profile:
    """Profile ``columns`` of ``frame`` (the training window's rows), pooled and per weekday.

    List columns (e.g. per-cuisine ``shares``) are profiled per element as ``{column}[{j}]``.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataContractError(f"profile: columns {missing} not in the frame ({frame.columns})")
    if frame.height == 0:
        raise DataContractError("profile: the training window has no rows")
    features: dict[str, dict[str, Distribution]] = {}
    groups = [(POOLED, frame)]
    if weekday_column is not None:
        groups += [(str(k[0]), g) for k, g in frame.group_by(weekday_column)]
    for col in columns:
        for name, values_of in _columns(frame, col):
            described = {}
            for g, part in groups:
                values = np.asarray(values_of(part), dtype=float)
                if g != POOLED and not np.isfinite(values).any():
                    continue  # no value on this weekday: distribution() falls back to the pooled one
                described[g] = describe(values, n_bins, sample_size, seed)
            features[name] = described
    return Profile(features, window)


def _columns(frame: pl.DataFrame, col: str):
    if isinstance(frame.schema[col], (pl.List, pl.Array)):
        width = frame[col].list.len().max() or 0
        return [(f"{col}[{j}]", lambda part, j=j: part[col].list.get(j).to_numpy()) for j in range(width)]
    return [(col, lambda part: part[col].to_numpy())]


def save_profile(profile: Profile, path: Path) -> Path:
    """Write ``profile`` as JSON through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(profile), fh)
    os.replace(tmp, path)
    return path


def load_profile(path: Path) -> Profile:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataContractError(f"profile: cannot read {path}: {exc}") from exc
    if raw.get("format") != PROFILE_FORMAT:
        raise DataContractError(f"profile: format={raw.get('format')!r} in {path}, expected {PROFILE_FORMAT}")
    features = {f: {g: Distribution(**d) for g, d in groups.items()} for f, groups in raw["features"].items()}
    window = tuple(raw["window"]) if raw.get("window") else None
    return Profile(features, window, raw["format"], raw.get("meta", {}))
