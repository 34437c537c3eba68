"""Benchmark of the offline evaluation on a large synthetic log, against a bare polars baseline.

Measured in one run, on the same Parquet file:
- baseline (honest: the same inputs and sums as the estimators, with none of the checks): scan
  the log's request_id, position, restaurant_id, propensity and clicked and the policy file,
  join them on (request_id, position), group by position and sum 1, y, m, m*y, m/mu, m*y/mu,
  (m/mu)^2 -- naive, replay, IPS and SNIPS per position in one lazy polars query. The old
  two-column ``group_by("position").agg(clicked mean)`` is kept as ``baseline_two_columns``;
- point estimates: load + contract checks, join of a Parquet policy, every estimator (no
  bootstrap), each step timed; the goal is total within 3x of the baseline;
- bootstrap: 1,000 Poisson resamples over requests of every estimator (goal < 60 s);
- peak resident memory (``resource.getrusage``).

Usage: ``python benchmarks/bench_evaluate.py [--rows 10000000] [--bootstrap 1000]``; writes
``benchmarks/results/evaluate.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import polars as pl

from recsys.evaluation.bootstrap import bootstrap_sums
from recsys.evaluation.columns import EvalOptions
from recsys.evaluation.estimators import estimate_all, slot_matrix, summarise
from recsys.evaluation.logs import join_policy, load_log, load_policy_lists
from recsys.evaluation.policies import resolve_policy
from recsys.evaluation.synthetic import synthetic_log

RESULTS = Path(__file__).resolve().parent / "results" / "evaluate.json"


def _timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        log_path, lists_path = Path(tmp) / "log.parquet", Path(tmp) / "target.parquet"
        t_gen, synth = _timed(lambda: synthetic_log(args.rows // args.slots, slots=args.slots, n_entities=500,
                                                   epsilon=0.1, seed=args.seed))
        synth.log.write_parquet(log_path)
        synth.target_lists.write_parquet(lists_path)
        truth = synth.true_ctr
        del synth

        def baseline():
            return (pl.scan_parquet(log_path).group_by("position")
                    .agg(pl.col("clicked").mean(), pl.len()).collect())

        def honest_baseline():
            log_cols = pl.scan_parquet(log_path).select("request_id", "position", "restaurant_id", "propensity",
                                                          pl.col("clicked").cast(pl.Float64).alias("y"))
            lists_cols = pl.scan_parquet(lists_path).select("request_id", "position",
                                                            pl.col("restaurant_id").alias("target"))
            m = (pl.col("target") == pl.col("restaurant_id")).fill_null(False).cast(pl.Float64)
            w = m / pl.col("propensity")
            return (log_cols.join(lists_cols, on=["request_id", "position"], how="left")
                    .group_by("position")
                    .agg(pl.len(), pl.col("y").sum(), m.sum().alias("m"), (m * pl.col("y")).sum().alias("my"),
                         w.sum().alias("w"), (w * pl.col("y")).sum().alias("wy"), (w * w).sum().alias("w2"))
                    .collect())

        t_base2, _ = _timed(baseline, repeat=3)
        t_base, _ = _timed(honest_baseline, repeat=3)
        t_load, log = _timed(lambda: load_log(log_path))
        t_lists, lists = _timed(lambda: load_policy_lists(lists_path, surface="feed"))
        t_join, events = _timed(lambda: join_policy(log, lists, surface="feed"))
        point = EvalOptions(n_bootstrap=0)
        t_est, est = _timed(lambda: estimate_all(events, point), repeat=2)
        t_est_nodr, _ = _timed(lambda: estimate_all(events, point, ("naive", "replay", "ips", "snips")), repeat=2)
        t_pop, _ = _timed(lambda: resolve_policy("popularity", log, surface="feed"))
        point_total = t_load + t_lists + t_join + t_est

        boot = EvalOptions(n_bootstrap=args.bootstrap)
        t_matrix, matrix = _timed(lambda: slot_matrix(events, boot))
        t_boot, sums = _timed(lambda: bootstrap_sums([matrix.per_request], n_resamples=args.bootstrap,
                                                     seed=0, chunk_elements=boot.chunk_elements))
        snips = summarise("snips", matrix, sums[0], boot).overall

    result = {
        "rows": log.height, "requests": int(log["req_idx"].max()) + 1, "slots_per_request": args.slots,
        "cpus": os.cpu_count(), "python": platform.python_version(), "polars": pl.__version__,
        "seconds": {
            "generate": round(t_gen, 3),
            "baseline_scan_join_group_by": round(t_base, 3),
            "baseline_two_columns": round(t_base2, 3),
            "load_and_check_log": round(t_load, 3), "load_policy_lists": round(t_lists, 3),
            "join_policy": round(t_join, 3), "estimators_all": round(t_est, 3),
            "estimators_without_dr": round(t_est_nodr, 3), "point_total": round(point_total, 3),
            "popularity_policy": round(t_pop, 3),
            "bootstrap_matrix": round(t_matrix, 3), "bootstrap_resamples": round(t_boot, 3),
        },
        "ratios_vs_baseline": {
            "estimators_only": round(t_est / t_base, 2),
            "point_total": round(point_total / t_base, 2),
            "point_total_without_dr": round((point_total - t_est + t_est_nodr) / t_base, 2),
        },
        "goals": {"point_estimates_within_3x": point_total / t_base <= 3,
                  f"bootstrap_{args.bootstrap}_under_60s": t_matrix + t_boot < 60},
        "n_bootstrap": args.bootstrap,
        "snips": {"estimate": snips.estimate, "low": snips.low, "high": snips.high, "true_ctr": truth},
        "ips_estimate": est["ips"].overall.estimate,
        "peak_rss_mb": round(_peak_mb(), 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(args.out.name + ".tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    os.replace(tmp_out, args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
