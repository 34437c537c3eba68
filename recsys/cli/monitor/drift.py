"""`recsys monitor drift`."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import polars as pl
import typer
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from rich.table import Table

from recsys.cli import get_config
from recsys.cli.monitor import console as _console
from recsys.cli.monitor import monitor
from recsys.cli.monitor import table_dir as _table_dir
from recsys.cli.monitor import write_json as _write_json
from recsys.errors import DataContractError, NotFoundError


@monitor.command("drift")
def drift_cmd(
    ctx: typer.Context,
    day: str | None = typer.Option(None, help="Day to check (YYYY-MM-DD); default: the last full day of the log."),
    baseline_days: int | None = typer.Option(None, min=1, help="Days of a user's clicks the cuisine features "
                                             "(PSI/KS) compare their day with."),
    choice_baseline_days: int | None = typer.Option(None, min=1, help="Days of impressions the users' click models "
                                                    "of the choice statistic are fitted on (default 14)."),
    reference_days: int | None = typer.Option(None, min=1, help="Days before the checked day pooled as the "
                                              "reference of the choice shift (default 7)."),
    reference_weeks: int | None = typer.Option(None, min=1, help="PSI/KS: compare with the same weekday of this "
                                               "many weeks."),
    z_alert: float | None = typer.Option(None, help="Alert when the surprise-shift z exceeds this."),
    psi_alert: float | None = typer.Option(None, help="Alert when a feature's PSI exceeds this."),
    ks_pvalue: float | None = typer.Option(None, help="KS p-value below which (with the minimum effect) to alert."),
    ks_min_statistic: float | None = typer.Option(None, help="Minimum KS distance for a KS alert."),
    samples: Path | None = typer.Option(None, help="Serving's feature samples (a Parquet file or a directory) to "
                                        "compare with the version's reference profile; default: where the sink "
                                        "lands them (skipped when there are none)."),
    version: str | None = typer.Option(None, help="Model version of the samples and the profile; default: the "
                                       "serving one."),
    retrain: bool = typer.Option(True, "--retrain/--no-retrain", help="On an alert, run monitoring.retrain_command."),
    out: Path | None = typer.Option(None, help="Write the report as JSON here."),
    prometheus: Path | None = typer.Option(None, help="Write Prometheus gauges to this textfile."),
) -> None:
    """Taste drift of one day: each user's impressions of the day scored under their own click
    model of the previous two weeks against the population's, compared with the days before
    (surprise shift of choice_llr), and PSI and KS per monitored feature against the same weekday
    of earlier weeks; and serving's feature samples of the day (default: their last day) against the
    model version's reference profile (PSI and KS per ranker input). Defaults come from the
    `monitoring` section of the configuration."""
    from recsys.monitoring.drift import CHOICE_REFERENCE_DAYS, DriftThresholds, daily_drift
    from recsys.monitoring.features import CHOICE_BASELINE_DAYS, MONITORED, user_day_choice, user_day_features
    from recsys.monitoring.retrain import run_retrain

    config = get_config(ctx)
    m = config.monitoring
    baseline_days = baseline_days or m.baseline_days
    thresholds = DriftThresholds(_pick(psi_alert, m.psi_alert), _pick(ks_pvalue, m.ks_pvalue),
                                 _pick(ks_min_statistic, m.ks_min_statistic), m.min_rows,
                                 _pick(z_alert, m.surprise_z_alert))
    reference_days = reference_days or CHOICE_REFERENCE_DAYS
    src = _table_dir(config)
    impressions, restaurants = pl.scan_parquet(src / "impressions.parquet"), pl.scan_parquet(src / "restaurants.parquet")
    frame = user_day_features(impressions, restaurants, baseline_days)
    if frame.height == 0:
        raise DataContractError(f"drift: no user-day rows in {src / 'impressions.parquet'} (no clicks after the "
                                f"first {baseline_days} days of the log)")
    target = date.fromisoformat(day) if day else frame["day"].max() - timedelta(days=1)
    # Only the checked day and its reference days: the choice rows cost a pass over a window each.
    choice = user_day_choice(impressions, restaurants, [target - timedelta(days=k) for k in range(reference_days + 1)],
                             choice_baseline_days or CHOICE_BASELINE_DAYS)
    report = daily_drift(frame, target, MONITORED, choice=choice, reference_days_back=reference_days,
                         reference_weeks=reference_weeks or m.reference_weeks, thresholds=thresholds)
    _print(report)
    serving = _serving_check(config, samples, version, day, thresholds)
    alert = report.alert or (serving is not None and serving.alert)
    result = report.to_dict() | {"alert": alert, "serving": serving.to_dict() if serving is not None else None}
    run = None
    if alert and retrain:
        if m.retrain_command is None:
            _console.print("no monitoring.retrain_command configured: not retraining")
        else:
            _console.print(f"drift alert: running {' '.join(m.retrain_command)}")
            run = run_retrain(m.retrain_command, m.retrain_timeout_seconds)
            status = run.error or f"exit status {run.exit_status}"
            _console.print(f"retrain: {'[green]' if run.ok else '[red]'}{status}")
            result["retrain"] = run.to_dict()
    _write_json(out, result)
    if prometheus is not None:
        _write_gauges(prometheus, report, serving, run)
    if alert:
        raise typer.Exit(1)


def _serving_check(config, samples: Path | None, version: str | None, day: str | None, thresholds):
    """The serving-drift report of one day of samples, or None (printed) when there are none and
    --samples was not given."""
    from recsys.monitoring.changes import load_manifest
    from recsys.monitoring.profile import load_profile
    from recsys.monitoring.serving_drift import samples_between, serving_drift
    from recsys.monitoring.skew import read_samples
    from recsys.registry import Registry
    from recsys.registry.publish import DEFINITIONS_MANIFEST, REFERENCE_PROFILE
    from recsys.serving.settings import resolve_dir, serving_config

    path = samples or resolve_dir(config.data_dir, serving_config(config).feature_samples_dir)

    def missing(what: str) -> None:
        """Explicit --samples: an error; the default location: nothing to check yet."""
        if samples is not None:
            raise NotFoundError(what)
        _console.print(f"[yellow]serving drift: {what}: skipped[/yellow]")

    try:
        frame = read_samples(path)
    except NotFoundError:
        return missing(f"no feature samples under {path}")
    registry = Registry.for_config(config).open()
    version = version or _serving_version(registry)
    frame = frame.filter(pl.col("model_version") == version)
    if frame.height == 0:
        return missing(f"feature samples {path}: none of model version {version!r}")
    start = datetime.combine(date.fromisoformat(day) if day else frame["ts"].max().date(), time(), UTC)
    frame = samples_between(frame, version, start, start + timedelta(days=1))
    if frame.height == 0:
        return missing(f"feature samples {path}: none of model version {version!r} on {start.date()}")
    directory = registry.version_dir(version)
    report = serving_drift(frame, version, load_profile(directory / REFERENCE_PROFILE),
                           load_manifest(directory / DEFINITIONS_MANIFEST), thresholds=thresholds)
    _print_serving(report, start.date())
    return report


def _serving_version(registry) -> str:
    pointer = registry.serving()
    if pointer is None:
        raise NotFoundError("serving drift: no serving version in the registry; pass --version")
    return pointer.version


def _print_serving(report, day: date) -> None:
    table = Table(title=f"serving feature samples of {day} vs the reference profile of {report.version} "
                        f"({report.requests} requests, {report.rows} rows; {report.covered_days} days of log "
                        "before the reference window)")
    for col in ("feature", "weekday", "reference", "rows", "PSI", "KS D", "KS p", "status", "alert"):
        table.add_column(col, overflow="fold" if col == "feature" else "ellipsis")
    for f in report.features:
        d = f.drift
        table.add_row(d.feature, str(f.weekday), d.reference, str(d.rows), f"{d.psi:.3f}", f"{d.ks_statistic:.3f}",
                      f"{d.ks_pvalue:.2g}", f.status, "[red]ALERT[/red]" if f.alert else "ok")
    _console.print(table)
    _console.print("[dim]calendar, warming_up and model_score features are reported, never alerted "
                   "(docs/MONITORING.md, Serving drift)[/dim]")
    if report.alert:
        _console.print(f"[red]ALERT[/red] serving features drifted: {', '.join(report.alerts)}")


def _pick(flag: float | None, configured: float) -> float:
    return configured if flag is None else flag


def _print(report) -> None:
    if report.surprise is None:
        _console.print(f"[yellow]drift on {report.day}: no reference day (a day before it with a full window of "
                       "impressions) in the log: nothing to compare with[/yellow]")
    if not report.rows:
        return
    table = Table(title=f"PSI/KS on {report.day} vs the same weekday of earlier weeks")
    for col in ("feature", "reference", "rows", "PSI", "KS D", "KS p", "alert"):
        table.add_column(col)
    for r in report.rows:
        table.add_row(r.feature, r.reference, str(r.rows), f"{r.psi:.3f}", f"{r.ks_statistic:.3f}",
                      f"{r.ks_pvalue:.2g}", "[red]ALERT[/red]" if r.alert else "ok")
    _console.print(table)
    s = report.surprise
    if s is None:
        return
    _console.print(f"surprise shift of {s.feature} vs {', '.join(report.reference_days)}: {s.shift:+.3f} per "
                   f"user-day over {s.rows} rows ({s.strata} strata, {s.reference_rows} reference rows), "
                   f"z = {s.z:.2f} (day-to-day dispersion {s.dispersion:.2f}): "
                   + ("[red]ALERT[/red]" if s.alert else "ok"))


def _write_gauges(path: Path, report, serving, run) -> None:
    reg = CollectorRegistry()
    g_psi = Gauge("recsys_drift_psi", "PSI of a feature vs its reference", ["feature"], registry=reg)
    g_ks = Gauge("recsys_drift_ks_statistic", "KS distance vs the reference", ["feature"], registry=reg)
    g_alert = Gauge("recsys_drift_alert", "1 when the feature alerts", ["feature"], registry=reg)
    for r in report.rows:
        g_psi.labels(r.feature).set(r.psi)
        g_ks.labels(r.feature).set(r.ks_statistic)
        g_alert.labels(r.feature).set(int(r.alert))
    if report.surprise is not None:
        Gauge("recsys_drift_surprise_z", "z of the surprise shift vs the reference days",
              registry=reg).set(report.surprise.z)
        Gauge("recsys_drift_surprise_dispersion", "day-to-day variance of the reference days over their sampling "
              "variance (the surprise z is divided by its square root)", registry=reg).set(report.surprise.dispersion)
    if serving is not None:
        labels = ["feature", "weekday", "status"]
        s_psi = Gauge("recsys_drift_serving_psi", "PSI of a served feature vs the version's reference profile",
                      labels, registry=reg)
        s_ks = Gauge("recsys_drift_serving_ks_statistic", "KS distance of a served feature vs the reference profile",
                      labels, registry=reg)
        s_alert = Gauge("recsys_drift_serving_alert", "1 when the served feature alerts", labels, registry=reg)
        for f in serving.features:
            key = (f.drift.feature, str(f.weekday), f.status)
            s_psi.labels(*key).set(f.drift.psi)
            s_ks.labels(*key).set(f.drift.ks_statistic)
            s_alert.labels(*key).set(int(f.alert))
    Gauge("recsys_drift_any_alert", "1 when any drift check alerts", registry=reg).set(
        int(report.alert or (serving is not None and serving.alert)))
    if run is not None:
        Gauge("recsys_drift_retrain_exit_status", "exit status of the retrain command (-1: did not run to the end)",
              registry=reg).set(run.exit_status if run.exit_status is not None else -1)
    write_to_textfile(str(path), reg)
