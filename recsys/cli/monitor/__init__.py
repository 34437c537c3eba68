"""`recsys monitor ...`: each subcommand prints a readable report, writes JSON (--out), exports
Prometheus gauges (--prometheus, a textfile for node_exporter's collector) and exits 1 on an alert.

One module per subcommand; this one holds the typer group and what they share.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from recsys.cli import app

monitor = typer.Typer(help="Monitoring: drift, skew, quality, health, changes.", no_args_is_help=True)
app.add_typer(monitor, name="monitor")
console = Console()


def table_dir(config) -> Path:
    """The clean tables when validation has run, else the raw ones."""
    return config.clean_dir if (config.clean_dir / "impressions.parquet").exists() else config.raw_dir


def write_json(out: Path | None, obj: dict) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(obj, indent=2, default=str))


# Subcommands register themselves on `monitor` when imported.
from recsys.cli.monitor import changes, drift, health, quality, skew  # noqa: F401
