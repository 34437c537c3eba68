"""A/B arms end to end: does `recsys monitor quality` rank two versions of clearly different true
quality correctly, with non-overlapping intervals, after a simulated-traffic run?

- World: `recsys simulate` (``--size``, tiny by default) and the nightly: version A, serving.
- Version B, deliberately bad: A's artifacts with every user's embedding negated (menus ranked
  least-liked first, by the embedding alone: no ranker) and the precomputed feed lists shuffled
  among users (each user gets another user's list). B is registered after A, never promoted.
- Server: `recsys serve` in its own process, arms 50/50 (``serving.ab_version = B``,
  ``ab_share = 0.5``): control = A (the pointer), treatment = B.
- Traffic: the simulator's closed loop (``run_traffic``, what `recsys simulate traffic --addr`
  runs) clicking and ordering by the ground truth; every served list keeps its true click
  probabilities. Then `python -m jobs.sink --flush` and `recsys monitor quality --out`.

Baseline measured in the same run: the ground truth. The true CTR of an arm is the mean true click
probability over the slots it showed (at their positions and times, the traffic's own draws
aside). Printed per surface and arm: measured CTR [95% interval], true CTR, measured / true; the
measured lift [interval] against the true lift; whether the arms' intervals overlap.

    python -m benchmarks.bench_ab [--size tiny --requests 20000 --users 400]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from benchmarks.common import write_result  # noqa: E402
from recsys.testing import free_port  # noqa: E402

CLI = [sys.executable, "-c", "from recsys.cli import main; main()"]
SALT = "bench-ab"
FAST_TRAINING = """
[training.search]
factors = [8]
regularization = [0.1]
alpha = [2.0]
iterations = [5]
trials = 1

[training.ranker]
window_days = 3
heldout_days = 3
"""


def write_config(data_dir: Path, size: str, treatment: str | None) -> Path:
    """The run's TOML config: world size, fast training, and (once B exists) the arms."""
    arms = f'\n[serving]\nab_version = "{treatment}"\nab_share = 0.5\nab_salt = "{SALT}"\n' if treatment else ""
    path = data_dir / "recsys.toml"
    path.write_text(f'data_dir = "{data_dir}"\nseed = 7\n\n[sim]\nsize = "{size}"\n{FAST_TRAINING}{arms}')
    return path


def degraded_version(config, source: str, seed: int = 11) -> str:
    """B: ``source``'s artifacts with user embeddings negated, feed lists shuffled among users and no
    ranker; committed, not promoted."""
    from recsys.registry import Registry
    from recsys.registry.publish import ARTIFACTS, read_version_outputs, write_version_outputs

    registry = Registry.for_config(config).open()
    version = f"{source}-degraded"
    frames = read_version_outputs(registry, source)
    feed = frames["user_top_restaurants"]
    frames["user_top_restaurants"] = feed.with_columns(
        user_id=pl.Series(np.random.default_rng(seed).permutation(feed["user_id"].to_numpy())))
    frames["user_embedding"] = frames["user_embedding"].with_columns(
        embedding=pl.col("embedding").list.eval(-pl.element()))
    frames = {view: frame.with_columns(model_version=pl.lit(version)) for view, frame in frames.items()}
    src, meta = registry.version_dir(source), registry.show(source)
    with registry.stage(version) as area:
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            rel = path.relative_to(src).as_posix()
            if rel not in ("metadata.json", "ranker.json", *ARTIFACTS.values()):
                shutil.copyfile(path, area.artifact(rel))
        write_version_outputs(area, frames)
        area.commit(trained_until=meta.trained_until, data_fingerprint=meta.data_fingerprint,
                    feature_definitions_hash=meta.feature_definitions_hash, code_version=meta.code_version,
                    params={"degraded": "negated user embeddings, shuffled feeds"})
    return version


def serve(config_path: Path, port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "--config", str(config_path), "serve", "--port", str(port), "--no-metrics"],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True)


