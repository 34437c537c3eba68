"""Drift of a recent sample against a reference profile: PSI per feature and a two-sample KS test.

A feature alerts when ``PSI > psi_alert`` or when the KS test rejects (``p < ks_pvalue``) with an
effect of at least ``ks_min_statistic`` (the KS distance), so a large sample cannot alert on a
negligible difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
from scipy.stats import ks_2samp

from recsys.monitoring.profile import Distribution, Profile, bin_shares

#: Floor on bin shares in PSI so an empty bin gives a large, finite term.
PSI_EPS = 1e-4


@dataclass(frozen=True)
class DriftThresholds:
    psi_alert: float = 0.2
    ks_pvalue: float = 0.01
    ks_min_statistic: float = 0.1
    min_rows: int = 30

    def __post_init__(self) -> None:
        for name in ("psi_alert", "ks_pvalue", "ks_min_statistic"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be > 0")


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    reference: str  # profile group compared with: a weekday "0".."6" or "all"
    rows: int
    psi: float
    ks_statistic: float
    ks_pvalue: float
    alert: bool


@dataclass(frozen=True)
class DriftReport:
    day: str | None
    rows: list[FeatureDrift]

    @property
    def alert(self) -> bool:
        return any(r.alert for r in self.rows)

    @property
    def alerts(self) -> list[str]:
        return [r.feature for r in self.rows if r.alert]

    def to_dict(self) -> dict:
        return {"day": self.day, "alert": self.alert, "alerts": self.alerts, "features": [asdict(r) for r in self.rows]}


def psi(expected: Sequence[float], actual: Sequence[float], eps: float = PSI_EPS) -> float:
    """Population stability index ``sum (a - e) * ln(a / e)`` over bins (shares floored at eps)."""
    e = np.clip(np.asarray(expected, dtype=float), eps, None)
    a = np.clip(np.asarray(actual, dtype=float), eps, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def feature_drift(name: str, group: str, ref: Distribution, values: np.ndarray,
                  thresholds: DriftThresholds) -> FeatureDrift:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < thresholds.min_rows:
        return FeatureDrift(name, group, int(values.size), float("nan"), float("nan"), float("nan"), False)
    p = psi(ref.shares, bin_shares(values, ref.edges))
    ks = ks_2samp(values, np.asarray(ref.sample, dtype=float))
    alert = p > thresholds.psi_alert or (ks.pvalue < thresholds.ks_pvalue
                                         and ks.statistic >= thresholds.ks_min_statistic)
    return FeatureDrift(name, group, int(values.size), p, float(ks.statistic), float(ks.pvalue), bool(alert))


def check_drift(
    profile: Profile,
    sample: pl.DataFrame,
    *,
    thresholds: DriftThresholds = DriftThresholds(),
    weekday_column: str | None = "weekday",
    day: str | None = None,
) -> DriftReport:
    """Compare ``sample`` (one day's rows) with ``profile``, feature by feature.

    The reference of each feature is the profile of the sample's weekday (when the sample holds a
    single weekday and the profile has ``min_rows`` rows for it), else the pooled profile.
    """
    weekday = None
    if weekday_column is not None and weekday_column in sample.columns:
        days = sample[weekday_column].unique().to_list()
        weekday = int(days[0]) if len(days) == 1 else None
    rows = []
    for name in profile.features:
        col, j = _parse(name)
        if col not in sample.columns:
            continue
        values = sample[col].list.get(j).to_numpy() if j is not None else sample[col].to_numpy()
        group, ref = profile.distribution(name, weekday, thresholds.min_rows)
        rows.append(feature_drift(name, group, ref, values, thresholds))
    return DriftReport(day, rows)


def _parse(name: str) -> tuple[str, int | None]:
    if name.endswith("]") and "[" in name:
        col, idx = name[:-1].split("[", 1)
        return col, int(idx)
    return name, None


def daily_drift(
    frame: pl.DataFrame,
    day,
    columns: Sequence[str],
    *,
    reference_days: int = 14,
    thresholds: DriftThresholds = DriftThresholds(),
) -> DriftReport:
    """Drift of ``day``'s rows of ``frame`` (a ``day`` Date column) against the profile of the
    ``reference_days`` days before it (the same weekdays where they hold enough rows)."""
    from datetime import timedelta

    from recsys.monitoring.profile import build_profile

    ref = frame.filter((pl.col("day") < day) & (pl.col("day") >= day - timedelta(days=reference_days)))
    profile = build_profile(ref, columns, window=(str(day - timedelta(days=reference_days)), str(day)))
    return check_drift(profile, frame.filter(pl.col("day") == day), thresholds=thresholds, day=str(day))
