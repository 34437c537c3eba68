"""Compare a benchmark's new result with the recorded one and flag regressions beyond a tolerance.

    python -m benchmarks.compare [NAME ...] [--ref HEAD] [--tolerance 0.10] [--out PATH]
    python -m benchmarks.compare serving --new run.json --baseline recorded.json

The new result is ``benchmarks/results/<NAME>.json`` in the working tree (where the benchmark
just wrote it); the recorded one is the same file at the git ref ``--ref`` (default HEAD: the
committed result) or ``--baseline``. Without names, every benchmark of :data:`METRICS` that has a
result file is compared; one with no recorded file yet is reported as new, not as a failure.

Only the metrics declared in :data:`METRICS` are compared, and they are the in-run ratios (a
model against its floor or baseline measured in the same run), not absolute times: this is a
shared 2-core machine, where another job's load moves every absolute time but both sides of a
ratio alike. Each metric has a direction and a relative tolerance; a change beyond it in the bad
direction is a regression. Prints a table, writes JSON, exits 1 on a regression, 2 on an error
(missing file or metric, a value that is not a number).

A module of ``benchmarks/`` rather than a ``recsys`` subcommand: it reads the benchmarks' own
result files and git history, which exist only in a checkout, never in an installed package.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.table import Table

from benchmarks.common import RESULTS_DIR
from recsys.errors import RecsysError

Better = Literal["lower", "higher"]
DEFAULT_TOLERANCE = 0.10
REPO = RESULTS_DIR.parent.parent


class CompareError(RecsysError):
    """A result cannot be compared: file, benchmark or metric missing, or a value not a number."""

    exit_code = 2


@dataclass(frozen=True)
class Metric:
    """A number in a result file: ``path`` is dotted (``ratios.model_10000_vs_floor.p50``).

    ``tolerance`` is relative to the recorded value; None takes the run's default.
    """

    path: str
    better: Better
    tolerance: float | None = None


def _vs_floor(arm: str, p99_tolerance: float = 0.2) -> tuple[Metric, ...]:
    """p50, p99 (noisier: a wider tolerance) and throughput of an arm against its in-run floor."""
    return (Metric(f"ratios.{arm}.p50", "lower"), Metric(f"ratios.{arm}.p99", "lower", p99_tolerance),
            Metric(f"ratios.{arm}.throughput", "higher"))


# The one place that says what is compared. Not compared: ranker, replay_truth, staleness
# (quality, not speed) and training (its fit overhead, wrapper/raw - 1, sits around 0 where a relative
# tolerance is meaningless, and varied from -43% to -7% between runs).
METRICS: dict[str, tuple[Metric, ...]] = {
    "serving": (*_vs_floor("model_10000_vs_floor"), *_vs_floor("model_fsync_10000_vs_floor"),
                *_vs_floor("model_1000000_vs_floor"), *_vs_floor("model_fsync_1000000_vs_floor"),
                Metric("ratios.p50_catalog_large_vs_small.model", "lower", 0.15)),
    "serving_echo": (Metric("ratios.popularity.p50_x_echo", "lower"),
                     Metric("ratios.popularity.p99_x_echo", "lower", 0.2),
                     Metric("ratios.popularity.throughput_x_echo", "higher")),
    "online_write": (Metric("ratios_vs_materialize.bulk_write", "higher"),
                     Metric("bulk_vs_write_to_online_store", "higher")),
    "precompute": (Metric("ratio_precompute_vs_raw_faiss", "higher"),),
    "precompute_100k": (Metric("ratio_precompute_vs_raw_faiss", "higher"),),
    "evaluate": (Metric("ratios_vs_baseline.point_total", "lower"),
                 Metric("ratios_vs_baseline.estimators_only", "lower")),
    "simulator": (Metric("ratio_simulate_to_write_only", "lower"),),
    # updater: busy share under the load test is measured in the load's own window (0.526, 0.521 in
    # two runs); the backlog and raw-solve ratios come from other phases of the run and moved 26%
    # and 75% between two runs on a loaded machine, hence their wide tolerances.
    "updater": (Metric("updater_under_load.busy_share", "lower", 0.2),
                Metric("ratios.updater_vs_load_events", "higher", 0.35),
                Metric("ratios.updater_vs_raw_solve", "higher", 0.5)),
}


@dataclass(frozen=True)
class Row:
    benchmark: str
    metric: str
    better: Better
    tolerance: float
    baseline: float
    new: float
    change: float  # new / baseline - 1
    status: Literal["ok", "improved", "regression"]


def lookup(result: dict, path: str, source: str) -> float:
    """The number at dotted ``path``; CompareError naming the file, the path and what is there."""
    node: object = result
    walked = []
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            have = sorted(node) if isinstance(node, dict) else type(node).__name__
            where = ".".join(walked) or "the top level"
            raise CompareError(f"{source}: metric {path!r} is missing: no {key!r} under {where} (found: {have})")
        node = node[key]
        walked.append(key)
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        raise CompareError(f"{source}: metric {path!r} is {node!r}, not a finite number")
    return float(node)


def judge(baseline: float, new: float, better: Better, tolerance: float) -> tuple[float, str]:
    """``(relative change, status)``: beyond ``tolerance`` in the bad direction is a regression."""
    if baseline == 0:
        raise CompareError("recorded value is 0: a relative change is undefined")
    change = new / baseline - 1
    worse = change if better == "lower" else -change
    if worse > tolerance:
        return change, "regression"
    return change, "improved" if -worse > tolerance else "ok"


def compare(name: str, new: dict, baseline: dict, metrics: tuple[Metric, ...],
            tolerance: float = DEFAULT_TOLERANCE) -> list[Row]:
    """One row per metric of ``name``, the new result against the recorded one."""
    rows = []
    for m in metrics:
        old_value = lookup(baseline, m.path, f"{name} (recorded)")
        new_value = lookup(new, m.path, f"{name} (new)")
        tol = tolerance if m.tolerance is None else m.tolerance
        try:
            change, status = judge(old_value, new_value, m.better, tol)
        except CompareError as exc:
            raise CompareError(f"{name}: metric {m.path!r}: {exc}") from None
        rows.append(Row(name, m.path, m.better, tol, old_value, new_value, change, status))
    return rows


def metrics_of(name: str) -> tuple[Metric, ...]:
    if name not in METRICS:
        raise CompareError(f"benchmark {name!r} has no compared metrics; known: {', '.join(sorted(METRICS))}")
    return METRICS[name]


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CompareError(f"result file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise CompareError(f"result file {path} is not valid JSON: {exc}") from None


def recorded(name: str, ref: str) -> dict | None:
    """``benchmarks/results/<name>.json`` as committed at ``ref``; None if it was not there."""
    rel = (RESULTS_DIR / f"{name}.json").relative_to(REPO).as_posix()
    proc = subprocess.run(["git", "show", f"{ref}:{rel}"], cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        if "does not exist" in proc.stderr or "exists on disk, but not in" in proc.stderr:
            return None
        raise CompareError(f"git show {ref}:{rel} failed: {proc.stderr.strip()}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise CompareError(f"{ref}:{rel} is not valid JSON: {exc}") from None


def render(rows: list[Row], notes: list[str]) -> Table:
    """One table; ``allowed`` is the change beyond which a metric regresses (its sign is the direction)."""
    table = Table(title="benchmarks: new result vs recorded (in-run ratios)", caption="\n".join(notes) or None)
    for col in ("benchmark", "metric", "recorded", "new", "change", "allowed", "status"):
        table.add_column(col, justify="left" if col in ("benchmark", "metric", "status") else "right")
    style = {"regression": "bold red", "improved": "green", "ok": "default"}
    for r in rows:
        allowed = f"+{r.tolerance:.0%}" if r.better == "lower" else f"-{r.tolerance:.0%}"
        table.add_row(r.benchmark, r.metric, f"{r.baseline:.4g}", f"{r.new:.4g}", f"{r.change:+.1%}", allowed,
                      f"[{style[r.status]}]{r.status}[/]")
    return table


def run(names: list[str], *, ref: str, tolerance: float, new_path: Path | None,
        baseline_path: Path | None) -> tuple[list[Row], list[str]]:
    """Rows of every compared metric and notes (benchmarks not re-run, or new)."""
    explicit = bool(names)
    names = names or sorted(n for n in METRICS if (RESULTS_DIR / f"{n}.json").exists())
    if (new_path or baseline_path) and len(names) != 1:
        raise CompareError("--new/--baseline compare one benchmark: name exactly one")
    rows, notes = [], []
    for name in names:
        metrics = metrics_of(name)
        new = read_json(new_path or RESULTS_DIR / f"{name}.json")
        old = read_json(baseline_path) if baseline_path else recorded(name, ref)
        if old is None:
            if explicit:
                raise CompareError(f"{name}: no recorded result at {ref} (commit one, or pass --baseline)")
            notes.append(f"{name}: new benchmark, nothing recorded at {ref}")
            continue
        if new.get("when") is not None and new.get("when") == old.get("when"):
            notes.append(f"{name}: not re-run since {ref} (same 'when')")
        rows += compare(name, new, old, metrics, tolerance)
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to compare (default: all with results): "
                                                 f"{', '.join(sorted(METRICS))}")
    parser.add_argument("--ref", default="HEAD", help="git ref of the recorded results")
    parser.add_argument("--baseline", type=Path, help="recorded result file (instead of --ref)")
    parser.add_argument("--new", type=Path, help="new result file (default: benchmarks/results/<name>.json)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="relative tolerance of metrics without their own")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "compare.json")
    args = parser.parse_args(argv)
    console = Console()
    console.width = max(console.width, 120)  # metric paths are long; 80 columns (a pipe, CI) would fold them
    try:
        if not args.tolerance >= 0:
            raise CompareError(f"--tolerance={args.tolerance}: must be >= 0")
        rows, notes = run(args.names, ref=args.ref, tolerance=args.tolerance, new_path=args.new,
                          baseline_path=args.baseline)
    except CompareError as exc:
        console.print(f"error: {exc}", style="red")
        return exc.exit_code
    console.print(render(rows, notes))
    regressions = [r for r in rows if r.status == "regression"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"ref": None if args.baseline else args.ref, "default_tolerance": args.tolerance,
                                    "regressions": len(regressions), "notes": notes,
                                    "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    console.print(f"{len(regressions)} regression(s) in {len(rows)} metrics -> {args.out}")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
