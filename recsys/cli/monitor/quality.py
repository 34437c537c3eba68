"""`recsys monitor quality`."""

from __future__ import annotations

from pathlib import Path

import typer
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from rich.table import Table

from recsys.cli import get_config
from recsys.cli.monitor import console as _console
from recsys.cli.monitor import monitor
from recsys.cli.monitor import write_json as _write_json


def _pct(rate: float | None, lo: float | None = None, hi: float | None = None) -> str:
    if rate is None:
        return "-"
    return f"{rate:.2%}" if lo is None else f"{rate:.2%} [{lo:.2%}, {hi:.2%}]"


def _lift(c) -> str:
    if c.lift is None:
        return "-"
    bounds = "" if c.lift_lo is None else f" [{c.lift_lo:+.1%}, {c.lift_hi:+.1%}]"
    return f"{c.lift:+.1%}{bounds}"


@monitor.command("quality")
def quality_cmd(
    ctx: typer.Context,
    log: Path | None = typer.Option(None, help="Landed impressions log (default: <data_dir>/<serving.sink_dir>)."),
    hourly: bool = typer.Option(False, "--hourly", help="Rates per hour instead of per day."),
    tolerance: float = typer.Option(0.05, min=0.0, help="Alert when a version's rate is below the previous "
                                    "version's by more than this share (and significantly)."),
    out: Path | None = typer.Option(None, help="Write the report as JSON here."),
    prometheus: Path | None = typer.Option(None, help="Write Prometheus gauges to this textfile."),
) -> None:
    """Online CTR and order rate per model version and per A/B arm, over time, with 95% intervals
    (clustered by user); the treatment's lift over the control; regression against the previous version."""
    from recsys.monitoring.quality import quality_report, scan_impressions
    from recsys.registry import Registry
    from recsys.serving.settings import resolve_dir

    config = get_config(ctx)
    path = log or resolve_dir(config.data_dir, config.serving.sink_dir)
    order = ([m.version for m in Registry.for_config(config).open().list_versions()]
             if config.registry_dir.exists() else [])
    report = quality_report(scan_impressions(path), order, hourly=hourly, tolerance=tolerance)

    table = Table(title=f"online quality per {report.period} (95% intervals, clustered by user)")
    for col in ("surface", "by", "group", report.period, "lists", "users", "impressions", "CTR", "order rate"):
        table.add_column(col, justify="right" if col in ("lists", "users", "impressions") else "left")
    for r in report.series.iter_rows(named=True):
        fmt = "%Y-%m-%d %H:00" if report.period == "hour" else "%Y-%m-%d"
        table.add_row(r["surface"], r["by"], r["group"], r["period"].strftime(fmt), f"{r['lists']:,}",
                      f"{r['users']:,}", f"{r['impressions']:,}", _pct(r["ctr"], r["ctr_lo"], r["ctr_hi"]),
                      _pct(r["order_rate"], r["order_rate_lo"], r["order_rate_hi"]))
    _console.print(table)
    for title, rows in (("treatment vs control (whole window)", report.lifts),
                        ("each version vs the previous one (registry order)", report.versions)):
        if not rows:
            continue
        t = Table(title=title)
        for col in ("surface", "metric", "subject", "baseline", "subject rate", "baseline rate", "lift [95%]", ""):
            t.add_column(col)
        for c in rows:
            flag = "[red]REGRESSION[/red]" if c.regression else ("significant" if c.significant else "")
            t.add_row(c.surface, c.metric, c.subject, c.baseline, _pct(c.subject_rate), _pct(c.baseline_rate),
                      _lift(c), flag)
        _console.print(t)
    for c in report.regressions:
        _console.print(f"[red]ALERT[/red] {c.surface} {c.metric}: {c.subject} is {_lift(c)} against {c.baseline} "
                       f"(tolerance {report.tolerance:.0%})")
    _write_json(out, report.to_dict())
    if prometheus is not None:
        _write_prometheus(prometheus, report)
    if report.alert:
        raise typer.Exit(1)


def _write_prometheus(path: Path, report) -> None:
    reg = CollectorRegistry()
    labels = ["metric", "surface", "by", "group"]
    rate = Gauge("recsys_quality_rate", "Online rate per shown slot over the window", labels, registry=reg)
    low = Gauge("recsys_quality_rate_lower", "Lower 95% bound of recsys_quality_rate", labels, registry=reg)
    high = Gauge("recsys_quality_rate_upper", "Upper 95% bound of recsys_quality_rate", labels, registry=reg)
    for r in report.totals.iter_rows(named=True):
        for metric in ("ctr", "order_rate"):
            key = (metric, r["surface"], r["by"], r["group"])
            rate.labels(*key).set(r[metric])
            for gauge, bound in ((low, r[f"{metric}_lo"]), (high, r[f"{metric}_hi"])):
                gauge.labels(*key).set(float("nan") if bound is None else bound)
    lift = Gauge("recsys_quality_lift", "Treatment over control, relative", ["metric", "surface"], registry=reg)
    for c in report.lifts:
        lift.labels(c.metric, c.surface).set(float("nan") if c.lift is None else c.lift)
    regression = Gauge("recsys_quality_regression", "1 when the version regressed against the previous one",
                       ["metric", "surface", "version", "previous"], registry=reg)
    for c in report.versions:
        regression.labels(c.metric, c.surface, c.subject, c.baseline).set(int(c.regression))
    Gauge("recsys_quality_ok", "1 when no version regressed", registry=reg).set(int(not report.alert))
    write_to_textfile(str(path), reg)
