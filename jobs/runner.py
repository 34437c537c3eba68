"""A small runner for scheduled jobs: named steps, each timed, each resumable.

A run lives in ``<data_dir>/runs/<job>/<run_id>/``. When a step finishes, its summary is written
there as ``<step>.json`` (atomically); a run started again with the same id skips the steps that
already finished and runs the rest, so a killed job, started again, completes. Steps themselves
are idempotent (they write to versioned or temp-then-renamed outputs), so re-running one that was
killed half-way is safe.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from recsys.config import Config

StepFn = Callable[[Config, "RunContext"], dict[str, Any]]


@dataclass
class RunContext:
    """What steps share: the run's directory and the summaries of finished steps."""

    job: str
    run_id: str
    run_dir: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    name: str
    fn: StepFn
    description: str = ""


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


class StoppedAfter(Exception):
    """Raised when a run is asked to stop after a step (``stop_after``): a crash at that boundary."""


def run_steps(config: Config, job: str, run_id: str, steps: list[Step], console: Console | None = None,
              resume: bool = True, stop_after: str | None = None) -> dict[str, Any]:
    """Run ``steps`` in order; return (and write as ``summary.json``) the run's summary.

    ``stop_after`` ends the run right after that step's marker is written, as a crash there
    would (raises :class:`StoppedAfter`); running again resumes with the next step.
    """
    if stop_after is not None and stop_after not in {s.name for s in steps}:
        raise ValueError(f"stop_after={stop_after!r}: not a step of {job} ({', '.join(s.name for s in steps)})")
    console = console or Console()
    run_dir = config.data_dir / "runs" / job / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(job=job, run_id=run_id, run_dir=run_dir)
    started = time.perf_counter()
    for index, step in enumerate(steps, 1):
        marker = run_dir / f"{step.name}.json"
        label = f"[{index}/{len(steps)}] {step.name}"
        if resume and marker.exists():
            ctx.results[step.name] = json.loads(marker.read_text())
            console.print(f"{label:<28} [dim]done earlier in this run, skipped[/]")
            continue
        t0 = time.perf_counter()
        with console.status(f"{label} {step.description}"):
            result = dict(step.fn(config, ctx) or {})
        result["seconds"] = round(time.perf_counter() - t0, 3)
        ctx.results[step.name] = result
        _write_json(marker, result)
        console.print(f"{label:<28} [green]ok[/] {result['seconds']:>7.2f}s  {_headline(result)}")
        if step.name == stop_after:
            raise StoppedAfter(step.name)
    summary = {
        "job": job,
        "run_id": run_id,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3),
        "steps": ctx.results,
    }
    _write_json(run_dir / "summary.json", summary)
    return summary


def _headline(result: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in result.items() if k != "seconds" and isinstance(v, (int, float, str))]
    return ", ".join(parts[:4])
