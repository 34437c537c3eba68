"""`recsys simulate`: a seeded marketplace and its impressions log, as Parquet;
`recsys simulate traffic --addr HOST:PORT`: the world's users calling a running server.

``simulate`` is a command group that runs the simulation itself when no subcommand is given, so
``recsys simulate [OPTIONS]`` behaves as before."""

from __future__ import annotations

from typing import Optional

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from recsys.cli import app, get_config

console = Console()
simulate_app = typer.Typer(help="Simulate a marketplace (no subcommand) or traffic against a server.",
                           invoke_without_command=True, no_args_is_help=False)
app.add_typer(simulate_app, name="simulate")


@simulate_app.callback(invoke_without_command=True)
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
    if ctx.invoked_subcommand is not None:
        return
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


@simulate_app.command("traffic")
def traffic(
    ctx: typer.Context,
    addr: str = typer.Option(..., "--addr", help="HOST:PORT of a running server (loopback only)."),
    users: int = typer.Option(50, help="Distinct simulated users (each takes turns, one session a round)."),
    requests: int = typer.Option(200, help="Recommendation calls (feed + menu) to send at most."),
    seed: int = typer.Option(0, help="Seed of users, times, clicks and orders."),
    max_seconds: float = typer.Option(60.0, help="Wall-time bound of the run."),
    timeout: float = typer.Option(2.0, help="Deadline of each call, seconds."),
) -> None:
    """Simulated users of the world (`recsys simulate` wrote it) call the server, click and order by
    the true click model, and send LogFeedback: the closed loop."""
    import json

    from recsys.simulation.run import load_truth
    from recsys.simulation.traffic import TrafficSettings, run_traffic

    config = get_config(ctx)
    settings = TrafficSettings(users=users, requests=requests, seed=seed, feed_k=config.sim.feed_slots,
                               menu_k=config.sim.menu_slots, max_seconds=max_seconds, timeout=timeout)
    with console.status(f"sending traffic to {addr}..."):
        summary = run_traffic(addr, load_truth(config), settings)
    table = Table(title=f"simulated traffic -> {addr}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    d = summary.to_dict()
    for key in ("sessions", "requests", "feed_requests", "menu_requests", "slots", "clicks", "orders"):
        table.add_row(key, f"{d[key]:,}")
    for key in ("true_ctr", "true_ctr_feed", "true_ctr_menu"):
        table.add_row(f"{key} (ground truth)", f"{d[key]:.4f}")
    table.add_row("degraded share", f"{d['degraded_share']:.1%}")
    table.add_row("feedback accepted / sent", f"{d['feedback_accepted']:,} / {d['feedback_sent']:,}")
    table.add_row("failed calls", f"{sum(d['errors'].values()):,}")
    table.add_row("seconds", f"{d['seconds']:.1f}")
    console.print(table)
    if d["degraded_reasons"] or d["errors"]:
        console.print(json.dumps({"degraded_reasons": d["degraded_reasons"], "errors": d["errors"]}))
