"""`recsys monitor changes`."""

from __future__ import annotations

from pathlib import Path

import typer
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from recsys.cli import get_config
from recsys.cli.monitor import console as _console
from recsys.cli.monitor import monitor
from recsys.cli.monitor import write_json as _write_json


@monitor.command("changes")
def changes_cmd(
    ctx: typer.Context,
    version: str | None = typer.Option(None, help="Model version; default: the serving one."),
    feature_repo: Path | None = typer.Option(None, help="Feature repo to compare with; default: the configured one."),
    out: Path | None = typer.Option(None, help="Write the report as JSON here."),
    prometheus: Path | None = typer.Option(None, help="Write Prometheus gauges to this textfile."),
) -> None:
    """Feature definitions and upstream table schemas changed since the model version was trained."""
    from recsys.monitoring.changes import changes_since
    from recsys.registry import Registry

    config = get_config(ctx).with_overrides(feature_repo=feature_repo)
    if version is None:
        pointer = Registry.for_config(config).open().serving()
        if pointer is None:
            typer.secho("no serving version", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        version = pointer.version
    report = changes_since(config, version)
    if report.note:
        _console.print(f"[yellow]note[/yellow]: {report.note}")
    for change in report.changes:
        _console.print(f"[red]CHANGED[/red] {change.describe()}")
    if not report.changed:
        basis = f"{report.compared} definitions compared" if report.compared else "feature repo file hash"
        _console.print(f"no change since {version} was trained ({basis})")
    _write_json(out, report.to_dict())
    if prometheus is not None:
        reg = CollectorRegistry()
        g = Gauge("recsys_definitions_changed", "1 for each definition changed since the serving model was trained",
                  ["kind", "name", "status"], registry=reg)
        for c in report.changes:
            g.labels(c.kind, c.name, c.status).set(1)
        Gauge("recsys_definitions_ok", "1 when nothing changed", registry=reg).set(int(not report.changed))
        write_to_textfile(str(prometheus), reg)
    if report.changed:
        raise typer.Exit(1)
