"""`recsys monitor drift`."""

from __future__ import annotations

from datetime import date, timedelta
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
from recsys.errors import DataContractError


@monitor.command("drift")
def drift_cmd(
    ctx: typer.Context,
    day: str | None = typer.Option(None, help="Day to check (YYYY-MM-DD); default: the last full day of the log."),
    baseline_days: int | None = typer.Option(None, min=1, help="Days of a user's clicks their day is compared with."),
    reference_weeks: int | None = typer.Option(None, min=1, help="Compare with the same weekday of this many weeks."),
    z_alert: float | None = typer.Option(None, help="Alert when the surprise-shift z exceeds this."),
    psi_alert: float | None = typer.Option(None, help="Alert when a feature's PSI exceeds this."),
    ks_pvalue: float | None = typer.Option(None, help="KS p-value below which (with the minimum effect) to alert."),
    ks_min_statistic: float | None = typer.Option(None, help="Minimum KS distance for a KS alert."),
    retrain: bool = typer.Option(True, "--retrain/--no-retrain", help="On an alert, run monitoring.retrain_command."),
    out: Path | None = typer.Option(None, help="Write the report as JSON here."),
    prometheus: Path | None = typer.Option(None, help="Write Prometheus gauges to this textfile."),
) -> None:
    """Taste drift of one day: each user's clicks against their own previous week, compared with
    the same weekday of earlier weeks (surprise shift), and PSI and KS per monitored feature.
    Defaults come from the `monitoring` section of the configuration."""
    from recsys.monitoring.drift import DriftThresholds, daily_drift
    from recsys.monitoring.features import MONITORED, user_day_features
    from recsys.monitoring.retrain import run_retrain

    config = get_config(ctx)
    m = config.monitoring
    baseline_days = baseline_days or m.baseline_days
    thresholds = DriftThresholds(_pick(psi_alert, m.psi_alert), _pick(ks_pvalue, m.ks_pvalue),
                                 _pick(ks_min_statistic, m.ks_min_statistic), m.min_rows,
                                 _pick(z_alert, m.surprise_z_alert))
    src = _table_dir(config)
    frame = user_day_features(pl.scan_parquet(src / "impressions.parquet"),
                              pl.scan_parquet(src / "restaurants.parquet"), baseline_days)
    if frame.height == 0:
        raise DataContractError(f"drift: no user-day rows in {src / 'impressions.parquet'} (no clicks after the "
                                f"first {baseline_days} days of the log)")
    target = date.fromisoformat(day) if day else frame["day"].max() - timedelta(days=1)
    report = daily_drift(frame, target, MONITORED, reference_weeks=reference_weeks or m.reference_weeks,
                         thresholds=thresholds)
    _print(report)
    result = report.to_dict()
    run = None
    if report.alert and retrain:
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
        _write_gauges(prometheus, report, run)
    if report.alert:
        raise typer.Exit(1)


def _pick(flag: float | None, configured: float) -> float:
    return configured if flag is None else flag


def _print(report) -> None:
    if not report.reference_days:
        _console.print(f"[yellow]drift on {report.day}: no reference day (the same weekday of earlier weeks, with "
                       "user-day rows) in the log: nothing to compare with[/yellow]")
        return
    table = Table(title=f"drift on {report.day} vs {', '.join(report.reference_days)}")
    for col in ("feature", "reference", "rows", "PSI", "KS D", "KS p", "alert"):
        table.add_column(col)
    for r in report.rows:
        table.add_row(r.feature, r.reference, str(r.rows), f"{r.psi:.3f}", f"{r.ks_statistic:.3f}",
                      f"{r.ks_pvalue:.2g}", "[red]ALERT[/red]" if r.alert else "ok")
    _console.print(table)
    s = report.surprise
    _console.print(f"surprise shift of {s.feature}: {s.shift:+.3f} per user-day over {s.rows} rows "
                   f"({s.strata} strata, {s.reference_rows} reference rows), z = {s.z:.2f}: "
                   + ("[red]ALERT[/red]" if s.alert else "ok"))


def _write_gauges(path: Path, report, run) -> None:
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
    Gauge("recsys_drift_any_alert", "1 when any drift check alerts", registry=reg).set(int(report.alert))
    if run is not None:
        Gauge("recsys_drift_retrain_exit_status", "exit status of the retrain command (-1: did not run to the end)",
              registry=reg).set(run.exit_status if run.exit_status is not None else -1)
    write_to_textfile(str(path), reg)
