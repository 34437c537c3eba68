"""`recsys simulate`: a seeded marketplace and its impressions log, as Parquet."""

from __future__ import annotations

from typing import Optional

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from recsys.cli import app, get_config

console = Console()


@app.command()
def simulate(
    ctx: typer.Context,
    size: Optional[str] = typer.Option(None, help="tiny | small | medium | large | xl"),
    seed: Optional[int] = typer.Option(None, help="Master seed (same seed, same bytes)."),
    users: Optional[int] = typer.Option(None, help="Override the number of users."),
    restaurants: Optional[int] = typer.Option(None, help="Override the number of restaurants."),
    days: Optional[int] = typer.Option(None, help="Override the simulated days."),
    epsilon: Optional[float] = typer.Option(None, help="Exploration rate of the logging policy."),
    drift_day: Optional[int] = typer.Option(None, help="Day from which drifting users change taste."),
    drift_share: Optional[float] = typer.Option(None, help="Share of users who change taste."),
    calibrate: bool = typer.Option(True, help="Report true CTR of random/popularity/oracle."),
) -> None:
    """Simulate users, restaurants, items and an impressions log with exact propensities."""
    from recsys.simulation.calibration import reference_values
    from recsys.simulation.run import load_truth, simulate as run_simulation

    config = get_config(ctx).with_overrides(
        seed=seed,
        sim=dict(size=size, n_users=users, n_restaurants=restaurants, days=days, epsilon=epsilon,
                 drift_day=drift_day, drift_share=drift_share),
    )
    with console.status("simulating..."):
        summary = run_simulation(config)
    console.print(
        f"[bold]simulated[/] {summary.users:,} users, {summary.restaurants:,} restaurants, "
        f"{summary.items:,} items; {summary.impressions:,} impressions "
        f"({summary.clicks:,} clicks, {summary.orders:,} orders) in {summary.seconds:.1f}s "
        f"= {summary.events_per_second:,.0f} events/s -> {summary.raw_dir}"
    )
    if calibrate:
        truth = load_truth(config)
        log = pl.read_parquet(config.raw_dir / "impressions.parquet")
        table = Table(title="true CTR per shown slot (ground truth, second half of the log)")
        for col in ("surface", "random", "popularity", "logging", "oracle", "popularity share of oracle lift"):
            table.add_column(col)
        for surface, slots in (("feed", config.sim.feed_slots), ("menu", config.sim.menu_slots)):
            r = reference_values(truth, log, surface, slots)
            table.add_row(surface, f"{r.random:.4f}", f"{r.popularity:.4f}", f"{r.logging:.4f}",
                          f"{r.oracle:.4f}", f"{r.popularity_lift_share:.0%}")
        console.print(table)
