"""Menu ranker benchmark: true CTR of the ranker vs ALS-only vs popularity vs the oracle, same run.

On a simulated world of ``--size`` (default small; simulated into ``--data-dir`` if not there,
then validated, features built and the Feast registry applied), windows by day: ALS-train
[start, t1 = days/2), ranker-train [t1, t2 = 3 days/4), held-out [t2, end). Reports:
- the held-out log comparison (explored requests: per-request AUC / NDCG, ranker vs ALS-only);
- true CTR per slot on ``--eval-requests`` held-out menu requests (ground truth) of the ranker,
  ALS-only, popularity (click counts before t2), random and the oracle, and each policy's share
  of the popularity -> oracle gap closed (the issue's bar: >= 50%, ranker > ALS-only);
- reference policies scored with the TRUE parameters (what a perfect estimate of each part of the
  click model would close), to show where the ceiling of the available features lies;
- the feature report (ablation gain and cost per group), timings and peak memory.

``--days`` overrides the preset's simulated days (the history each user and item has): the gap
closed is data-bound on the small preset, so this is how to measure it against history length.

Run: ``OPENBLAS_NUM_THREADS=1 python -m benchmarks.bench_ranker [--size small] [--days 56]``.
Writes benchmarks/results/ranker.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from benchmarks.common import peak_rss_mb, timer, write_result  # noqa: E402
from recsys.config import load_config  # noqa: E402
from recsys.ranking.exploration import rank_within_groups  # noqa: E402
from recsys.simulation.run import load_truth, simulate  # noqa: E402
from recsys.training.params import ALSParams  # noqa: E402
from recsys.training.ranker_data import candidate_rows, menu_requests  # noqa: E402
from recsys.training.ranker_fit import RankerSettings, train_ranker  # noqa: E402


def prepare(config) -> dict:
    from jobs.nightly import step_apply, step_features, step_validate

    out = {}
    if not (config.raw_dir / "impressions.parquet").exists():
        with timer() as t:
            simulate(config)
        out["simulate_seconds"] = round(t["seconds"], 2)
    with timer() as t:
        for step in (step_validate, step_features, step_apply):
            step(config, None)
    out["validate_features_apply_seconds"] = round(t["seconds"], 2)
    return out


def truth_references(truth, requests: pl.DataFrame, slots: int) -> dict:
    """True CTR of policies that rank by exact parts of the click model (no estimation error)."""
    w = truth.world
    c = candidate_rows(truth, requests)
    u, i, g = c["user_id"].to_numpy(), c["item_id"].to_numpy(), c["group"].to_numpy()
    ts = c["ts"].dt.epoch("us").to_numpy()
    hour = (ts // 3_600_000_000) % 24
    m = truth.model
    pop = m.menu_pop * w.item_log_pop[i]
    season = m.season * truth._category_hour[w.item_category[i], hour]
    price = m.menu_price * w.user_price_sens[u] * w.item_rel_price[i]
    taste = m.menu_taste * np.einsum("nd,nd->n", truth.taste(u, ts), w.item_taste[i])

    def value(score):
        rank = rank_within_groups(g, -score, i)
        keep = rank < slots
        lists = pl.DataFrame({"request_id": c["request_id"].to_numpy()[keep],
                              "position": rank[keep].astype(np.int16), "item_id": i[keep]})
        return truth.expected_reward(lists, requests, "menu")

    return {"true_pop": value(pop), "true_pop+season+price": value(pop + season - price),
            "true_pop+season+price+taste": value(pop + season - price + taste)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", choices=["tiny", "small", "medium", "large", "xl"])
    ap.add_argument("--data-dir", type=Path, default=None, help="reuse/create the world here (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--days", type=int, default=None, help="simulated days (default: the size preset's)")
    ap.add_argument("--factors", type=int, default=16)
    ap.add_argument("--regularization", type=float, default=1.0)
    ap.add_argument("--alpha", type=float, default=10.0)
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--eval-requests", type=int, default=2000)
    ap.add_argument("--negative-rate", type=float, default=1.0)
    args = ap.parse_args()

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix=f"recsys-bench-ranker-{args.size}-"))
    config = load_config(environ={}, data_dir=data_dir, seed=args.seed).with_overrides(sim={"size": args.size, "days": args.days})
    days = config.sim.resolved()["days"]
    out: dict = {"size": args.size, "seed": args.seed, "days": days, **prepare(config)}
    from recsys.features.store import open_store

    store = open_store(config)
    log = pl.scan_parquet(config.clean_dir / "impressions.parquet")
    first, last = log.select(pl.col("ts").min().alias("a"), pl.col("ts").max().alias("b")).collect().row(0)
    day0 = first.replace(hour=0, minute=0, second=0, microsecond=0)
    t1, t2 = day0 + timedelta(days=days // 2), day0 + timedelta(days=days * 3 // 4)
    end = last + timedelta(microseconds=1)
    params = ALSParams(factors=args.factors, regularization=args.regularization, alpha=args.alpha,
                       iterations=args.iterations)
    settings = RankerSettings(eval_requests=args.eval_requests, negative_rate=args.negative_rate)
    truth = load_truth(config)
    with timer() as t:
        result = train_ranker(config, store, config.clean_dir, params, args.seed, t1, t2, end, truth=truth,
                              settings=settings)
    out["train_ranker_seconds"] = round(t["seconds"], 2)
    out.update(ships=result.ships, reason=result.reason, metrics=result.metrics, feature_report=result.feature_report)
    requests = menu_requests(log, t2, end, args.eval_requests, args.seed)  # the same sample train_ranker used
    refs = truth_references(truth, requests, settings.menu_slots)
    ctr = result.metrics["true_ctr"]
    gap = ctr["oracle"] - ctr["popularity"]
    out["truth_references"] = {k: {"true_ctr": v, "gap_closed": (v - ctr["popularity"]) / gap} for k, v in refs.items()}
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    path = write_result("ranker", out)
    print(f"{args.size}: ranker {ctr['policies']['ranker']:.4f} ALS-only {ctr['policies']['als_only']:.4f} "
          f"popularity {ctr['popularity']:.4f} oracle {ctr['oracle']:.4f} random {ctr['random']:.4f}")
    print(f"gap closed: ranker {ctr['gap_closed']['ranker']:.1%}, ALS-only {ctr['gap_closed']['als_only']:.1%}; "
          "references " + ", ".join(f"{k} {v['gap_closed']:.1%}" for k, v in out["truth_references"].items()))
    print(f"ships={result.ships}: {result.reason}")
    print(f"flagged feature groups: {result.feature_report['flagged']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
