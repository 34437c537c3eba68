"""`recsys nightly`: the batch pipeline (jobs/nightly.py)."""

from __future__ import annotations

import json

import typer

from recsys.cli import app, get_config


@app.command()
def nightly(
    ctx: typer.Context,
    fresh: bool = typer.Option(False, "--fresh", help="Re-run every step, even ones done earlier in this run."),
) -> None:
    """Validate, build features, apply and materialize Feast; prints a JSON summary at the end."""
    from jobs.nightly import run_nightly

    summary = run_nightly(get_config(ctx), resume=not fresh)
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "steps"} | {
        "steps": {name: step.get("seconds") for name, step in summary["steps"].items()}}, indent=2))
