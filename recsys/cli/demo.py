"""`recsys demo`: the main job end to end on the embedded default (the README's first command).

simulate a small world -> hold out its last week -> the nightly pipeline on the rest (validate,
features, Feast, training, rankers, gate, precompute, registry, publish) -> serve the published
model and query it -> a replay report of the model against popularity on the held-out week.
"""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from recsys.cli import app, get_config

console = Console() if Console().is_terminal else Console(width=150)


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
    cutoff = _hold_out_last_week(config)
    console.print(f"simulate: {sim.users:,} users, {sim.restaurants:,} restaurants, {sim.items:,} items, "
                  f"{sim.impressions:,} impressions in {sim.seconds:.1f}s")
    summary = run_nightly(config, console=console)
    _print_model(config, summary)

    truth, log = load_truth(config), pl.read_parquet(_full_log(config))
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
    _serve_and_query(config, log)
    _replay_report(config, cutoff, summary["steps"]["register"]["version"])
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


def _serve_and_query(config, log) -> None:
    """Start `recsys serve` on a free local port, send a request of each kind, stop it cleanly."""
    import os
    import signal
    import subprocess
    import sys
    from datetime import datetime, timezone

    from recsys.cli.query import print_list
    from recsys.errors import RecsysError
    from recsys.serving.client import RecommenderClient
    from recsys.serving.domain import Feedback
    from recsys.testing import free_port

    port = free_port()
    env = {**os.environ, "RECSYS_PROJECT": config.project, "RECSYS_SEED": str(config.seed),
           "RECSYS_SIM__SIZE": config.sim.size}
    command = [sys.executable, "-c", "from recsys.cli import main; main()", "--data-dir", str(config.data_dir),
               "--online-store", config.online_store, "serve", "--port", str(port), "--no-metrics",
               "--policy", "auto"]
    console.rule(f"serving on 127.0.0.1:{port}")
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with RecommenderClient(f"127.0.0.1:{port}", timeout=2.0) as client:
            try:
                client.wait_until_serving(lambda: server.poll() is None, seconds=120)
            except RecsysError as exc:
                raise RecsysError(f"the server did not start ({exc}): {server.stderr.read()[-2000:]}") from None
            console.print(f"model info: {client.model_info()}")
            user = str(log["user_id"][0])
            console.print(f"[bold]RecommendRestaurants[/] user {user}, k=5")
            feed = client.recommend_restaurants(user, 5)
            print_list(feed, explain=False, console=console)
            restaurant = feed.entries[0].id if feed.entries else str(log["restaurant_id"][0])
            console.print(f"[bold]RecommendItems --explain[/] user {user}, restaurant {restaurant}, k=5")
            menu = client.recommend_items(user, restaurant, 5, explain=True)
            print_list(menu, explain=True, console=console)
            console.print("[bold]RecommendItems[/] for an unknown user (a flagged fallback)")
            print_list(client.recommend_items("99999999", restaurant, 3), explain=False, console=console)
            clicked = menu.entries[0].id if menu.entries else None
            if clicked is not None:
                n = client.log_feedback([Feedback(menu.request_id, clicked, "click", datetime.now(timezone.utc))])
                console.print(f"[bold]LogFeedback[/] click on item {clicked} of {menu.request_id}: accepted {n}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
        console.print(f"server stopped (exit {code}); served lists and feedback are in "
                      f"{config.data_dir / config.serving.event_log_dir}")


HOLDOUT_DAYS = 7


def _full_log(config):
    return config.data_dir / "holdout" / "impressions_full.parquet"


def _hold_out_last_week(config):
    """Keep the simulated log's last week out of training: the nightly sees the rest; the replay
    report scores the published model on the held-out week (out of sample)."""
    from datetime import timedelta

    import polars as pl

    full = _full_log(config)
    full.parent.mkdir(parents=True, exist_ok=True)
    (config.raw_dir / "impressions.parquet").replace(full)
    last = pl.scan_parquet(full).select(pl.col("ts").max()).collect().item()
    cutoff = (last - timedelta(days=HOLDOUT_DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
    pl.scan_parquet(full).filter(pl.col("ts") < cutoff).collect().write_parquet(config.raw_dir / "impressions.parquet")
    return cutoff


def _replay_report(config, cutoff, version: str) -> None:
    """Validate and build features over the whole log, then estimate the run's model's CTR on the
    held-out week against popularity, per surface (recsys evaluate --policy model:<version>)."""
    import shutil

    import polars as pl

    from recsys.contracts.validate import validate_dataset
    from recsys.evaluation.report import write_report
    from recsys.evaluation.run import evaluate
    from recsys.features.stats import build_features

    console.rule(f"replay: model {version} vs popularity on the held-out week (from {cutoff:%Y-%m-%d})")
    shutil.copyfile(_full_log(config), config.raw_dir / "impressions.parquet")
    validate_dataset(config)
    build_features(config)
    held_out = config.data_dir / "holdout" / "impressions.parquet"
    (pl.scan_parquet(config.clean_dir / "impressions.parquet").filter(pl.col("ts") >= cutoff)
     .collect().write_parquet(held_out))
    for surface in ("feed", "menu"):
        report = evaluate(held_out, f"model:{version}", baseline="popularity", surface=surface, config=config)
        _, html = write_report(report, config.reports_dir / f"replay_{surface}")
        console.print(f"[bold]{surface}:[/] {report['headline']}")
        console.print(f"  HTML report: {html}")
