"""`recsys demo`: the main job end to end on the embedded default (the README's first command).

simulate a small world -> the nightly pipeline (validate, features, Feast apply + materialize)
-> read a user's features back from the online store -> print a summary.
"""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from recsys.cli import app, get_config

console = Console()


@app.command()
def demo(
    ctx: typer.Context,
    size: str = typer.Option("small", help="World size: tiny | small | medium | large | xl."),
    seed: Optional[int] = typer.Option(None, help="Master seed."),
) -> None:
    """Simulate a world and run the whole pipeline on it, printing what each step did."""
    import polars as pl

    from jobs.nightly import run_nightly
    from recsys.features.store import open_store
    from recsys.simulation.calibration import reference_values
    from recsys.simulation.run import load_truth, simulate

    config = get_config(ctx).with_overrides(seed=seed, sim={"size": size})
    console.rule(f"[bold]recsys demo[/] — data in {config.data_dir}, online store: {config.online_store}")
    sim = simulate(config)
    console.print(f"simulate: {sim.users:,} users, {sim.restaurants:,} restaurants, {sim.items:,} items, "
                  f"{sim.impressions:,} impressions in {sim.seconds:.1f}s")
    summary = run_nightly(config, console=console)
    _print_model(config, summary)

    truth, log = load_truth(config), pl.read_parquet(config.raw_dir / "impressions.parquet")
    table = Table(title="How hard is this world? True CTR per shown slot (ground truth)")
    for col in ("surface", "random", "popularity", "legacy logging policy", "oracle"):
        table.add_column(col)
    for surface, slots in (("feed", config.sim.feed_slots), ("menu", config.sim.menu_slots)):
        r = reference_values(truth, log, surface, slots)
        table.add_row(surface, f"{r.random:.4f}", f"{r.popularity:.4f}", f"{r.logging:.4f}", f"{r.oracle:.4f}")
    console.print(table)

    store = open_store(config)
    user_id = int(log["user_id"][0])
    online = store.get_online_features(
        features=["user_stats:feed_clicks_7d", "user_stats:feed_ctr_28d", "user_profile:home_cell"],
        entity_rows=[{"user_id": user_id}],
    ).to_dict()
    console.print(f"online features of user {user_id}: " + json.dumps({k: v[0] for k, v in online.items()}))
    console.print(f"nightly run {summary['run_id']} in {summary['seconds']:.1f}s -> "
                  f"{config.data_dir / 'runs' / 'nightly' / summary['run_id'] / 'summary.json'}")


def _print_model(config, summary: dict) -> None:
    """The published model version and its gate report."""
    from recsys.registry import Registry

    registry = Registry.for_config(config).open()
    version = summary["steps"]["register"]["version"]
    meta = registry.show(version)
    gate = meta.gate or {}
    table = Table(title=f"model {version}: {meta.status}" + (f" ({meta.status_reason})" if meta.status_reason else ""))
    for col in ("gate check", "passed", "detail"):
        table.add_column(col)
    for check in gate.get("checks", []):
        table.add_row(check["name"], "yes" if check["passed"] else "[red]NO[/]", check["detail"])
    console.print(table)
    pointer = registry.serving()
    console.print(f"serving: {pointer.version if pointer else 'nothing'}"
                  + (f" (generation {pointer.generation})" if pointer else ""))
