"""`recsys monitor drift|health`: readable report, JSON (--out), Prometheus textfile, exit 1 on alert."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import typer
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from rich.console import Console
from rich.table import Table

from recsys.cli import app, get_config

monitor = typer.Typer(help="Monitoring: drift of inputs, health of model outputs.", no_args_is_help=True)
app.add_typer(monitor, name="monitor")
_console = Console()


def _table_dir(config) -> Path:
    return config.clean_dir if (config.clean_dir / "impressions.parquet").exists() else config.raw_dir


def _write_json(out: Path | None, obj: dict) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(obj, indent=2, default=str))


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


@monitor.command("health")
def health_cmd(
    ctx: typer.Context,
    version: str | None = typer.Option(None, help="Model version; default: the serving one."),
    max_age_hours: float = typer.Option(48.0, help="Alert when the model is older than this."),
    out: Path | None = typer.Option(None, help="Write the alerts as JSON here."),
    prometheus: Path | None = typer.Option(None, help="Write Prometheus gauges to this textfile."),
) -> None:
    """NaN/inf in embeddings and scores, empty candidate lists, model age."""
    from recsys.monitoring.health import check_version, to_dicts
    from recsys.registry import Registry

    registry = Registry.for_config(get_config(ctx)).open()
    if version is None:
        pointer = registry.serving()
        if pointer is None:
            typer.secho("no serving version", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        version = pointer.version
    meta = registry.show(version)
    alerts = check_version(registry.version_dir(version), meta.trained_until,
                           max_age=timedelta(hours=max_age_hours))
    for a in alerts:
        _console.print(f"[red]ALERT[/red] {a.check}: {a.message}")
    if not alerts:
        _console.print(f"version {version}: healthy")
    _write_json(out, {"version": version, "alert": bool(alerts), "alerts": to_dicts(alerts)})
    if prometheus is not None:
        reg = CollectorRegistry()
        g = Gauge("recsys_health_alert_rows", "Rows failing a health check", ["check", "source"], registry=reg)
        for a in alerts:
            g.labels(a.check, a.source).set(a.count)
        Gauge("recsys_health_ok", "1 when no health alert", registry=reg).set(int(not alerts))
        write_to_textfile(str(prometheus), reg)
    if alerts:
        raise typer.Exit(1)
