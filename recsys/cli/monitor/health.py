"""`recsys monitor health`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import typer
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from recsys.cli import get_config
from recsys.cli.monitor import console as _console
from recsys.cli.monitor import monitor
from recsys.cli.monitor import write_json as _write_json


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
