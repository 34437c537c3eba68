"""`recsys nightly`: validate -> features -> apply -> materialize (-> train -> gate -> precompute
-> publish, as those land). Each step is timed and resumable (jobs/runner.py); the run id names
the raw data it ran on, so the same inputs resume the same run and new inputs start a new one.
"""

from __future__ import annotations

import hashlib
from typing import Any

from rich.console import Console

from jobs.runner import RunContext, Step, run_steps
from recsys.config import Config

RAW_TABLES = ("users", "restaurants", "items", "impressions")


def run_id_for(config: Config) -> str:
    """A short id of the raw inputs: their names, sizes and modification times."""
    digest = hashlib.sha256()
    for table in RAW_TABLES:
        path = config.raw_dir / f"{table}.parquet"
        stat = path.stat() if path.exists() else None
        digest.update(f"{table}:{stat.st_size if stat else -1}:{stat.st_mtime_ns if stat else -1};".encode())
    return digest.hexdigest()[:12]


def step_validate(config: Config, ctx: RunContext) -> dict[str, Any]:
    from recsys.contracts.validate import validate_dataset

    report = validate_dataset(config)
    return {"tables": {t.table: {"rows": t.rows, "bad_rows": t.bad_rows} for t in report.tables},
            "bad_rows": sum(t.bad_rows for t in report.tables)}


def step_features(config: Config, ctx: RunContext) -> dict[str, Any]:
    from recsys.features.stats import build_features

    paths = build_features(config)
    return {"tables": len(paths), "paths": {k: str(v) for k, v in paths.items()}}


def step_apply(config: Config, ctx: RunContext) -> dict[str, Any]:
    from recsys.features.store import apply

    summary = apply(config)
    return {"applied": len(summary.applied), "deleted": len(summary.deleted)}


def step_materialize(config: Config, ctx: RunContext) -> dict[str, Any]:
    from recsys.features.store import materialize, offline_end

    end = offline_end(config)
    windows = materialize(config, end)
    return {"end": end.isoformat(), "views": len(windows)}


STEPS = [
    Step("validate", step_validate, "data contracts, quarantine, PII"),
    Step("features", step_features, "window stats and profiles (polars)"),
    Step("apply", step_apply, "Feast registry"),
    Step("materialize", step_materialize, "offline -> online store"),
]


def run_nightly(config: Config, console: Console | None = None, resume: bool = True) -> dict[str, Any]:
    return run_steps(config, "nightly", run_id_for(config), STEPS, console=console, resume=resume)
