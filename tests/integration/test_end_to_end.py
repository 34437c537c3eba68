"""The whole path on the tiny world: simulate -> nightly -> serve (the real server on a socket,
model policy, epsilon > 0, Redis) -> simulated traffic (feed, menus, feedback by the true click
model) -> stop the server -> sink -> a Parquet impressions log that the evaluator's contract
accepts, with the propensities of the exploration scheme and the feedback joined."""

from __future__ import annotations

import math
import threading
import uuid

import polars as pl
from rich.console import Console

from jobs.nightly import run_nightly
from jobs.sink import sink_job
from recsys.evaluation.logs import load_log
from recsys.serving.client import RecommenderClient
from recsys.serving.server import serve
from recsys.simulation.run import load_truth, simulate
from recsys.simulation.traffic import TrafficSettings, run_traffic
from recsys.testing import free_port
from tests.conftest import tiny_config

EPS = 0.3
# One small ALS grid point; ranker windows that fit the tiny world's 14 days (as test_online_path),
# a small true-CTR check and no feature-cost timing (speed; the rankers are tested elsewhere).
FAST_TRAINING = {"search": {"factors": [8], "regularization": [0.1], "alpha": [2.0], "iterations": [5], "trials": 1},
                 "ranker": {"window_days": 3, "heldout_days": 3, "negative_rate": 1.0, "eval_requests": 200,
                            "cost_sample_rows": 0}}


def _wait_serving(addr: str, thread: threading.Thread, seconds: float = 60) -> None:
    with RecommenderClient(addr, timeout=1) as client:
        client.wait_until_serving(thread.is_alive, seconds)


def test_simulate_nightly_serve_traffic_sink_lands_a_log_the_evaluator_accepts(tmp_path, redis_url):
    port = free_port()
    config = tiny_config(tmp_path, online_store=redis_url, project=f"e2e_{uuid.uuid4().hex[:8]}",
                         training=FAST_TRAINING,
                         serving={"port": port, "policy": "model", "epsilon": EPS, "metrics_port": None,
                                  "reload_poll_seconds": 0, "grace_seconds": 2.0})
    # simulate -> nightly
    simulate(config)
    nightly = run_nightly(config, console=Console(record=True, width=200))
    assert nightly["steps"]["publish"]["published"], nightly["steps"]
    version = nightly["steps"]["register"]["version"]

    # serve: the production entry point (model policy, event log under data_dir/events/worker-0)
    stop = threading.Event()
    server = threading.Thread(target=serve, args=(config,), kwargs={"stop": stop}, daemon=True)
    server.start()
    addr = f"127.0.0.1:{port}"
    try:
        _wait_serving(addr, server)
        settings = TrafficSettings(users=40, requests=150, seed=3, feed_k=config.sim.feed_slots,
                                   menu_k=config.sim.menu_slots, max_seconds=40, explain=True, keep_lists=True)
        traffic = run_traffic(addr, load_truth(config), settings)
    finally:
        stop.set()
        server.join(30)
    assert not server.is_alive(), "the server did not stop"

    assert traffic.errors == {} and traffic.requests == 150 and traffic.foreign_entries == 0
    assert traffic.feed_requests > 0 and traffic.menu_requests > 0 and traffic.clicks > 0
    assert traffic.feedback_accepted == traffic.feedback_sent > 0
    assert 0 < traffic.true_ctr < 1 and traffic.degraded_share < 1
    served = {s.ranked.request_id: s for s in traffic.served}
    assert len(served) == traffic.requests
    assert {s.ranked.model_version for s in traffic.served if not s.ranked.degraded} == {version}

    # sink -> the impressions log the evaluator reads
    report = sink_job(config, flush=True)
    assert report.requests == traffic.requests and report.quarantined_requests == 0
    assert report.feedback_joined == traffic.feedback_sent and report.feedback_late == 0
    log_dir = config.data_dir / config.serving.sink_dir
    feed = load_log(log_dir, surface="feed", columns=("*",))
    menu = load_log(log_dir, surface="menu", columns=("*",))
    assert feed.height + menu.height == report.rows == traffic.slots
    assert feed["request_id"].n_unique() == traffic.feed_requests
    assert menu["request_id"].n_unique() == traffic.menu_requests
    log = pl.concat([feed.select("request_id", "position", "propensity", "n_candidates", "clicked", "ordered",
                                 "policy"),
                     menu.select("request_id", "position", "propensity", "n_candidates", "clicked", "ordered",
                                 "policy")])
    assert int(log["clicked"].sum()) == traffic.clicks and int(log["ordered"].sum()) == traffic.orders

    # propensities: (1 - eps) [greedy puts the entry here] + eps / n, exactly as served
    explored_lists = 0
    for row in log.iter_rows(named=True):
        s = served[str(row["request_id"])]
        entry = s.ranked.entries[row["position"]]
        assert row["n_candidates"] == s.ranked.n_candidates and row["policy"] == s.ranked.model_version
        greedy_here = entry.explanation["greedy_rank"] == entry.position
        expected = (1 - EPS) * greedy_here + EPS / row["n_candidates"]
        assert math.isclose(row["propensity"], expected, rel_tol=1e-12), (row, dict(entry.explanation))
        assert math.isclose(entry.propensity, expected, rel_tol=1e-12)
        assert row["clicked"] == s.clicked[row["position"]] and row["ordered"] == s.ordered[row["position"]]
    for s in traffic.served:
        explored = {bool(e.explanation["explored"]) for e in s.ranked.entries}
        assert len(explored) <= 1
        explored_lists += explored == {True}
        if explored == {False}:  # greedy list: every entry where the greedy ranking puts it
            assert all(e.explanation["greedy_rank"] == e.position for e in s.ranked.entries)
    assert 0 < explored_lists < len(traffic.served)  # both branches of the scheme were served
