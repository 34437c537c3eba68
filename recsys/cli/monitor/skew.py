"""`recsys monitor skew`."""

from __future__ import annotations

from pathlib import Path

import typer
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from rich.table import Table

from recsys.cli import get_config
from recsys.cli.monitor import console as _console
from recsys.cli.monitor import monitor
from recsys.cli.monitor import write_json as _write_json


@monitor.command("skew")
def skew_cmd(
    ctx: typer.Context,
    samples: Path = typer.Option(..., help="Feature samples logged by serving: a Parquet file or a directory."),
    abs_tol: float = typer.Option(1e-6, help="Values agree within abs_tol + rel_tol * |offline value|."),
    rel_tol: float = typer.Option(1e-5, help="See --abs-tol."),
    max_mismatch: float = typer.Option(0.01, help="Alert when a feature's share of mismatched rows exceeds this."),
    out: Path | None = typer.Option(None, help="Write the report as JSON here."),
    prometheus: Path | None = typer.Option(None, help="Write Prometheus gauges to this textfile."),
) -> None:
    """Features as serving used them against Feast's offline values for the same entities and time."""
    from recsys.features.store import open_store
    from recsys.monitoring.skew import SkewThresholds, check_skew, read_samples

    thresholds = SkewThresholds(abs_tol, rel_tol, max_mismatch)
    report = check_skew(open_store(get_config(ctx)), read_samples(samples), thresholds)
    table = Table(title=f"training/serving skew: {report.rows} sampled feature vectors")
    table.add_column("feature", overflow="fold")  # names in full: they are what to fix
    for col in ("rows", "mismatched", "share", "mean |diff|", "alert"):
        table.add_column(col)
    for f in report.features:
        mean = "-" if f.mean_abs_diff is None else f"{f.mean_abs_diff:.3g}"
        table.add_row(f.feature, str(f.rows), str(f.mismatches), f"{f.mismatch_share:.1%}", mean,
                      "[red]ALERT[/red]" if f.alert else "ok")
    _console.print(table)
    for name, why in report.skipped.items():
        _console.print(f"[dim]skipped {name}: {why}[/dim]")
    if report.alert:
        _console.print(f"[red]ALERT[/red] computed differently online than offline: {', '.join(report.alerts)}")
    _write_json(out, report.to_dict())
    if prometheus is not None:
        reg = CollectorRegistry()
        share = Gauge("recsys_skew_mismatch_share", "Share of sampled rows whose online value differs from the "
                      "offline one", ["feature"], registry=reg)
        diff = Gauge("recsys_skew_mean_abs_diff", "Mean |online - offline| where both have a value", ["feature"],
                     registry=reg)
        alert = Gauge("recsys_skew_alert", "1 when the feature alerts", ["feature"], registry=reg)
        for f in report.features:
            share.labels(f.feature).set(f.mismatch_share)
            diff.labels(f.feature).set(f.mean_abs_diff if f.mean_abs_diff is not None else float("nan"))
            alert.labels(f.feature).set(int(f.alert))
        Gauge("recsys_skew_ok", "1 when no feature alerts", registry=reg).set(int(not report.alert))
        write_to_textfile(str(prometheus), reg)
    if report.alert:
        raise typer.Exit(1)
