"""The ``recsys`` command line: one typer app, one module per concern.

The callback builds the one :class:`~recsys.config.Config` and hands it to each command through
the typer context; typed :class:`~recsys.errors.RecsysError` become a message and a non-zero exit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from recsys.config import Config, load_config
from recsys.errors import RecsysError

app = typer.Typer(
    name="recsys",
    help="Food-delivery recommender: simulate, validate, features, train, serve, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config file (or RECSYS_CONFIG)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory (or RECSYS_DATA_DIR)."),
    online_store: Optional[str] = typer.Option(
        None, "--online-store", help="'sqlite', 'redis://host:port' or a Feast Redis connection string."
    ),
    seed: Optional[int] = typer.Option(None, "--seed", help="Master random seed."),
) -> None:
    # BLAS threads: implicit's ALS is slow with a threaded OpenBLAS; set before numpy loads BLAS.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    ctx.obj = load_config(config, data_dir=data_dir, online_store=online_store, seed=seed)


def get_config(ctx: typer.Context) -> Config:
    return ctx.find_root().obj


def _register() -> None:
    # Imported for their side effect of adding commands to `app`.
    from recsys.cli import demo, evaluate, features, models, monitor, nightly, query, serve, simulate, validate  # noqa: F401


def main() -> None:
    _register()
    try:
        app()
    except RecsysError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(exc.exit_code)
