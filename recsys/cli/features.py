"""``recsys features``: build the offline feature tables, apply the Feast repo, materialize."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

import typer

from recsys.cli import app, get_config
from recsys.errors import ConfigError

features_app = typer.Typer(help="Feature tables and the Feast store.", no_args_is_help=True)
app.add_typer(features_app, name="features")


@features_app.command("build")
def build(ctx: typer.Context) -> None:
    """Compute daily stats snapshots and profiles from the clean tables (Parquet, offline store)."""
    import polars as pl

    from recsys.features.stats import build_features

    config = get_config(ctx)
    for name, path in build_features(config).items():
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
        typer.echo(f"{name:<20} {rows:>10,} rows  {path}")


@features_app.command("apply")
def apply(ctx: typer.Context) -> None:
    """Register the feature repo in the Feast registry (refuses forbidden attributes)."""
    from recsys.features.store import apply as apply_repo

    config = get_config(ctx)
    summary = apply_repo(config)
    typer.echo(f"applied {len(summary.applied)} objects to project {config.project!r}"
               f" ({config.online_store}); deleted {len(summary.deleted)}: {', '.join(summary.deleted) or '-'}")


@features_app.command("materialize")
def materialize(
    ctx: typer.Context,
    end: Optional[str] = typer.Option(None, "--end", help="ISO timestamp (UTC if no offset); default: end of data."),
) -> None:
    """Load stats and profile views into the online store, up to --end."""
    from recsys.features.store import materialize as run, offline_end

    config = get_config(ctx)
    if end is None:
        end_ts = offline_end(config)
    else:
        try:
            end_ts = datetime.fromisoformat(end)
        except ValueError:
            raise ConfigError(f"--end={end!r}: not an ISO timestamp") from None
        if end_ts.tzinfo is None:
            end_ts = end_ts.replace(tzinfo=timezone.utc)
    for name, (start, stop) in run(config, end_ts).items():
        typer.echo(f"{name:<20} {start.isoformat()} .. {stop.isoformat()}")
