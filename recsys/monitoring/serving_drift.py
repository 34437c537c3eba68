"""Drift of serving's feature samples against the model version's reference profile.

Serving logs the ranker inputs of a sample of requests (:mod:`recsys.monitoring.samples`, long
format); the version's reference profile (:mod:`recsys.monitoring.reference`) describes the same
features on the ranker's training rows. :func:`serving_drift` pivots the samples to one row per
(request, shown item) and compares each feature with the profile by PSI and KS
(:func:`recsys.monitoring.drift.feature_drift`, the thresholds of :class:`DriftThresholds`).

What may alert, and why not everything (each feature gets a :data:`STATUSES` status):

- ``calendar``: an on-demand feature computed from the request time alone (``request_time__*``).
  Its distribution is the sample's clock (which hours and weekday it covers), not the traffic:
  reported, never alerted.
- ``warming_up``: a feature whose history the log did not hold when the reference window began.
  A ``w``-day count at time t sums ``[t - w, t)``; in a log that starts at day 0, it keeps
  growing until day ``w``. When the reference rows start before ``log_start + history``, serving
  values (later, over a fuller window) are larger by construction: the warm-up of the log, not
  drift. History = the window of a daily stats field (its ``_{w}d`` suffix in the version's
  definitions manifest), plus :data:`EXAM_CURVE_DAYS` for the position-debiased fields (their
  examination curve is estimated from every explored request since the log began), and for an
  on-demand feature the longest history of its sources. Reported, not alerted.
- ``model_score``: the profile's model scores (``meta["scores"]``). The profile's ``als_score``
  comes from the ALS model the ranker learnt from (fitted before the ranker window), serving's
  from the version's own ALS (fitted on the whole history): two models, so their score
  distributions differ whatever the traffic. Reported, not alerted. ``ranker_score`` is not
  recomputed from the samples: the ranker one-hot encodes categories serving does not sample.
- ``monitored``: everything else; alerts like the other drift checks.

Seasonality. Each weekday's samples are compared with the profile of the same weekday when it has
``min_rows`` rows, else with the pooled one (as :func:`recsys.monitoring.drift.check_drift`).
The profile has no hourly groups, so a sample's hour mix cannot be matched; measured instead
(docs/MONITORING.md): the profiled features barely depend on the hour (daily snapshots and
static profiles; only the mix of users and restaurants moves with it).

Rows are not independent: a sampled request logs every item it showed, repeating its user's and
restaurant's values. The KS test therefore counts requests, not rows (``clusters`` of
:func:`feature_drift`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

import polars as pl

from recsys.errors import DataContractError
from recsys.monitoring.drift import DriftThresholds, FeatureDrift, feature_drift
from recsys.monitoring.profile import Profile

MONITORED, CALENDAR, WARMING_UP, MODEL_SCORE = "monitored", "calendar", "warming_up", "model_score"
STATUSES = (MONITORED, CALENDAR, WARMING_UP, MODEL_SCORE)
#: Days of explored requests the examination curve (:func:`recsys.features.stats.examination_curve`)
#: takes to settle. Measured on the tiny world: the mean restaurant ``menu_dctr_7d`` rose from 0.21
#: after day 1 to 0.36 after day 10 and 0.39 after day 14 while ``menu_ctr_7d`` stayed at 0.12-0.13.
EXAM_CURVE_DAYS = 14
#: Stats fields that divide by (or are) the expected examinations of the curve.
CURVE_METRICS = ("exam", "dctr")
WEEKDAY = "weekday"
_WINDOW = re.compile(r"_(\d+)d$")


@dataclass(frozen=True)
class ServingFeatureDrift:
    """One feature on one weekday of the sample; ``drift.alert`` is False unless ``monitored``."""

    weekday: int
    status: str
    drift: FeatureDrift

    @property
    def alert(self) -> bool:
        return self.drift.alert


@dataclass(frozen=True)
class ServingDriftReport:
    version: str
    rows: int  # sampled feature vectors (request x shown item)
    requests: int
    covered_days: int  # days of log before the reference window's first snapshot
    features: tuple[ServingFeatureDrift, ...]
    not_profiled: tuple[str, ...]  # sampled, but the profile has no distribution of them

    @property
    def alerts(self) -> list[str]:
        return sorted({f.drift.feature for f in self.features if f.alert})

    @property
    def alert(self) -> bool:
        return bool(self.alerts)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "alert": self.alert, "alerts": self.alerts, "rows": self.rows,
                "requests": self.requests, "covered_days": self.covered_days,
                "not_profiled": list(self.not_profiled),
                "features": [{"weekday": f.weekday, "status": f.status} | asdict(f.drift) for f in self.features]}


def history_days(manifest: Mapping[str, Any], name: str) -> int | None:
    """Days of log a value of ``name`` (``view__field``) needs to be complete; None for a pure
    function of the request time. From the version's definitions manifest
    (:func:`recsys.monitoring.changes.definitions_manifest`)."""
    objects = manifest["objects"]
    view, _, field = name.partition("__")
    if f"feature_view:{view}" in objects:
        return _stats_days(objects[f"feature_view:{view}"]["definition"], name, field)
    if f"on_demand_feature_view:{view}" not in objects:
        raise DataContractError(f"feature {name!r}: view {view!r} is not in the version's definitions manifest")
    sources = objects[f"on_demand_feature_view:{view}"]["definition"]["sources"]
    if not sources:
        return None  # request sources only: the request's clock
    days = [history_days(manifest, f"{v}__{f}") for v, fields in sources.items() for f in fields]
    return max(d for d in days if d is not None)


def _stats_days(definition: Mapping[str, Any], name: str, field: str) -> int:
    if definition["tags"].get("kind") != "daily_stats":
        return 0
    window = _WINDOW.search(field)
    if window is None:
        raise DataContractError(f"feature {name!r}: a daily stats field without a _<days>d window suffix")
    curve = EXAM_CURVE_DAYS if field.split("_")[-2] in CURVE_METRICS else 0
    return int(window.group(1)) + curve


def covered_days(profile: Profile) -> int:
    """Days of log before the snapshot the reference window's first rows read (midnight UTC)."""
    if profile.window is None or "log_start" not in profile.meta:
        raise DataContractError("reference profile: no window or meta.log_start (published before serving "
                                "drift existed: run the nightly to profile the version again)")
    first_snapshot = datetime.fromisoformat(profile.window[0]).date()
    return (first_snapshot - datetime.fromisoformat(profile.meta["log_start"]).date()).days


