"""Online quality from the landed impressions log: CTR and order rate per model version and per A/B
arm, over time, with 95% intervals; the lift of treatment over control; regression of each
version against the previous one in registry order.

Rates are per shown slot (``clicks / impressions``, ``orders / impressions``) and per surface:
feed and menu differ by design and are never pooled. Two groupings of the same rows:

- ``version``: by ``policy``, the version (or fallback) that answered each list;
- ``arm``: by the user's A/B arm, whatever answered (intent to treat: the arm's fallbacks count
  against it, as its users saw them). Logs landed before arms existed are all ``control``.

Intervals: a cluster-robust delta method, clustered by user. Clicks are not independent
Bernoulli draws: a user's lists share the user's taste, and the arm is assigned per user, so the
user is the independent unit. A rate is a ratio of sums over users, ``R = sum y_u / sum n_u``,
whose linearised variance is ``K/(K-1) * sum (y_u - R n_u)^2 / N^2`` (K users, N impressions).
It needs no resampling, so the report and its alert are deterministic and cost one pass over the
log; a bootstrap over users gives the same intervals at B times the cost. It is a large-sample
interval: with few users (the report shows how many) or no clicks it is too narrow.

Lift: ``subject / baseline - 1`` with the interval of the log ratio (delta method,
``var log R ~ var R / R^2``), exponentiated: asymmetric like the ratio itself. Arms are disjoint
sets of users, hence independent. Two versions may share users (over time); treating them as
independent overstates the variance when a user's rates agree across versions: conservative.

Regression: a version is flagged when its rate is below the previous version's (the nearest
earlier one in registry order with lists in the log, same surface) by more than ``tolerance``
(relative) AND significantly (the lift's interval lies below 0). Versions serve at different
times, so this comparison also carries whatever changed in between; the arms' is the fair one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import polars as pl
from scipy.stats import norm

from recsys.contracts.schemas import ARMS
from recsys.errors import DataContractError

Z95 = float(norm.ppf(0.975))
METRICS = {"ctr": "clicked", "order_rate": "ordered"}
GROUPINGS = {"version": "policy", "arm": "arm"}
CONTROL, TREATMENT = ARMS
COLUMNS = ("request_id", "ts", "user_id", "surface", "policy", "arm", "clicked", "ordered")
METHOD = "cluster-robust delta method, clustered by user (95%)"


def scan_impressions(path: Path) -> pl.LazyFrame:
    """The landed log (a Parquet file, or every ``*.parquet`` under a directory), with ``arm``
    filled as ``control`` where it is missing (logs landed before arms existed)."""
    path = Path(path)
    files = sorted(str(p) for p in path.rglob("*.parquet")) if path.is_dir() else [str(path)]
    if not files or not Path(files[0]).is_file():
        raise DataContractError(f"{path}: no impressions log (*.parquet) here; run the sink (python -m jobs.sink)")
    # per file, then stacked by name: days landed before and after arms existed mix
    frame = pl.concat([pl.scan_parquet(f) for f in files], how="diagonal_relaxed")
    names = frame.collect_schema().names()
    missing = [c for c in COLUMNS if c not in names and c != "arm"]
    if missing:
        raise DataContractError(f"{path}: impressions log lacks column(s) {missing}")
    arm = pl.col("arm").fill_null(CONTROL) if "arm" in names else pl.lit(CONTROL)
    return frame.select(*[c for c in COLUMNS if c != "arm"], arm.alias("arm"))


def rate_table(log: pl.LazyFrame | pl.DataFrame, by: Sequence[str], cluster: str = "user_id") -> pl.DataFrame:
    """Per group of ``by``: impressions, lists, users, clicks, orders, and each rate with its
    standard error and 95% interval (module doc). ``by``: at least one column."""
    by = list(by)
    if not by:
        raise ValueError("rate_table: group by at least one column (e.g. surface)")
    users = (log.lazy().group_by([*by, cluster])
             .agg(n=pl.len(), lists=pl.col("request_id").n_unique(),
                  **{m: pl.col(col).cast(pl.Int64).sum() for m, col in METRICS.items()}))
    n_total = pl.col("n").sum().over(by)
    users = users.with_columns(**{f"_{m}_resid": (pl.col(m) - pl.col(m).sum().over(by) / n_total * pl.col("n"))
                                  for m in METRICS})
    k = pl.len()
    table = users.group_by(by).agg(
        impressions=pl.col("n").sum(), lists=pl.col("lists").sum(), users=k,
        clicks=pl.col("ctr").sum(), orders=pl.col("order_rate").sum(),
        **{f"_{m}_ss": (pl.col(f"_{m}_resid") ** 2).sum() for m in METRICS})
    rates = []
    for m, count in (("ctr", "clicks"), ("order_rate", "orders")):
        rate = pl.col(count) / pl.col("impressions")
        se = pl.when(pl.col("users") > 1).then(
            (pl.col("users") / (pl.col("users") - 1) * pl.col(f"_{m}_ss")).sqrt() / pl.col("impressions"))
        rates += [rate.alias(m), se.alias(f"{m}_se")]
    table = table.with_columns(rates).with_columns(
        expr for m in METRICS for expr in (
            (pl.col(m) - Z95 * pl.col(f"{m}_se")).clip(0.0, 1.0).alias(f"{m}_lo"),
            (pl.col(m) + Z95 * pl.col(f"{m}_se")).clip(0.0, 1.0).alias(f"{m}_hi")))
    return table.drop([f"_{m}_ss" for m in METRICS]).sort(by).collect()


@dataclass(frozen=True)
class Comparison:
    """``subject`` against ``baseline`` on one surface and metric: relative lift and difference."""

    surface: str
    metric: str
    subject: str
    baseline: str
    subject_rate: float
    baseline_rate: float
    lift: float | None  # subject / baseline - 1; None when the baseline rate is 0
    lift_lo: float | None
    lift_hi: float | None
    diff: float
    diff_lo: float | None
    diff_hi: float | None
    regression: bool = False

    @property
    def significant(self) -> bool:
        return self.lift_lo is not None and (self.lift_lo > 0 or self.lift_hi < 0)


def compare(surface: str, metric: str, subject: dict, baseline: dict, tolerance: float | None = None) -> Comparison:
    """Rows of :func:`rate_table` (as dicts) compared; ``tolerance`` set: flag a regression."""
    a, b = subject[metric], baseline[metric]
    sa, sb = subject[f"{metric}_se"], baseline[f"{metric}_se"]
    known = sa is not None and sb is not None
    diff_se = math.hypot(sa, sb) if known else None
    lift = lo = hi = None
    if a > 0 and b > 0:
        lift = a / b - 1
        if known:
            spread = Z95 * math.hypot(sa / a, sb / b)
            lo, hi = a / b * math.exp(-spread) - 1, a / b * math.exp(spread) - 1
    regression = (tolerance is not None and lift is not None and hi is not None and lift < -tolerance and hi < 0)
    return Comparison(surface=surface, metric=metric, subject=subject["group"], baseline=baseline["group"],
                      subject_rate=a, baseline_rate=b, lift=lift, lift_lo=lo, lift_hi=hi, diff=a - b,
                      diff_lo=None if diff_se is None else a - b - Z95 * diff_se,
                      diff_hi=None if diff_se is None else a - b + Z95 * diff_se, regression=regression)


@dataclass(frozen=True)
class QualityReport:
    period: str  # "day" | "hour"
    series: pl.DataFrame  # per surface, grouping (version | arm), group and period
    totals: pl.DataFrame  # the same over the whole window
    lifts: tuple[Comparison, ...]  # treatment over control, per surface and metric
    versions: tuple[Comparison, ...]  # each version over the previous one (registry order)
    tolerance: float

    @property
    def regressions(self) -> tuple[Comparison, ...]:
        return tuple(c for c in self.versions if c.regression)

    @property
    def alert(self) -> bool:
        return bool(self.regressions)

    def to_dict(self) -> dict:
        return {"period": self.period, "method": METHOD, "tolerance": self.tolerance, "alert": self.alert,
                "totals": self.totals.to_dicts(), "series": self.series.to_dicts(),
                "lifts": [asdict(c) for c in self.lifts], "versions": [asdict(c) for c in self.versions]}


def _grouped(log: pl.LazyFrame, period: str | None) -> pl.DataFrame:
    """:func:`rate_table` by surface x (version | arm) x period, stacked with a ``by`` column."""
    tables = []
    for by, column in GROUPINGS.items():
        keyed = log.with_columns(by=pl.lit(by), group=pl.col(column))
        if period is not None:
            keyed = keyed.with_columns(period=pl.col("ts").dt.truncate(period))
        tables.append(rate_table(keyed, ["surface", "by", "group", *(["period"] if period else [])]))
    return pl.concat(tables)


def quality_report(log: pl.LazyFrame | pl.DataFrame, version_order: Sequence[str], *, hourly: bool = False,
                   tolerance: float = 0.05) -> QualityReport:
    """The whole report from a landed log (:func:`scan_impressions`) and the registry's versions
    oldest first (``Registry.list_versions``)."""
    log = log.lazy()
    totals = _grouped(log, None)
    series = _grouped(log, "1h" if hourly else "1d")
    lifts, versions = [], []
    rank = {v: i for i, v in enumerate(version_order)}
    for surface in totals["surface"].unique().sort().to_list():
        rows = totals.filter(pl.col("surface") == surface)
        arms = {r["group"]: r for r in rows.filter(pl.col("by") == "arm").to_dicts()}
        if CONTROL in arms and TREATMENT in arms:
            lifts += [compare(surface, m, arms[TREATMENT], arms[CONTROL]) for m in METRICS]
        served = sorted((r for r in rows.filter(pl.col("by") == "version").to_dicts() if r["group"] in rank),
                        key=lambda r: rank[r["group"]])
        for previous, current in zip(served, served[1:]):
            versions += [compare(surface, m, current, previous, tolerance) for m in METRICS]
    return QualityReport(period="hour" if hourly else "day", series=series, totals=totals, lifts=tuple(lifts),
                         versions=tuple(versions), tolerance=tolerance)
