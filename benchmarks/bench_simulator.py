"""Simulator throughput: impressions per second at ~10M events, against a bare baseline.

Baseline measured in the same run: writing the same number of rows of random data with the same
schema to Parquet with pyarrow (what any generator must at least pay to land its output).

    python -m benchmarks.bench_simulator --users 250000 --restaurants 10000
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.common import peak_rss_mb, timer, write_result
from recsys.config import load_config
from recsys.simulation.run import simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="large")
    parser.add_argument("--users", type=int, default=250_000)
    parser.add_argument("--restaurants", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=28)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(environ={}, data_dir=Path(tmp)).with_overrides(
            sim=dict(size=args.size, n_users=args.users, n_restaurants=args.restaurants, days=args.days))
        with timer() as t_sim:
            summary = simulate(config)
        sim_peak = peak_rss_mb()
        log = pl.read_parquet(config.raw_dir / "impressions.parquet")
        rng = np.random.default_rng(0)
        n = log.height
        fake = log.select(pl.all().shuffle(seed=0))  # same schema and value distributions
        del log
        with timer() as t_base:
            fake.write_parquet(Path(tmp) / "baseline.parquet", compression="zstd")
        del rng
    events_s = summary.impressions / t_sim["seconds"]
    result = {
        "impressions": n, "users": summary.users, "restaurants": summary.restaurants, "items": summary.items,
        "simulate_seconds": round(t_sim["seconds"], 2), "events_per_second": round(events_s),
        "baseline_parquet_write_seconds": round(t_base["seconds"], 2),
        "ratio_simulate_to_write_only": round(t_sim["seconds"] / t_base["seconds"], 2),
        "peak_rss_mb": round(sim_peak),
    }
    print(f"simulated {n:,} impressions in {t_sim['seconds']:.1f}s = {events_s:,.0f} events/s; "
          f"writing the same rows alone takes {t_base['seconds']:.1f}s "
          f"(simulate/write = {result['ratio_simulate_to_write_only']}x); peak RSS {sim_peak:,.0f} MB")
    print("->", write_result("simulator", result))


if __name__ == "__main__":
    main()
