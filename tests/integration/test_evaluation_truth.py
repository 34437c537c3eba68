"""Offline estimates against the simulator's ground truth (issue 5, CI-sized; the full run with 20
seeds and the offline/online agreement is benchmarks/bench_replay_truth.py).

Target: the oracle lists of the truth over each request's *true candidates* (so the logging
propensities, eps-greedy with eps = 0.2, apply to whatever it shows); it differs strongly from the
logged greedy ranking. Its true CTR is GroundTruth.expected_reward of the same lists on the same
logged slots.

Why these thresholds cannot flake: each world and each bootstrap is seeded, so the test is
deterministic; the thresholds are chosen so that a *correct* estimator would pass for almost any
choice of seeds, and the numbers below are the probabilities of failing by chance.
- Coverage: with N_SEEDS = 10 independent worlds, a nominal 95% interval misses k ~ Bin(10, 0.05)
  times; we allow up to 3 misses (>= 70% covered): P(>= 4 misses) = 0.001 (0.013 even if the
  percentile bootstrap only reached 90% coverage). The benchmark measures 95% for both.
- Mean error: for an unbiased estimator the mean of 10 errors has sd ~ SE / sqrt(10), so
  |mean error| < 1 SE (the mean per-seed bootstrap SE) fails with P(|Z| > 3.16) = 0.0016. A bias
  of one SE, which coverage alone barely sees, fails it.
- Negative control: the naive logged CTR is ~30 of its own SEs below the oracle's truth in these
  worlds (the oracle is far better than the logged greedy), so it must miss in every seed.
"""

from __future__ import annotations

import numpy as np
import pytest

from recsys.evaluation.columns import EvalOptions
from recsys.evaluation.logs import load_log
from recsys.evaluation.validation import check_against_truth, log_requests
from recsys.simulation.run import load_truth, simulate
from tests.conftest import tiny_config

N_SEEDS = 10
MIN_COVERED = 7
FEED_SLOTS = 10
OPTIONS = EvalOptions(n_bootstrap=400, seed=0)


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    out = []
    for seed in range(101, 101 + N_SEEDS):
        config = tiny_config(tmp_path_factory.mktemp(f"truth_{seed}"), seed=seed)
        simulate(config)
        truth = load_truth(config)
        log = load_log(config.raw_dir / "impressions.parquet", surface="feed")
        lists = truth.oracle_lists(log_requests(log), "feed", FEED_SLOTS)
        out.append(check_against_truth(truth, log, lists, surface="feed", options=OPTIONS,
                                       estimators=("naive", "ips", "snips")))
    return out


def _standard_error(check, name: str) -> float:
    o = check.estimates[name].overall
    return (o.high - o.low) / (2 * 1.96)


@pytest.mark.parametrize("estimator", ["ips", "snips"])
def test_intervals_cover_the_true_ctr_of_the_target_in_most_seeds(checks, estimator):
    covered = [c.covered(estimator) for c in checks]
    assert sum(covered) >= MIN_COVERED, [c.row(estimator) for c in checks]


@pytest.mark.parametrize("estimator", ["ips", "snips"])
def test_mean_error_over_seeds_is_under_one_standard_error(checks, estimator):
    errors = np.array([c.error(estimator) for c in checks])
    se = np.mean([_standard_error(c, estimator) for c in checks])
    assert abs(errors.mean()) < se, (errors.mean(), se)


def test_naive_logged_ctr_misses_the_targets_truth(checks):
    assert not any(c.covered("naive") for c in checks), [c.row("naive") for c in checks]
    # ... and it is far off in units of the IPS standard error, not narrowly
    assert all(abs(c.error("naive")) > 1.5 * _standard_error(c, "ips") for c in checks)
