"""``recsys validate``: check the raw tables against their contracts, quarantine bad rows."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from recsys.cli import app, get_config
from recsys.config import Config
from recsys.contracts.validate import DatasetReport, validate_dataset
from recsys.errors import ConfigError


def _with_max_bad_share(config: Config, share: float) -> Config:
    data = config.model_dump()
    data["validation"] = {**data["validation"], "max_bad_share": share}
    try:
        return Config.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"--max-bad-share={share}: {exc}") from None


def _examples(examples: tuple[dict, ...]) -> str:
    return "\n".join(json.dumps(ex, default=str) for ex in examples)


def render_report(report: DatasetReport, console: Console) -> None:
    """Print one summary table and, per table with broken rules, a table of rules."""
    summary = Table(title=f"Validation (max bad share {report.max_bad_share:.2%})")
    for name in ("table", "rows", "bad rows", "share", "status"):
        summary.add_column(name, justify="left" if name in ("table", "status") else "right")
    for t in report.tables:
        status = "[red]above threshold[/red]" if t.exceeds else "[green]ok[/green]"
        summary.add_row(t.table, f"{t.rows:,}", f"{t.bad_rows:,}", f"{t.bad_share:.2%}", status)
    console.print(summary)
    for t in report.tables:
        if not t.rules:
            continue
        rules = Table(title=f"{t.table}: rules broken")
        rules.add_column("rule")
        rules.add_column("rows", justify="right")
        rules.add_column("effect")
        rules.add_column("examples", overflow="fold")
        for r in t.rules:
            effect = "quarantined" if r.quarantines else "mapped to unknown"
            rules.add_row(r.rule, f"{r.bad_rows:,}", effect, _examples(r.examples))
        console.print(rules)


@app.command()
def validate(
    ctx: typer.Context,
    max_bad_share: Optional[float] = typer.Option(
        None, "--max-bad-share", min=0.0, max=1.0,
        help="Fail above this share of bad rows in any table (default: config validation.max_bad_share).",
    ),
) -> None:
    """Validate raw tables: write clean/, quarantine/ and reports/validation.json."""
    config = get_config(ctx)
    if max_bad_share is not None:
        config = _with_max_bad_share(config, max_bad_share)
    report = validate_dataset(config, strict=False)
    render_report(report, Console())
    typer.echo(f"report: {config.reports_dir / 'validation.json'}")
    report.raise_for_share()
