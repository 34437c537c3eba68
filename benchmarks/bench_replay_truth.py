"""Offline estimates against the simulator's ground truth: coverage over 20 worlds, and
offline/online agreement of the policy ranking (issue 5; the CI-sized version is
tests/integration/test_evaluation_truth.py).

Per seed, two "small" worlds (300 restaurants, 28 days) that differ only in logging (and size):

1. eps-greedy logging (eps = 0.2, the product's setting), 3,000 users, the whole feed log. Target: the oracle
   lists (each request's true candidates by true attractiveness). IPS, SNIPS and DR should cover
   its true CTR; replay is reported too, as the case where its assumption fails (matching is
   driven by the greedy ranking, so the matched events are not a random sample of the target's
   slots); the naive logged CTR is the negative control and must miss.
2. Uniform logging (eps = 1), 6,000 users, restricted to the requests with the most common candidate count
   n: there every entry has the same propensity 1/n at every position, the setting of Li et al.
   (2011) where replay is unbiased. Over *all* requests replay is not: a request with n
   candidates matches with probability 1/n, so replay weights requests by 1/n, i.e. over-weights
   requests with few candidates (worse oracle lists) -- IPS corrects exactly that.
3. Agreement, on the second half (by time) of the eps-greedy log, with popularity counted on the
   first half: oracle, the oracle with N(0, 1) and N(0, 1.5) logit noise (two policies close in
   quality), popularity, the logging policy's greedy ranking, and a random ranking of the
   candidates. Spearman of the SNIPS ranking vs the true ranking, per world and over worlds.

Stated in advance, the width bounds: the 95% interval of IPS, SNIPS and DR on the eps-greedy
small world is narrower than 0.03 (the true CTR is ~0.11: +-14%); replay on the uniform subset
(a tenth of the requests of the doubled uniform world) narrower than 0.06. (The first 20-world run
used a uniform world of the preset's size, ~480 matched events: one world of 20 gave 0.063.)

Usage: ``python benchmarks/bench_replay_truth.py [--seeds 20] [--bootstrap 500]``; writes
benchmarks/results/replay_truth.json and replay_truth.html.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from scipy.stats import spearmanr

from benchmarks.common import RESULTS_DIR, peak_rss_mb
from recsys.config import load_config
from recsys.evaluation.columns import EvalOptions
from recsys.evaluation.logs import load_log
from recsys.evaluation.report import write_truth_report
from recsys.evaluation.validation import (
    candidate_lists,
    check_against_truth,
    entity_score,
    log_requests,
    noisy_oracle_score,
    random_score,
    subset_requests,
)
from recsys.simulation.calibration import popularity_scores
from recsys.simulation.run import load_truth, simulate
from recsys.simulation.sampler import (
    feed_greedy_score,  # the logging policy's own greedy score
)

SLOTS = 10
WIDTH_BOUND = {"ips": 0.03, "snips": 0.03, "dr": 0.03, "replay": 0.06}
COVERAGE_GOAL = 0.9
# The uniform world has twice the users of the preset: replay keeps 1/n of the equal-n subset (a
# tenth of the requests), ~480 matched events at the preset's size, where a binomial 95% interval
# at CTR 0.1 is already ~0.055 wide; doubled, ~960 events and ~0.04.
UNIFORM_USERS_FACTOR = 2


def resolved_users(size: str) -> int:
    return load_config(environ={}).with_overrides(sim={"size": size}).sim.resolved()["n_users"]
POLICIES = ("oracle", "oracle+noise1.0", "oracle+noise1.5", "popularity", "logged greedy", "random")


def world(tmp: Path, seed: int, epsilon: float, size: str, n_users: int | None = None):
    config = load_config(environ={}, data_dir=tmp / f"{seed}_{epsilon}", seed=seed).with_overrides(
        sim={"size": size, "epsilon": epsilon, "n_users": n_users})
    simulate(config)
    return load_truth(config), load_log(config.raw_dir / "impressions.parquet", surface="feed")


def scorers(truth, history: pl.DataFrame, seed: int) -> dict:
    return {
        "oracle": noisy_oracle_score(truth, "feed", 0.0, seed),
        "oracle+noise1.0": noisy_oracle_score(truth, "feed", 1.0, seed),
        "oracle+noise1.5": noisy_oracle_score(truth, "feed", 1.5, seed + 1),
        "popularity": entity_score(popularity_scores(history, "feed", truth.world.n_restaurants)),
        "logged greedy": lambda user, entity, ts: feed_greedy_score(truth.world, truth, user, entity),
        "random": random_score(seed),
    }


def one_seed(tmp: Path, seed: int, size: str, options: EvalOptions) -> dict:
    out: dict = {"seed": seed}
    truth, log = world(tmp, seed, 0.2, size)
    oracle = truth.oracle_lists(log_requests(log), "feed", SLOTS)
    check = check_against_truth(truth, log, oracle, surface="feed", options=options)
    out["greedy_logging"] = {name: check.row(name) for name in check.estimates}

    utruth, ulog = world(tmp, seed, 1.0, size, n_users=UNIFORM_USERS_FACTOR * resolved_users(size))
    n = ulog["n_candidates"]
    mode = int(n.mode().sort()[0])
    uniform = subset_requests(ulog, pl.col("n_candidates") == mode)
    ucheck = check_against_truth(utruth, uniform, utruth.oracle_lists(log_requests(uniform), "feed", SLOTS),
                                 surface="feed", options=options, estimators=("naive", "replay", "ips", "snips"))
    out["uniform_logging_equal_n"] = {name: ucheck.row(name) for name in ucheck.estimates}
    out["uniform_logging_equal_n"]["n_candidates"] = mode
    out["uniform_logging_equal_n"]["requests"] = int(uniform["req_idx"].max()) + 1
    ucheck_all = check_against_truth(utruth, ulog, utruth.oracle_lists(log_requests(ulog), "feed", SLOTS),
                                     surface="feed", options=options, estimators=("replay", "ips"))
    out["uniform_logging_all_n"] = {name: ucheck_all.row(name) for name in ucheck_all.estimates}

    cut = log["ts"].min() + (log["ts"].max() - log["ts"].min()) / 2
    history, test = log.filter(pl.col("ts") < cut), subset_requests(log, pl.col("ts") >= cut)
    requests = log_requests(test)
    rows = []
    for name, score in scorers(truth, history, seed).items():
        c = check_against_truth(truth, test, candidate_lists(truth, requests, "feed", SLOTS, score),
                                surface="feed", options=options, estimators=("snips",))
        rows.append({"policy": name, **c.row("snips")})
    rho = spearmanr([r["estimate"] for r in rows], [r["truth"] for r in rows]).statistic
    for key, col in (("rank_truth", "truth"), ("rank_estimate", "estimate")):
        order = np.argsort([-r[col] for r in rows])
        for rank, i in enumerate(order, start=1):
            rows[i][key] = rank
    out["agreement"] = {"policies": rows, "spearman": float(rho)}
    return out


def coverage_rows(runs: list[dict], check: str, estimators: tuple[str, ...]) -> list[dict]:
    rows = []
    for name in estimators:
        r = [run[check][name] for run in runs]
        err = np.array([x["error"] for x in r])
        width = np.array([x["width"] for x in r])
        se = width / (2 * 1.96)
        bound = WIDTH_BOUND.get(name)
        rows.append({
            "check": check, "estimator": name, "seeds": len(r),
            "coverage": float(np.mean([x["covered"] for x in r])),
            "mean_error": float(err.mean()), "mean_se": float(se.mean()),
            "se_of_mean_error": float(err.std(ddof=1) / np.sqrt(len(r))),
            "mean_abs_error": float(np.abs(err).mean()),
            "mean_width": float(width.mean()), "max_width": float(width.max()),
            "width_bound": bound if bound is not None else float("nan"),
            "mean_truth": float(np.mean([x["truth"] for x in r])),
            "mean_matched": float(np.mean([x["matched"] for x in r])),
            "mean_ess": float(np.mean([x["ess"] for x in r])),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--size", default="small")
    parser.add_argument("--bootstrap", type=int, default=500)
    args = parser.parse_args()
    options = EvalOptions(n_bootstrap=args.bootstrap, seed=0)
    started = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_replay_truth_") as tmp:
        for seed in range(1, args.seeds + 1):
            runs.append(one_seed(Path(tmp), seed, args.size, options))
            a = runs[-1]["greedy_logging"]
            print(f"seed {seed:2d}: truth {a['snips']['truth']:.4f} snips {a['snips']['estimate']:.4f} "
                  f"ips {a['ips']['estimate']:.4f} naive {a['naive']['estimate']:.4f} "
                  f"spearman {runs[-1]['agreement']['spearman']:.3f}", flush=True)
    coverage = (coverage_rows(runs, "greedy_logging", ("ips", "snips", "dr", "replay", "naive"))
                + coverage_rows(runs, "uniform_logging_equal_n", ("replay", "ips", "snips", "naive"))
                + coverage_rows(runs, "uniform_logging_all_n", ("replay", "ips")))
    rhos = np.array([r["agreement"]["spearman"] for r in runs])
    pooled = []
    for i, name in enumerate(POLICIES):
        per = [r["agreement"]["policies"][i] for r in runs]
        pooled.append({"policy": name, "truth": float(np.mean([p["truth"] for p in per])),
                       "estimate": float(np.mean([p["estimate"] for p in per])),
                       "coverage": float(np.mean([p["covered"] for p in per]))})
    pooled_rho = float(spearmanr([p["estimate"] for p in pooled], [p["truth"] for p in pooled]).statistic)
    example = runs[0]
    agreement = {
        "seeds": len(runs), "policies": list(POLICIES), "example_seed": example["seed"],
        "example": example["agreement"]["policies"], "example_spearman": example["agreement"]["spearman"],
        "per_seed_spearman": rhos.tolist(), "mean_spearman": float(rhos.mean()),
        "min_spearman": float(rhos.min()), "share_at_least_0_9": float((rhos >= 0.9).mean()),
        "pooled": pooled, "pooled_spearman": pooled_rho,
    }
    by = {(c["check"], c["estimator"]): c for c in coverage}
    goals = {
        f"{e}_coverage_at_least_90pct": by[("greedy_logging", e)]["coverage"] >= COVERAGE_GOAL for e in ("ips", "snips")
    }
    goals["replay_coverage_at_least_90pct_uniform_equal_n"] = (
        by[("uniform_logging_equal_n", "replay")]["coverage"] >= COVERAGE_GOAL)
    for check, e in (("greedy_logging", "ips"), ("greedy_logging", "snips"), ("uniform_logging_equal_n", "replay")):
        c = by[(check, e)]
        goals[f"{e}_{check}_mean_error_under_one_se"] = abs(c["mean_error"]) < c["mean_se"]
        goals[f"{e}_{check}_width_under_bound"] = c["max_width"] < WIDTH_BOUND[e]
    goals["negative_control_naive_misses"] = by[("greedy_logging", "naive")]["coverage"] == 0.0
    goals["spearman_at_least_0_9_example"] = agreement["example_spearman"] >= 0.9
    goals["spearman_at_least_0_9_pooled"] = pooled_rho >= 0.9
    s = by[("greedy_logging", "snips")]
    headline = (f"Over {len(runs)} simulated worlds the SNIPS 95% interval covered the oracle policy's true CTR "
                f"in {100 * s['coverage']:.0f}% (IPS {100 * by[('greedy_logging', 'ips')]['coverage']:.0f}%), "
                f"mean error {s['mean_error']:+.4f} vs standard error {s['mean_se']:.4f}; the ranking of "
                f"{len(POLICIES)} policies by SNIPS agrees with the truth with Spearman "
                f"{agreement['mean_spearman']:.2f} on average per world ({pooled_rho:.2f} pooled).")
    summary = {
        "benchmark": "replay_truth", "headline": headline,
        "setup": (f"{len(runs)} seeds x {args.size} worlds (feed, {SLOTS} slots), eps-greedy logging eps=0.2 and "
                  f"({UNIFORM_USERS_FACTOR}x users) "
                  f"uniform logging eps=1; {args.bootstrap} Poisson-bootstrap resamples over requests."),
        "seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "coverage": coverage, "agreement": agreement, "goals": goals, "runs": runs,
    }
    json_path, html_path = write_truth_report(summary, RESULTS_DIR / "replay_truth.json",
                                              RESULTS_DIR / "replay_truth.html")
    print(headline)
    for c in coverage:
        print(f"{c['check']:24s} {c['estimator']:7s} coverage {c['coverage']:.2f} mean error {c['mean_error']:+.4f} "
              f"mean SE {c['mean_se']:.4f} mean width {c['mean_width']:.4f} max width {c['max_width']:.4f}")
    print("agreement:", {k: agreement[k] for k in ("mean_spearman", "min_spearman", "share_at_least_0_9",
                                                   "pooled_spearman", "example_spearman")})
    print("goals:", goals)
    print(f"wrote {json_path} and {html_path}")


if __name__ == "__main__":
    main()
