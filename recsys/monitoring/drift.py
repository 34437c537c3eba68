"""Drift of one day against reference days: PSI and KS per feature, and the surprise-shift test.

Two kinds of check, both in one :class:`DriftReport`:

* **PSI and KS per monitored feature** (the day's rows against a profile of the reference rows).
  A feature alerts when ``PSI > psi_alert`` or when the KS test rejects (``p < ks_pvalue``) with
  an effect of at least ``ks_min_statistic`` (the KS distance), so a large sample cannot alert
  on a negligible difference. They catch gross shifts of a whole distribution (a broken feature,
  a changed definition); they cannot see 10% of users changing taste, which leaves every
  marginal distribution where it was.
* **Surprise shift** (:func:`surprise_shift`): are users, on this day, less like their own recent
  selves than on the reference days? A one-sided z test on the mean of a per-user log-likelihood
  ratio (:mod:`recsys.monitoring.features`), stratified on the columns its spread depends on.
  The alerting one (:func:`choice_shift`) runs on ``choice_llr``, every impression of the day
  scored under the user's own click model against the population's; the cuisine version
  (``cuisine_llr`` against the same weekday of earlier weeks) is kept as a measured baseline.
  The measurements that chose them are in docs/MONITORING.md.

Seasonality. ``choice_llr`` compares a user with the population on the same day's lists, so the
weekly cycle moves both models alike: its daily mean on days without drift varied no more than
its sampling error, and :func:`choice_shift` pools the ``CHOICE_REFERENCE_DAYS`` days before the day
(the cuisine statistic had a weekly cycle, so :func:`daily_drift` compares it with the same
weekday of earlier weeks). Day-to-day variation that sampling error does not explain (it grows
with the data) is measured on the reference days themselves and scales the z down (the
*dispersion* of :func:`choice_shift`). A row sums a whole day: the hourly cycle is integrated out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta

import numpy as np
import polars as pl
from scipy.stats import ks_2samp, kstwo, norm

from recsys.monitoring.features import CHOICE_LLR, DAY, LLR
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
#: The strata of :func:`choice_shift`: ``choice_llr`` sums over the day's impressions and falls as
#: a user's history grows.
CHOICE_STRATUM_EDGES: dict[str, tuple[float, ...]] = {
    "history_clicks": (1, 2, 4, 8, 16, 32, 64),
    "impressions": (11, 21, 31, 41, 61, 81, 121),
}
#: Days before the checked day pooled as the reference of :func:`choice_shift`.
CHOICE_REFERENCE_DAYS = 7
#: Fewest reference days to measure the day-to-day dispersion on (below: taken as 1).
MIN_DISPERSION_DAYS = 3
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
    #: Surprise-shift alert: z above this (one-sided), after the dispersion scaling of
    #: :func:`choice_shift` (docs/MONITORING.md has the false alerts and detections it gives).
    surprise_z: float = 3.5

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

    ``shift``: the pooled difference of means (nats per user-day); ``rows`` and
    ``reference_rows``: the rows in strata that both sides hold (enough reference rows).
    ``dispersion``: the day-to-day variance of the reference days in units of their sampling
    variance (1 when not measured); ``z`` is the sampling z divided by its square root.
    """

    feature: str
    rows: int
    reference_rows: int
    strata: int
    shift: float
    z: float
    pvalue: float
    alert: bool
    dispersion: float = 1.0


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
                  thresholds: DriftThresholds, *, clusters: int | None = None) -> FeatureDrift:
    """PSI and KS of ``values`` against ``ref``.

    ``clusters``: when the values come in correlated groups (a sampled request logs all the items
    it showed, and a user's or restaurant's value repeats in each), the number of groups, taken
    as the sample size of the KS test and of ``min_rows`` instead of the value count (the
    conservative bound: exact for values constant within a group).
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = values.size if clusters is None else min(clusters, values.size)
    if n < thresholds.min_rows:
        return FeatureDrift(name, group, int(values.size), float("nan"), float("nan"), float("nan"), False)
    p = psi(ref.shares, bin_shares(values, ref.edges))
    ks = ks_2samp(values, np.asarray(ref.sample, dtype=float))
    pvalue = float(ks.pvalue) if n == values.size else _ks_pvalue(float(ks.statistic), n, len(ref.sample))
    alert = p > thresholds.psi_alert or (pvalue < thresholds.ks_pvalue and ks.statistic >= thresholds.ks_min_statistic)
    return FeatureDrift(name, group, int(values.size), p, float(ks.statistic), pvalue, bool(alert))


def _ks_pvalue(statistic: float, n: int, m: int) -> float:
    """Two-sample KS p-value for samples of ``n`` and ``m`` (scipy's asymptotic form)."""
    return float(kstwo.sf(statistic, max(1, round(n * m / (n + m)))))


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
    choice: pl.DataFrame | None = None,
    reference_weeks: int = 4,
    reference_days_back: int = CHOICE_REFERENCE_DAYS,
    thresholds: DriftThresholds = DriftThresholds(),
) -> DriftReport:
    """Drift of ``day``'s rows of ``frame`` (user-day features) against the same weekday of the
    ``reference_weeks`` weeks before it (PSI and KS for ``columns``), and the surprise shift:
    of ``choice`` (:func:`recsys.monitoring.features.user_day_choice` rows) by :func:`choice_shift`
    when given, else of ``cuisine_llr`` against the same weekdays.

    No alert, and a report saying so (no rows, no reference days), when the frame holds no
    reference day: nothing to compare with is not evidence of drift.
    """
    ref_days = reference_days(frame, day, reference_weeks)
    current = frame.filter(pl.col(DAY) == day)
    if not ref_days or current.height == 0:
        per_feature = []
    else:
        ref = frame.filter(pl.col(DAY).is_in(ref_days))
        profile = build_profile(ref, columns, window=(str(min(ref_days)), str(max(ref_days))))
        per_feature = check_drift(profile, current, thresholds=thresholds, day=str(day)).rows
    if choice is None:
        if not per_feature:
            return DriftReport(str(day), [], None, tuple(str(d) for d in ref_days))
        shift = surprise_shift(current, frame.filter(pl.col(DAY).is_in(ref_days)), z_alert=thresholds.surprise_z)
        return DriftReport(str(day), per_feature, shift, tuple(str(d) for d in ref_days))
    pooled = previous_days(choice, day, reference_days_back)
    if not pooled or choice.filter(pl.col(DAY) == day).height == 0:
        return DriftReport(str(day), per_feature, None, ())
    return DriftReport(str(day), per_feature, choice_shift(choice, day, pooled, z_alert=thresholds.surprise_z),
                       tuple(str(d) for d in pooled))