def feature_status(name: str, profile: Profile, manifest: Mapping[str, Any]) -> str:
    if name in profile.meta.get("scores", "").split(","):
        return MODEL_SCORE
    days = history_days(manifest, name)
    if days is None:
        return CALENDAR
    return WARMING_UP if days > covered_days(profile) else MONITORED


def wide_samples(samples: pl.DataFrame) -> pl.DataFrame:
    """One row per (request, shown item), one column per feature, and the request's UTC weekday."""
    if samples.height == 0:
        raise DataContractError("feature samples: no rows to compare")
    return (samples.pivot(on="feature", index=["request_id", "item_id", "ts"], values="value",
                          aggregate_function="first")
            .with_columns((pl.col("ts").dt.weekday() - 1).alias(WEEKDAY)))


def samples_between(samples: pl.DataFrame, version: str, since: datetime, until: datetime) -> pl.DataFrame:
    """The samples ``version`` served in ``[since, until)``."""
    return samples.filter((pl.col("model_version") == version) & (pl.col("ts") >= since) & (pl.col("ts") < until))


def serving_drift(samples: pl.DataFrame, version: str, profile: Profile, manifest: Mapping[str, Any], *,
                  thresholds: DriftThresholds = DriftThresholds()) -> ServingDriftReport:
    """PSI and KS of every profiled feature in ``samples`` (long format, one version's) against
    ``profile``, per weekday of the sample; statuses as the module doc says."""
    wide = wide_samples(samples)
    names = sorted(set(samples["feature"].unique()) & set(profile.features))
    statuses = {name: feature_status(name, profile, manifest) for name in names}
    rows = []
    for (weekday,), part in sorted(wide.group_by(WEEKDAY), key=lambda kv: kv[0]):
        for name in names:
            rows.append(_compare(name, int(weekday), part, profile, statuses[name], thresholds))
    return ServingDriftReport(version, wide.height, samples["request_id"].n_unique(), covered_days(profile),
                              tuple(rows), tuple(sorted(set(samples["feature"].unique()) - set(profile.features))))


def _compare(name: str, weekday: int, part: pl.DataFrame, profile: Profile, status: str,
             thresholds: DriftThresholds) -> ServingFeatureDrift:
    present = part.filter(pl.col(name).is_not_null() & pl.col(name).is_not_nan())
    group, ref = profile.distribution(name, weekday, thresholds.min_rows)
    drift = feature_drift(name, group, ref, present[name].to_numpy(), thresholds,
                          clusters=present["request_id"].n_unique())
    return ServingFeatureDrift(weekday, status, drift if status == MONITORED else replace(drift, alert=False))
