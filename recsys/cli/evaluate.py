"""``recsys evaluate``: replay a policy on an impressions log against a baseline; write the report."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from recsys.cli import app, get_config
from recsys.errors import ConfigError


def _default_table(config_dir: Path, name: str) -> Optional[Path]:
    path = config_dir / f"{name}.parquet"
    return path if path.exists() else None


@app.command()
def evaluate(
    ctx: typer.Context,
    log: Path = typer.Option(..., "--log", help="Impressions log: Parquet file or directory."),
    policy: str = typer.Option(..., "--policy", help="model:<VERSION> | serving | logged | random | popularity | "
                                                     "a Parquet file of lists."),
    baseline: str = typer.Option("popularity", "--baseline", help="Policy to compare with (same choices)."),
    reward: str = typer.Option("clicked", "--reward", help="clicked | ordered."),
    surface: Optional[str] = typer.Option(None, "--surface", help="feed | menu (needed if the log holds both)."),
    clip: Optional[float] = typer.Option(None, "--clip", help="Cap on importance weights."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the 95% intervals."),
    slice_: List[str] = typer.Option([], "--slice", help="Slice by: user_type, hour, cuisine, cell, or a log column."),
    restaurants: Optional[Path] = typer.Option(None, "--restaurants",
                                               help="Restaurants table (default <data_dir>/clean/restaurants.parquet)."),
    users: Optional[Path] = typer.Option(None, "--users", help="Users table (default <data_dir>/clean/users.parquet)."),
    min_matched: int = typer.Option(100, "--min-matched", help="Warn below this many matched events."),
    min_ess: float = typer.Option(100.0, "--min-ess", help="Warn below this effective sample size."),
    out: Path = typer.Option(..., "--out", help="Directory for report.json and report.html."),
) -> None:
    """Estimate a policy's CTR (or order rate) offline and its lift over a baseline."""
    from recsys.evaluation.columns import EvalOptions
    from recsys.evaluation.report import write_report
    from recsys.evaluation.run import evaluate as run_evaluate, load_table

    config = get_config(ctx)
    options = EvalOptions(reward=reward, clip=clip, n_bootstrap=bootstrap, seed=config.seed,
                          min_matched=min_matched, min_ess=min_ess)
    if surface is not None and surface not in ("feed", "menu"):
        raise ConfigError(f"--surface {surface!r}: expected feed or menu")
    report = run_evaluate(
        log, policy, baseline=baseline, surface=surface, options=options, slices=slice_,
        restaurants=load_table(restaurants or _default_table(config.clean_dir, "restaurants")),
        users=load_table(users or _default_table(config.clean_dir, "users")), config=config,
    )
    json_path, html_path = write_report(report, out)
    console = Console()
    console.print(report["headline"], style="bold")
    table = Table(title=f"{report['log']['surface']}: {report['options']['reward']} per slot")
    for col in ("policy", "estimator", "estimate", "95% interval", "matched", "ESS", ""):
        table.add_column(col, justify="left" if col in ("policy", "estimator") else "right")
    for side in ("policy", "baseline"):
        for name, est in report[side]["estimates"].items():
            o = est["overall"]
            table.add_row(report[side]["name"], name, f"{o['estimate']:.4f}", f"{o['low']:.4f}..{o['high']:.4f}",
                          f"{o['matched']:,}", f"{o['ess']:,.0f}", "[red]warning[/red]" if o["warning"] else "")
    console.print(table)
    for side in ("policy", "baseline"):
        if "answered_by" in report[side]:
            shares = ", ".join(f"{k} {v:,}" for k, v in report[side]["answered_by"].items())
            console.print(f"{report[side]['name']}: requests answered by {shares}")
    for warning in report["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"report: {json_path}")
    console.print(f"HTML report: {html_path}")
