"""`recsys serve`: the gRPC recommender, N worker processes sharing one port."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from recsys.cli import app, get_config


@app.command()
def serve(
    ctx: typer.Context,
    host: Optional[str] = typer.Option(None, help="Address to listen on (serving.host)."),
    port: Optional[int] = typer.Option(None, help="gRPC port (serving.port)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes sharing the port (SO_REUSEPORT)."),
    metrics_port: Optional[int] = typer.Option(None, help="Prometheus port of worker 0 (worker i: +i)."),
    no_metrics: bool = typer.Option(False, "--no-metrics", help="No Prometheus endpoint."),
    epsilon: Optional[float] = typer.Option(None, help="Exploration share (serving.epsilon)."),
    admin_token_file: Optional[Path] = typer.Option(
        None, help="File holding the admin token for Reload/Rollback (kept off the command line)."),
    policy: Optional[str] = typer.Option(
        None, help="model: the registry's serving version (FAISS + ranker); popularity: the fallback alone; "
                     "auto: model when a serving version exists, else popularity."),
    ab_version: Optional[str] = typer.Option(None, help="A/B: the registry version serving the treatment arm."),
    ab_share: Optional[float] = typer.Option(None, help="A/B: share of users (by salted hash) in the treatment."),
    ab_salt: Optional[str] = typer.Option(None, help="A/B: salt of the user hash (default: the version)."),
    feature_sample_rate: Optional[float] = typer.Option(
        None, help="Share of menu requests whose ranker inputs are logged for skew/drift monitoring."),
) -> None:
    """Serve recommendations over gRPC until SIGTERM/SIGINT; every served list is logged durably."""
    from recsys.errors import ConfigError
    from recsys.serving.server import serve_workers
    from recsys.serving.settings import ServingConfig, serving_config

    config = get_config(ctx)
    updates = {k: v for k, v in dict(host=host, port=port, workers=workers, metrics_port=metrics_port,
                                      epsilon=epsilon, policy=policy, ab_version=ab_version, ab_share=ab_share,
                                      ab_salt=ab_salt, feature_sample_rate=feature_sample_rate).items()
               if v is not None}
    if no_metrics:
        updates["metrics_port"] = None
    if admin_token_file is not None:
        try:
            updates["admin_token"] = admin_token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--admin-token-file {admin_token_file}: {exc.strerror}") from None
    try:
        settings = ServingConfig.model_validate({**serving_config(config).model_dump(), **updates})
    except ValueError as exc:
        raise ConfigError(f"invalid serving option: {exc}") from None
    raise typer.Exit(serve_workers(config, settings))
