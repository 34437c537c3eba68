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
    retrain: bool = typer.Option(True, "--retrain/--no-retrain", help="On an alert, run monitoring.retrain_command."),
    out: Path | None = typer.Option(None, help="Write the report as JSON here."),
    prometheus: Path | None = typer.Option(None, help="Write Prometheus gauges to this textfile."),
) -> None:
    """Taste drift of one day: each user's impressions of the day scored under their own click
    model of the previous two weeks against the population's, compared with the days before
    (surprise shift of choice_llr), and PSI and KS per monitored feature against the same weekday
    of earlier weeks. Defaults come from the `monitoring` section of the configuration."""
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
        Gauge("recsys_drift_surprise_dispersion", "day-to-day variance of the reference days over their sampling "
              "variance (the surprise z is divided by its square root)", registry=reg).set(report.surprise.dispersion)
    Gauge("recsys_drift_any_alert", "1 when any drift check alerts", registry=reg).set(int(report.alert))
    if run is not None:
        Gauge("recsys_drift_retrain_exit_status", "exit status of the retrain command (-1: did not run to the end)",
              registry=reg).set(run.exit_status if run.exit_status is not None else -1)
    write_to_textfile(str(path), reg)
