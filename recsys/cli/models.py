"""``recsys models``: list, inspect, promote and roll back model versions in the registry."""

from __future__ import annotations

import json
from datetime import timezone

import typer

from recsys.cli import app, get_config

models_app = typer.Typer(help="Model registry: versions, the serving pointer, rollback.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")


def _registry(ctx: typer.Context):
    from recsys.registry import Registry

    return Registry.for_config(get_config(ctx)).open()


def _publisher(ctx: typer.Context):
    from recsys.registry.publish import publish_version

    config = get_config(ctx)
    return lambda version: publish_version(config, version)


@models_app.command("list")
def list_models(ctx: typer.Context) -> None:
    """Every version, oldest first; '*' marks the serving one."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    registry = _registry(ctx)
    versions = registry.list_versions()
    if not versions:
        typer.echo(f"no model versions in {registry.models_dir}")
        return
    pointer = registry.serving()
    table = Table(title=f"models in {registry.root} (times UTC)", box=box.SIMPLE_HEAD)
    for column in ("", "version", "created", "trained until", "status"):
        table.add_column(column, no_wrap=True)
    table.add_column("key metrics", overflow="fold")
    utc = "%Y-%m-%d %H:%M"
    for meta in versions:
        serving = pointer is not None and pointer.version == meta.version
        metrics = "\n".join(f"{k}={v:.4g}" for k, v in meta.key_metrics().items())
        table.add_row("*" if serving else "", meta.version,
                      meta.created_at.astimezone(timezone.utc).strftime(utc),
                      meta.trained_until.astimezone(timezone.utc).strftime(utc), meta.status, metrics)
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze into 80 columns
        console = Console(width=160)
    console.print(table)
    if pointer is not None:
        typer.echo(f"serving {pointer.version} (generation {pointer.generation}, {pointer.action} "
                   f"at {pointer.moved_at.isoformat()}: {pointer.reason})")


@models_app.command("show")
def show(ctx: typer.Context, version: str = typer.Argument(..., help="Model version.")) -> None:
    """A version's metadata as JSON."""
    typer.echo(json.dumps(_registry(ctx).show(version).model_dump(mode="json"), indent=2, sort_keys=True))


@models_app.command("promote")
def promote(
    ctx: typer.Context,
    version: str = typer.Argument(..., help="Model version to serve."),
    force: bool = typer.Option(False, "--force", help="Promote even a version the gate refused."),
    reason: str = typer.Option("manual promotion", "--reason", help="Recorded in the pointer history."),
) -> None:
    """Publish the version's online rows, then move the serving pointer to it."""
    pointer = _registry(ctx).promote(version, reason, publish=_publisher(ctx), force=force)
    typer.echo(f"serving {pointer.version} (generation {pointer.generation}, previous {pointer.previous})")


@models_app.command("rollback")
def rollback(
    ctx: typer.Context,
    force: bool = typer.Option(False, "--force", help="Roll back even to a version since refused."),
    reason: str = typer.Option("manual rollback", "--reason", help="Recorded in the pointer history."),
) -> None:
    """Republish the previously served version's online rows, then move the pointer back to it."""
    pointer = _registry(ctx).rollback(reason, publish=_publisher(ctx), force=force)
    typer.echo(f"serving {pointer.version} (generation {pointer.generation}, rolled back from "
               f"{pointer.previous})")
