"""Drift of one day against reference days: PSI and KS per feature, and the surprise-shift test.

Two kinds of check, both in one :class:`DriftReport`:

* **PSI and KS per monitored feature** (the day's rows against a profile of the reference rows).
  A feature alerts when ``PSI > psi_alert`` or when the KS test rejects (``p < ks_pvalue``) with
  an effect of at least ``ks_min_statistic`` (the KS distance), so a large sample cannot alert
  on a negligible difference. They catch gross shifts of a whole distribution (a broken feature,
  a changed definition); they cannot see 10% of users changing taste, which leaves every
  marginal distribution where it was.
* **Surprise shift** (:func:`surprise_shift`): are users, on this day, less like their own recent
  selves than on the reference days? A one-sided z test on the mean of the per-user
  log-likelihood ratio ``cuisine_llr`` (:mod:`recsys.monitoring.features`), stratified on the
  columns its spread depends on. This is the test that sees taste drift; the measurements that
  chose it are in docs/MONITORING.md.

Seasonality: the reference days of :func:`daily_drift` are the same weekday of earlier weeks,
so neither the weekly cycle of activity nor that of cuisine choice reads as drift; a row sums a
whole day, so the hourly cycle is integrated out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl
from scipy.stats import ks_2samp, norm

from recsys.monitoring.features import DAY, LLR
from recsys.monitoring.profile import Distribution, Profile, bin_shares, build_profile

#: Floor on bin shares in PSI so an empty bin gives a large, finite term.
PSI_EPS = 1e-4
#: The columns the surprise shift stratifies on, and the edges their buckets are cut at (left
#: closed, the last bucket open). ``cuisine_llr`` sums over the day's clicks, so its level moves
#: with every extra click: small counts get a bucket each, or a busier day would read as drift.
STRATUM_EDGES: dict[str, tuple[float, ...]] = {
    "history_clicks": (1, 2, 4, 8, 12, 16, 24, 32, 48, 64),
    "clicks": (2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20, 24, 32),
}
#: Fewest rows a stratum needs on each side to count. Small: the strata are many, and the users
#: in thin strata (many clicks) carry much of the evidence (30 left out a quarter of the rows and
#: a third of the z of a drifted day).
MIN_STRATUM_ROWS = 10


@dataclass(frozen=True)
class DriftThresholds:
    psi_alert: float = 0.2
    ks_pvalue: float = 0.01
    ks_min_statistic: float = 0.1
    min_rows: int = 30
    #: Surprise-shift alert: z above this (one-sided). Days without drift had z with sd 0.9 at
    #: 10,000 users but 1.6 at 100,000 (day-level noise grows with the data): 1 false alert in
    #: 120 days there at 4, none at 4.5 (docs/MONITORING.md).
    surprise_z: float = 4.0

    def __post_init__(self) -> None:
        for name in ("psi_alert", "ks_pvalue", "ks_min_statistic", "surprise_z"):
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
class SurpriseShift:
    """The day's mean ``feature`` minus the reference's, within strata, pooled into one z.

    ``shift``: the pooled difference of means (nats per user-day for ``cuisine_llr``); ``rows``
    and ``reference_rows``: the rows in strata that both sides hold (enough reference rows).
    """

    feature: str
    rows: int
    reference_rows: int
    strata: int
    shift: float
    z: float
    pvalue: float
    alert: bool


@dataclass(frozen=True)
class DriftReport:
    day: str | None
    rows: list[FeatureDrift]
    surprise: SurpriseShift | None = None
    reference_days: tuple[str, ...] = ()

    @property
    def alert(self) -> bool:
        return any(r.alert for r in self.rows) or (self.surprise is not None and self.surprise.alert)

    @property
    def alerts(self) -> list[str]:
        names = [r.feature for r in self.rows if r.alert]
        if self.surprise is not None and self.surprise.alert:
            names.append(f"surprise_shift({self.surprise.feature})")
        return names

    def to_dict(self) -> dict:
        return {"day": self.day, "alert": self.alert, "alerts": self.alerts,
                "reference_days": list(self.reference_days),
                "surprise": asdict(self.surprise) if self.surprise is not None else None,
                "features": [asdict(r) for r in self.rows]}


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


def stratum_buckets(strata: Mapping[str, Sequence[float]] = STRATUM_EDGES) -> list[pl.Expr]:
    """One bucket index per stratum column, ``_s_{column}``: how many edges the value reaches."""
    return [pl.sum_horizontal([pl.col(c) >= e for e in edges]).alias(f"_s_{c}") for c, edges in strata.items()]


def _moments(frame: pl.DataFrame, feature: str, strata: Mapping[str, Sequence[float]]) -> pl.DataFrame:
    return (frame.with_columns(stratum_buckets(strata))
            .group_by([f"_s_{c}" for c in strata])
            .agg(pl.len().alias("n"), pl.col(feature).mean().alias("mean"), pl.col(feature).var(ddof=1).alias("var")))


def surprise_shift(
    day_rows: pl.DataFrame,
    reference_rows: pl.DataFrame,
    *,
    feature: str = LLR,
    strata: Mapping[str, Sequence[float]] = STRATUM_EDGES,
    z_alert: float = DriftThresholds.surprise_z,
    min_stratum_rows: int = MIN_STRATUM_ROWS,
) -> SurpriseShift:
    """One-sided test that ``feature`` is larger on the day than on the reference rows.

    Rows are cut into strata on ``strata`` (column -> bucket edges); within each stratum
    the day's mean is compared with the reference's, and the differences are pooled weighted by
    the day's rows: ``z = sum n_d (m_d - m_r) / sqrt(sum n_d^2 (v_r / n_r + v_d / n_d))``. Why
    strata: heavier users and users with longer baselines have a lower ``cuisine_llr`` by
    construction, and their share moves from day to day (weekends are busier); comparing within
    strata keeps that composition from reading as drift. Strata with fewer than
    ``min_stratum_rows`` rows on either side are left out. One-sided: taste drift can only make
    users less like their past selves.
    """
    day_m = _moments(day_rows, feature, strata)
    ref_m = _moments(reference_rows, feature, strata)
    both = (day_m.join(ref_m, on=[f"_s_{c}" for c in strata], suffix="_r")
            .filter((pl.col("n") >= min_stratum_rows) & (pl.col("n_r") >= min_stratum_rows)))
    if both.height == 0:
        return SurpriseShift(feature, 0, 0, 0, float("nan"), float("nan"), float("nan"), False)
    n, n_r = both["n"].to_numpy().astype(float), both["n_r"].to_numpy().astype(float)
    diff = both["mean"].to_numpy() - both["mean_r"].to_numpy()
    var = n**2 * (both["var_r"].fill_null(0.0).to_numpy() / n_r + both["var"].fill_null(0.0).to_numpy() / n)
    num, den = float(np.sum(n * diff)), float(np.sqrt(np.sum(var)))
    z = num / den if den > 0 else float("nan")
    return SurpriseShift(feature, int(n.sum()), int(n_r.sum()), both.height, num / n.sum(), z,
                         float(norm.sf(z)), bool(np.isfinite(z) and z > z_alert))


def reference_days(frame: pl.DataFrame, day: date, weeks: int) -> list[date]:
    """The same weekday in each of the ``weeks`` weeks before ``day`` that ``frame`` holds rows of."""
    present = set(frame[DAY].unique().to_list())
    return [d for d in (day - timedelta(days=7 * w) for w in range(1, weeks + 1)) if d in present]


def daily_drift(
    frame: pl.DataFrame,
    day: date,
    columns: Sequence[str],
    *,
    reference_weeks: int = 4,
    thresholds: DriftThresholds = DriftThresholds(),
) -> DriftReport:
    """Drift of ``day``'s rows of ``frame`` (user-day features) against the same weekday of the
    ``reference_weeks`` weeks before it: PSI and KS for ``columns``, and the surprise shift.

    No alert, and a report saying so (no rows, no reference days), when the frame holds no
    reference day: nothing to compare with is not evidence of drift.
    """
    ref_days = reference_days(frame, day, reference_weeks)
    current = frame.filter(pl.col(DAY) == day)
    names = tuple(str(d) for d in ref_days)
    if not ref_days or current.height == 0:
        return DriftReport(str(day), [], None, names)
    ref = frame.filter(pl.col(DAY).is_in(ref_days))
    profile = build_profile(ref, columns, window=(str(min(ref_days)), str(max(ref_days))))
    per_feature = check_drift(profile, current, thresholds=thresholds, day=str(day)).rows
    shift = surprise_shift(current, ref, z_alert=thresholds.surprise_z)
    return DriftReport(str(day), per_feature, shift, names)
