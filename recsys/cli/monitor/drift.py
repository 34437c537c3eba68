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


@monitor.command("drift")
def drift_cmd(
    ctx: typer.Context,
    day: str | None = typer.Option(None, help="Day to check (YYYY-MM-DD); default: the last full day of the log."),
    reference_days: int = typer.Option(14, min=1, help="Days before DAY forming the reference profile."),
    psi_alert: float = typer.Option(0.2, help="Alert when PSI exceeds this."),
    ks_pvalue: float = typer.Option(0.01, help="KS p-value below which (with the minimum effect) to alert."),
    ks_min_statistic: float = typer.Option(0.1, help="Minimum KS distance for a KS alert."),
    out: Path | None = typer.Option(None, help="Write the report as JSON here."),
    prometheus: Path | None = typer.Option(None, help="Write Prometheus gauges to this textfile."),
) -> None:
    """PSI and KS per monitored feature, one day against the days before it (same weekday)."""
    from recsys.monitoring.drift import DriftThresholds, daily_drift
    from recsys.monitoring.features import MONITORED, user_day_features

    config = get_config(ctx)
    src = _table_dir(config)
    frame = user_day_features(pl.scan_parquet(src / "impressions.parquet"), pl.scan_parquet(src / "restaurants.parquet"))
    target = date.fromisoformat(day) if day else frame["day"].max() - timedelta(days=1)
    report = daily_drift(frame, target, MONITORED, reference_days=reference_days,
                         thresholds=DriftThresholds(psi_alert, ks_pvalue, ks_min_statistic))
    table = Table(title=f"drift on {report.day}")
    for col in ("feature", "reference", "rows", "PSI", "KS D", "KS p", "alert"):
        table.add_column(col)
    for r in report.rows:
        table.add_row(r.feature, r.reference, str(r.rows), f"{r.psi:.3f}", f"{r.ks_statistic:.3f}",
                      f"{r.ks_pvalue:.2g}", "[red]ALERT[/red]" if r.alert else "ok")
    _console.print(table)
    _write_json(out, report.to_dict())
    if prometheus is not None:
        reg = CollectorRegistry()
        g_psi = Gauge("recsys_drift_psi", "PSI of a feature vs its reference", ["feature"], registry=reg)
        g_ks = Gauge("recsys_drift_ks_statistic", "KS distance vs the reference", ["feature"], registry=reg)
        g_alert = Gauge("recsys_drift_alert", "1 when the feature alerts", ["feature"], registry=reg)
        for r in report.rows:
            g_psi.labels(r.feature).set(r.psi)
            g_ks.labels(r.feature).set(r.ks_statistic)
            g_alert.labels(r.feature).set(int(r.alert))
        write_to_textfile(str(prometheus), reg)
    if report.alert:
        raise typer.Exit(1)
