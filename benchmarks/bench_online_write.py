"""Online write throughput on Redis: Feast materialize vs write_to_online_store vs our bulk writer.

The same N rows of ``user_embedding`` (``--dim`` float32 + model_version) are written three ways
in one run, each into its own Feast project (so each starts from an empty keyspace and none is
skipped as "not newer"), then a random sample is read back with ``get_online_features`` and
compared with what was written. Prints rows/s and the ratios; writes JSON to --out.

    python benchmarks/bench_online_write.py --n 100000 [--redis redis://host:port]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from recsys.testing import LocalRedis
from recsys.config import Config
from recsys.features import store as fstore
from recsys.features.bulk_write import write_online

VIEW = "user_embedding"
T0 = datetime(2026, 10, 28, tzinfo=timezone.utc)


def make_rows(n: int, dim: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    return pl.DataFrame({
        "user_id": np.arange(n, dtype=np.int64),
        "embedding": pl.Series(list(emb), dtype=pl.List(pl.Float32)),
        "model_version": ["bench-v1"] * n,
        "event_timestamp": [T0] * n,
        "created_timestamp": [T0] * n,
    })


def check_sample(fs, rows: pl.DataFrame, k: int, seed: int) -> int:
    ids = np.random.default_rng(seed).choice(rows.height, min(k, rows.height), replace=False)
    got = fs.get_online_features(features=[f"{VIEW}:embedding", f"{VIEW}:model_version"],
                                 entity_rows=[{"user_id": int(i)} for i in ids]).to_dict()
    for i, emb, version in zip(ids, got["embedding"], got["model_version"]):
        want = rows["embedding"][int(i)].to_numpy()
        if emb is None or not np.array_equal(np.asarray(emb, dtype=np.float32), want) or version != "bench-v1":
            raise SystemExit(f"read-back mismatch for user_id={i}")
    return len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--redis", default=None, help="redis://host:port[/db]; default: a throwaway server")
    parser.add_argument("--sample", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "online_write.json")
    args = parser.parse_args()

    server = None if args.redis else LocalRedis().start()
    url = args.redis or server.url
    try:
        with tempfile.TemporaryDirectory(prefix="bench_online_write_") as tmp:
            rows = make_rows(args.n, args.dim, seed=0)
            results = run(Path(tmp), url, rows, args.batch_size, args.sample)
    finally:
        if server is not None:
            server.stop()

    base = results["materialize"]["rows_per_s"]
    report = {
        "benchmark": "online_write", "view": VIEW, "n_rows": args.n, "dim": args.dim,
        "batch_size": args.batch_size, "online_store": "redis",
        "python": platform.python_version(), "machine": platform.machine(),
        "methods": results,
        "ratios_vs_materialize": {m: r["rows_per_s"] / base for m, r in results.items()},
        "bulk_vs_write_to_online_store": results["bulk_write"]["rows_per_s"] / results["write_to_online_store"]["rows_per_s"],
        "goal_bulk_vs_materialize": 5.0,
    }
    report["goal_met"] = report["ratios_vs_materialize"]["bulk_write"] >= report["goal_bulk_vs_materialize"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n")
    tmp_out.replace(args.out)

    print(f"{'method':<24}{'seconds':>10}{'rows/s':>14}{'x materialize':>15}")
    for method, r in results.items():
        print(f"{method:<24}{r['seconds']:>10.2f}{r['rows_per_s']:>14,.0f}{report['ratios_vs_materialize'][method]:>15.1f}")
    print(f"bulk / write_to_online_store: {report['bulk_vs_write_to_online_store']:.1f}x; "
          f"goal bulk >= 5x materialize: {'met' if report['goal_met'] else 'NOT met'}; wrote {args.out}")


def run(tmp: Path, url: str, rows: pl.DataFrame, batch_size: int, sample: int) -> dict[str, dict]:
    results: dict[str, dict] = {}
    stores = {}
    for method in ("materialize", "write_to_online_store", "bulk_write"):
        config = Config(data_dir=tmp, online_store=url, project=f"bench_{method}_{int(time.time())}")
        fs = fstore.open_store(config)
        fstore.apply(config, store=fs)
        stores[method] = fs
    (tmp / "offline").mkdir(exist_ok=True)
    rows.write_parquet(tmp / "offline" / f"{VIEW}.parquet")
    pandas_rows = rows.to_pandas()

    t = time.perf_counter()
    stores["materialize"].materialize(start_date=T0 - timedelta(days=1), end_date=T0 + timedelta(seconds=1),
                                      feature_views=[VIEW])
    results["materialize"] = {"seconds": time.perf_counter() - t}

    t = time.perf_counter()
    stores["write_to_online_store"].write_to_online_store(VIEW, df=pandas_rows)
    results["write_to_online_store"] = {"seconds": time.perf_counter() - t}

    t = time.perf_counter()
    written = write_online(stores["bulk_write"], VIEW, rows, batch_size=batch_size)
    results["bulk_write"] = {"seconds": time.perf_counter() - t}
    if written != rows.height:
        raise SystemExit(f"bulk writer wrote {written} of {rows.height} rows")

    for method, fs in stores.items():
        results[method]["rows_per_s"] = rows.height / results[method]["seconds"]
        results[method]["checked_rows"] = check_sample(fs, rows, sample, seed=1)
    return results


if __name__ == "__main__":
    sys.exit(main())
