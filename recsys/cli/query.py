"""`recsys query`: ask a running server, print the answer as a table (people's client)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

import typer

from recsys.cli import app

query_app = typer.Typer(help="Ask a running recsys server over gRPC.", no_args_is_help=True)
app.add_typer(query_app, name="query")


@query_app.callback()
def _connection(
    ctx: typer.Context,
    addr: str = typer.Option("127.0.0.1:50051", "--addr", help="HOST:PORT of the server."),
    timeout: float = typer.Option(2.0, "--timeout", help="Deadline per call, seconds."),
) -> None:
    ctx.meta["query"] = (addr, timeout)


def _client(ctx: typer.Context):
    from recsys.serving.client import RecommenderClient

    addr, timeout = ctx.meta["query"]
    return RecommenderClient(addr, timeout=timeout)


def _console():
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


EXPLAIN_ALWAYS = ("embedding_score", "precomputed_score", "ranker_score", "explored")


def _components(entries, limit: int) -> list[str]:
    """The explanation columns to show: the headline ones, then the ranker features with the
    largest mean absolute contribution (a linear ranker has one per feature: ~100)."""
    keys = {k for e in entries for k in e.explanation}
    head = [k for k in EXPLAIN_ALWAYS if k in keys]
    contrib = sorted((k for k in keys if k.startswith("contrib:")),
                     key=lambda k: -sum(abs(e.explanation.get(k, 0.0)) for e in entries))
    rest = sorted(keys - set(head) - set(contrib) - {"greedy_rank", "ranker_bias"})
    return head + rest + contrib[:limit]


def print_list(ranked, explain: bool, console=None, max_contributions: int = 6) -> None:
    """A served list as a table; with ``explain``, its score components and what was filtered."""
    from rich import box
    from rich.table import Table

    console = console or _console()
    flag = f"  [yellow]degraded: {ranked.degraded_reason}[/]" if ranked.degraded else ""
    console.print(f"request_id {ranked.request_id}  model {ranked.model_version}  "
                  f"{len(ranked.entries)} of {ranked.n_candidates} candidates{flag}")
    components = _components(ranked.entries, max_contributions) if explain else []
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("position", "id", "score", "propensity", *components):
        table.add_column(column.removeprefix("contrib:"), justify="right")
    for e in ranked.entries:
        table.add_row(str(e.position), e.id, f"{e.score:.4g}", f"{e.propensity:.4f}",
                      *(f"{e.explanation[c]:.4g}" if c in e.explanation else "" for c in components))
    console.print(table)
    if explain and ranked.filters:
        removed = Table(title="filtered out", box=box.SIMPLE_HEAD)
        removed.add_column("id", justify="right")
        removed.add_column("reason")
        for f in ranked.filters:
            removed.add_row(f.id, f.reason)
        console.print(removed)


def _context(hour: Optional[int], cell: Optional[int]):
    from recsys.serving.domain import RequestContext

    return RequestContext(request_time=datetime.now(timezone.utc), local_hour=hour, cell=cell)


@query_app.command("items")
def items(
    ctx: typer.Context,
    user: str = typer.Option(..., "--user", help="User id."),
    restaurant: str = typer.Option(..., "--restaurant", help="Restaurant id."),
    k: int = typer.Option(10, "--k", help="Entries to return."),
    explain: bool = typer.Option(False, "--explain", help="Score components and filters."),
    hour: Optional[int] = typer.Option(None, "--hour", help="The user's local hour (0..23)."),
    cell: Optional[int] = typer.Option(None, "--cell", help="The user's grid cell."),
) -> None:
    """The restaurant's menu ranked for the user (RecommendItems)."""
    with _client(ctx) as client:
        print_list(client.recommend_items(user, restaurant, k, context=_context(hour, cell), explain=explain), explain)


@query_app.command("restaurants")
def restaurants(
    ctx: typer.Context,
    user: str = typer.Option(..., "--user", help="User id."),
    k: int = typer.Option(10, "--k", help="Entries to return."),
    explain: bool = typer.Option(False, "--explain", help="Score components and filters."),
    hour: Optional[int] = typer.Option(None, "--hour", help="The user's local hour (0..23)."),
    cell: Optional[int] = typer.Option(None, "--cell", help="The user's grid cell."),
) -> None:
    """The user's home feed (RecommendRestaurants)."""
    with _client(ctx) as client:
        print_list(client.recommend_restaurants(user, k, context=_context(hour, cell), explain=explain), explain)


@query_app.command("feedback")
def feedback(
    ctx: typer.Context,
    request_id: str = typer.Option(..., "--request-id", help="request_id of the served list."),
    entity: str = typer.Option(..., "--entity", help="The entry clicked or ordered."),
    kind: str = typer.Option("click", "--type", help="click | order"),
) -> None:
    """Send one click or order (LogFeedback)."""
    from recsys.errors import ConfigError
    from recsys.serving.domain import Feedback

    if kind not in ("click", "order"):
        raise ConfigError(f"--type {kind!r}: expected click or order")
    with _client(ctx) as client:
        n = client.log_feedback([Feedback(request_id, entity, kind, datetime.now(timezone.utc))])
    typer.echo(f"accepted {n} event(s)")


@query_app.command("info")
def info(ctx: typer.Context) -> None:
    """The serving model version and details (GetModelInfo), and health."""
    with _client(ctx) as client:
        details, health = client.model_info(), client.health()
    typer.echo(f"health: {health}")
    for key in sorted(details):
        typer.echo(f"{key}: {details[key]}")