def true_ctr_per_arm(served, landed: pl.DataFrame) -> pl.DataFrame:
    """Mean true click probability over shown slots, per surface and arm (arm from the landed log)."""
    truth = pl.DataFrame({"request_id": [s.ranked.request_id for s in served],
                          "p_sum": [sum(s.p_click) for s in served], "slots": [len(s.p_click) for s in served]})
    arms = landed.group_by("request_id").agg(pl.first("arm"), pl.first("surface"))
    return (truth.join(arms, on="request_id").group_by("surface", "arm")
            .agg(true_ctr=pl.col("p_sum").sum() / pl.col("slots").sum(), lists=pl.len()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--keep", action="store_true", help="Keep the data directory.")
    args = parser.parse_args()

    from jobs.nightly import run_nightly
    from recsys.config import load_config
    from recsys.serving.client import RecommenderClient
    from recsys.simulation.run import load_truth, simulate
    from recsys.simulation.traffic import TrafficSettings, run_traffic

    data_dir = Path(tempfile.mkdtemp(prefix="bench_ab_"))
    timings = {}
    try:
        config = load_config(write_config(data_dir, args.size, None), environ={})
        started = time.perf_counter()
        simulate(config)
        summary = run_nightly(config)
        control = summary["steps"]["register"]["version"]
        treatment = degraded_version(config, control)
        timings["setup_seconds"] = time.perf_counter() - started
        config_path = write_config(data_dir, args.size, treatment)

        port = free_port()
        proc = serve(config_path, port, data_dir / "serve.log")
        addr = f"127.0.0.1:{port}"
        try:
            with RecommenderClient(addr, timeout=2) as client:
                client.wait_until_serving(lambda: proc.poll() is None, 120)
                info = client.model_info()
            assert (info["arm:control"], info["arm:treatment"]) == (control, treatment), info
            started = time.perf_counter()
            traffic = run_traffic(addr, load_truth(config), TrafficSettings(
                users=args.users, requests=args.requests, seed=5, feed_k=config.sim.feed_slots,
                menu_k=config.sim.menu_slots, max_seconds=args.max_seconds, keep_lists=True))
            timings["traffic_seconds"] = time.perf_counter() - started
        finally:
            os.kill(proc.pid, signal.SIGTERM)  # graceful: in-flight lists and samples logged
            proc.wait(timeout=120)
        subprocess.run([sys.executable, "-m", "jobs.sink", "--config", str(config_path), "--flush"], check=True,
                       stdout=subprocess.DEVNULL)
        quality_json = data_dir / "quality.json"
        monitor = subprocess.run([*CLI, "--config", str(config_path), "monitor", "quality", "--out",
                                  str(quality_json)], capture_output=True, text=True,
                                 env={**os.environ, "COLUMNS": "160"})
        print(monitor.stdout)
        report = json.loads(quality_json.read_text())
        landed = pl.read_parquet(data_dir / "impressions_log")
        truth = {(r["surface"], r["arm"]): r for r in true_ctr_per_arm(traffic.served, landed).to_dicts()}
        rows = {(r["surface"], r["group"]): r for r in report["totals"] if r["by"] == "arm"}
        result = {"size": args.size, "requests": traffic.requests, "sessions": traffic.sessions,
                  "control": control, "treatment": treatment, "monitor_exit_code": monitor.returncode,
                  "degraded_share": traffic.degraded_share, "errors": dict(traffic.errors), **timings,
                  "surfaces": {}}
        for surface in ("feed", "menu"):
            arms = {}
            for arm in ("control", "treatment"):
                r, t = rows[(surface, arm)], truth[(surface, arm)]
                arms[arm] = {"lists": r["lists"], "users": r["users"], "impressions": r["impressions"],
                             "measured_ctr": r["ctr"], "ctr_lo": r["ctr_lo"], "ctr_hi": r["ctr_hi"],
                             "true_ctr": t["true_ctr"], "measured_over_true": r["ctr"] / t["true_ctr"],
                             "order_rate": r["order_rate"], "order_rate_lo": r["order_rate_lo"],
                             "order_rate_hi": r["order_rate_hi"]}
            lift = next(c for c in report["lifts"] if c["surface"] == surface and c["metric"] == "ctr")
            c, t = arms["control"], arms["treatment"]
            true_lift = t["true_ctr"] / c["true_ctr"] - 1
            result["surfaces"][surface] = {
                "arms": arms, "measured_lift": lift["lift"], "lift_lo": lift["lift_lo"], "lift_hi": lift["lift_hi"],
                "true_lift": true_lift, "true_lift_inside_interval": lift["lift_lo"] <= true_lift <= lift["lift_hi"],
                "ranked_correctly": (c["measured_ctr"] > t["measured_ctr"]) == (c["true_ctr"] > t["true_ctr"]),
                "intervals_overlap": not (c["ctr_lo"] > t["ctr_hi"] or t["ctr_lo"] > c["ctr_hi"])}
        regressions = [(c["surface"], c["metric"]) for c in report["versions"] if c["regression"]]
        result["regression_flagged"] = regressions
        for surface, s in result["surfaces"].items():
            for arm, a in s["arms"].items():
                print(f"{surface:5} {arm:9} measured CTR {a['measured_ctr']:.4f} [{a['ctr_lo']:.4f}, {a['ctr_hi']:.4f}]"
                      f"  true {a['true_ctr']:.4f}  measured/true {a['measured_over_true']:.3f}  "
                      f"({a['lists']:,} lists, {a['users']} users)")
            print(f"{surface:5} lift measured {s['measured_lift']:+.1%} [{s['lift_lo']:+.1%}, {s['lift_hi']:+.1%}]  "
                  f"true {s['true_lift']:+.1%}  ranked correctly: {s['ranked_correctly']}  "
                  f"intervals overlap: {s['intervals_overlap']}")
        print(f"regression flagged (exit {monitor.returncode}): {regressions}")
        print(f"written {write_result('ab', result)}")
    finally:
        if args.keep:
            print(f"data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
