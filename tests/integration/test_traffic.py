"""Simulated traffic against a real server: bounded, loopback only, seeded, clicks by the truth,
feedback accepted for the served request ids; `recsys simulate traffic` prints the summary and
`recsys simulate` still simulates."""

from __future__ import annotations

import math
from datetime import timezone

import numpy as np
import pytest
from typer.testing import CliRunner

from recsys.cli import _register, app
from recsys.serving.domain import Entry, RankedList
from recsys.serving.eventlog import EventLog
from recsys.serving.fallback import PopularityRecommender
from recsys.serving.metrics import Metrics
from recsys.serving.server import create_server
from recsys.serving.settings import ServingConfig
from recsys.simulation.run import load_truth
from recsys.simulation.traffic import TrafficError, TrafficSettings, check_loopback, run_traffic
from tests.integration.test_server import validated_world

EPS = 0.2


@pytest.fixture(scope="module")
def running(tiny_world, tmp_path_factory):
    world = validated_world(tiny_world, tmp_path_factory.mktemp("traffic_world"))
    settings = ServingConfig(epsilon=EPS, metrics_port=None)
    recommender = PopularityRecommender.for_config(world, settings).load()
    log = EventLog(tmp_path_factory.mktemp("traffic_events") / "worker-0").open()
    server = create_server(settings, recommender, log, metrics=Metrics())
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield {"addr": f"127.0.0.1:{port}", "world": world, "log": log}
    server.stop(1).wait()
    log.close()


class FakeClient:
    """Answers every call with the same lists (ids 0..k-1 of the restaurant): no server, no randomness."""

    def __init__(self, truth):
        self.truth, self.calls, self.feedback = truth, 0, []

    def _list(self, ids) -> RankedList:
        self.calls += 1
        return RankedList(f"r{self.calls}", "fake", tuple(Entry(str(i), 0.0, p, 1.0) for p, i in enumerate(ids)),
                          n_candidates=len(ids))

    def recommend_restaurants(self, user_id, k, **_):
        return self._list(range(k))

    def recommend_items(self, user_id, restaurant_id, k, **_):
        offsets = self.truth.world.menu_offsets
        r = int(restaurant_id)
        return self._list(range(offsets[r], min(offsets[r] + k, offsets[r + 1])))

    def log_feedback(self, events, **_):
        self.feedback.extend(events)
        return len(events)


@pytest.mark.parametrize("addr", ["8.8.8.8:50051", "example.invalid:1", "127.0.0.1", "127.0.0.1:0", ":80"])
def test_only_loopback_host_port_addresses_are_accepted(addr):
    with pytest.raises(TrafficError, match="addr"):
        check_loopback(addr)
    assert check_loopback("127.0.0.1:50051") == "127.0.0.1:50051"
    assert check_loopback("localhost:50051") == "localhost:50051"


def test_the_same_seed_and_lists_give_the_same_clicks_and_the_budget_holds(tiny_world):
    truth = load_truth(tiny_world)
    settings = TrafficSettings(users=10, requests=60, seed=5, feed_k=10, menu_k=8)
    runs = []
    for _ in range(2):
        client = FakeClient(truth)
        summary = run_traffic("127.0.0.1:1", truth, settings, client=client)
        assert summary.requests == client.calls == 60
        runs.append((summary.to_dict() | {"seconds": 0}, [(f.request_id, f.entity_id, f.kind) for f in client.feedback]))
    assert runs[0] == runs[1]
    client = FakeClient(truth)
    run_traffic("127.0.0.1:1", truth, TrafficSettings(users=10, requests=60, seed=6), client=client)
    assert [(f.request_id, f.entity_id, f.kind) for f in client.feedback] != runs[0][1]  # another seed, other clicks


def test_traffic_clicks_by_the_truth_and_its_feedback_is_accepted(running):
    truth = load_truth(running["world"])
    settings = TrafficSettings(users=30, requests=300, seed=1, feed_k=10, menu_k=8, keep_lists=True)
    summary = run_traffic(running["addr"], truth, settings)
    assert summary.requests == 300 and summary.errors == {} and summary.foreign_entries == 0
    assert summary.feedback_accepted == summary.feedback_sent == summary.clicks + summary.orders
    assert summary.degraded_share == 1.0  # the popularity policy flags every answer
    # the reported true CTR is the truth's click probability of each served slot, recomputed here
    p = []
    for s in summary.served:
        ids = np.array([int(e.id) for e in s.ranked.entries])
        pos = np.array([e.position for e in s.ranked.entries])
        ts = int(s.ts.astimezone(timezone.utc).timestamp() * 1_000_000)
        p.extend(truth.click_probability(s.surface, np.full(len(ids), s.user_id), ids, pos, np.full(len(ids), ts)))
    assert summary.slots == len(p) and math.isclose(summary.true_ctr, float(np.mean(p)), rel_tol=1e-9)
    # clicks drawn from those probabilities: within 4 standard deviations of their expectation
    p = np.array(p)
    assert abs(summary.clicks - p.sum()) < 4 * math.sqrt((p * (1 - p)).sum()) + 1
    # menus are opened only for clicked restaurants, within the budget
    feed_clicks = sum(sum(s.clicked) for s in summary.served if s.surface == "feed")
    assert 0 < summary.menu_requests <= feed_clicks


def test_the_cli_prints_the_summary_and_plain_simulate_still_simulates(running, tmp_path):
    _register()
    runner = CliRunner()
    world = running["world"]
    out = runner.invoke(app, ["--data-dir", str(world.data_dir), "simulate", "traffic", "--addr", running["addr"],
                              "--users", "5", "--requests", "20", "--seed", "2"],
                        env={"RECSYS_SIM__SIZE": "tiny", "COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "true_ctr" in out.output and "requests" in out.output and "20" in out.output
    refused = runner.invoke(app, ["--data-dir", str(world.data_dir), "simulate", "traffic", "--addr", "8.8.8.8:1"],
                            env={"RECSYS_SIM__SIZE": "tiny"})
    assert refused.exit_code != 0 and isinstance(refused.exception, TrafficError)
    sim = runner.invoke(app, ["--data-dir", str(tmp_path), "simulate", "--size", "tiny", "--seed", "7",
                              "--no-calibrate"], env={"COLUMNS": "200"})
    assert sim.exit_code == 0, sim.output
    assert "simulated" in sim.output and (tmp_path / "raw" / "impressions.parquet").exists()