def previous_days(frame: pl.DataFrame, day: date, days: int) -> list[date]:
    """The ``days`` days before ``day`` that ``frame`` holds rows of, newest first."""
    present = set(frame[DAY].unique().to_list())
    return [d for d in (day - timedelta(days=k) for k in range(1, days + 1)) if d in present]


def choice_shift(
    frame: pl.DataFrame,
    day: date,
    reference: Sequence[date],
    *,
    feature: str = CHOICE_LLR,
    strata: Mapping[str, Sequence[float]] = CHOICE_STRATUM_EDGES,
    z_alert: float = DriftThresholds.surprise_z,
    min_stratum_rows: int = MIN_STRATUM_ROWS,
) -> SurpriseShift:
    """:func:`surprise_shift` of ``day``'s rows against the ``reference`` days' pooled, with the
    z scaled down by the reference days' own dispersion.

    Dispersion: each reference day is tested the same way against the other reference days; the
    mean of their squared z is the day-to-day variance in units of the sampling variance (1 when
    days differ only by sampling). The day's z is divided by the square root of it when it is
    above 1 and at least ``MIN_DISPERSION_DAYS`` reference days measure it. A reference day whose
    own z against the others is above ``z_alert`` is left out of the pool and of the dispersion,
    and the others are measured again without it. Why scale: days share
    restaurants, openings and exposure, so daily means vary more than sampling says, and the
    excess grows with the data while sampling error shrinks (a fixed z threshold that holds at
    10,000 users would false-alert at 100,000). The price at 10,000 users, where there is no
    excess to speak of: a noisy estimate from a week of days (measured in docs/MONITORING.md).
    """
    reference = list(reference)

    def test(d: date, refs: Sequence[date]) -> SurpriseShift:
        return surprise_shift(frame.filter(pl.col(DAY) == d), frame.filter(pl.col(DAY).is_in(list(refs))),
                              feature=feature, strata=strata, z_alert=z_alert, min_stratum_rows=min_stratum_rows)

    dispersion = 1.0
    while len(reference) >= MIN_DISPERSION_DAYS:
        loo = {d: test(d, [r for r in reference if r != d]).z for d in reference}
        # A reference day that would alert against the others is a drift candidate, not noise
        # and not a reference (the first day of a drift, when the next day is checked); the
        # others are measured again without it.
        kept = [d for d in reference if not loo[d] > z_alert]
        if kept and len(kept) < len(reference):
            reference = kept
            continue
        zs = np.array([loo[d] for d in reference])
        zs = zs[np.isfinite(zs)]
        if zs.size >= MIN_DISPERSION_DAYS:
            dispersion = max(1.0, float(np.mean(zs**2)))
        break
    raw = test(day, reference)
    z = raw.z / np.sqrt(dispersion)
    return replace(raw, z=float(z), pvalue=float(norm.sf(z)), alert=bool(np.isfinite(z) and z > z_alert),
                   dispersion=dispersion)
