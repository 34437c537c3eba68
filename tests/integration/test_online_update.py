"""The online updater on a real server, real Redis and a nightly-published tiny world: once the job
has committed the micro-batch holding a user's new clicks, the user's online embedding is
implicit's exact user solve on the user's interactions including them, and the next RecommendItems
scores with it; clicks_1h counts each clicked impression once, across redelivery and restarts."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
import scipy.sparse as sp

from jobs.online_update import OnlineUpdateJob, log_root, offset_file
from recsys.features.store import open_store
from recsys.online import LogEvent, OnlineUpdater
from recsys.registry import Registry
from recsys.registry.publish import publish_version
from recsys.serving.eventlog import EventLogReader
from recsys.serving.recommender import ModelRecommender
from recsys.serving.settings import ServingConfig
from recsys.serving.v1 import recommender_pb2 as pb
from recsys.training.als import ALSModel
from recsys.training.interactions import build_interactions, scan_impressions
from tests.integration.test_online_path import (
    Server,
    candidates_of,
    items_call,
    known_users,
    republish_as,
)


@pytest.fixture(scope="module")
def world(published_copy):
    # A copy, not the shared `published`: the updater writes user embeddings and restaurant_realtime
    # rows (clicks, availability) online and keeps its event log and offsets in the data directory;
    # the tests count clicks exactly, so they need rows nobody else writes.
    return published_copy("online_update")


@pytest.fixture(scope="module")
def server(world):
    config, _ = world
    settings = ServingConfig(epsilon=0.0, metrics_port=None)
    recommender = ModelRecommender(config, settings, poll_seconds=0).load()
    s = Server(recommender, settings, log_root(config) / "worker-0")
    yield s
    s.close()
    recommender.close()


@pytest.fixture(scope="module")
def menu_model(world):
    config, version = world
    return ALSModel.load(Registry.for_config(config).open().version_dir(version) / "menu_als.npz")


def click(stub, request_id: str, item: str, kind=pb.EVENT_TYPE_CLICK) -> None:
    resp = stub.LogFeedback(pb.LogFeedbackRequest(events=[pb.FeedbackEvent(request_id=request_id, entity_id=item,
                                                                           type=kind)]), timeout=10)
    assert resp.accepted == 1


def online_embedding(config, user: int) -> tuple[np.ndarray, str]:
    row = open_store(config).get_online_features(
        features=["user_embedding:embedding", "user_embedding:model_version"],
        entity_rows=[{"user_id": user}]).to_dict()
    return np.asarray(row["embedding"][0], dtype=np.float32), row["model_version"][0]


def online_clicks(config, restaurant: int) -> dict[int, int]:
    row = open_store(config).get_online_features(
        features=["restaurant_realtime:item_ids", "restaurant_realtime:clicks_1h", "restaurant_realtime:available"],
        entity_rows=[{"restaurant_id": restaurant}]).to_dict()
    assert all(a == 1 for a in row["available"][0])
    return {int(i): int(c) for i, c in zip(row["item_ids"][0], row["clicks_1h"][0]) if c}


def expected_embedding(config, version, model: ALSModel, user: int, clicked: list[int]) -> np.ndarray:
    """implicit's recalculate_user on the training interactions + one click per clicked item."""
    meta = Registry.for_config(config).open().show(version)
    weights = config.training.weights
    history = build_interactions(scan_impressions(config.clean_dir), "menu", weights, until=meta.trained_until,
                                 user_ids=model.users.ids, entity_ids=model.entities.ids)
    row = history.rows([user]).toarray()
    for col in model.entities.index(np.array(clicked)):
        row[0, col] += weights.click
    return model.recalculate_user(sp.csr_matrix(row.astype(np.float32)))


def best_known(cands: dict[int, list[int]], model: ALSModel) -> list[int]:
    """Restaurants, most candidates the menu model knows first."""
    return sorted(cands, key=lambda r: -len(known_items(model, cands[r])))


def known_items(model: ALSModel, ids) -> list[str]:
    return [i for i in ids if model.entities.index(np.array([int(i)]))[0] >= 0]


def test_a_committed_batch_puts_the_exact_fold_in_online_and_the_next_request_uses_it(world, server, menu_model):
    config, version = world
    user = known_users(config, version)[3]
    cands = candidates_of(config, version)
    rid = best_known(cands, menu_model)[0]
    before, _ = online_embedding(config, user)
    first = items_call(server.stub, user, rid, k=10, explain=True)
    assert not first.degraded, first.degraded_reason
    clicked = known_items(menu_model, [e.id for e in first.entries])[-2:]  # the lowest ranked known items
    assert len(clicked) == 2
    for item in clicked:
        click(server.stub, first.request_id, item)
    click(server.stub, first.request_id, clicked[0])  # a repeated click on one impression counts once

    job = OnlineUpdateJob(config, OnlineUpdater(config), batch=2).start()  # several micro-batches
    job.run(once=True)
    end = EventLogReader(log_root(config) / "worker-0").end_offset()
    assert offset_file(config, "worker-0").load() == end  # acknowledged

    got, got_version = online_embedding(config, user)
    want = expected_embedding(config, version, menu_model, user, [int(i) for i in clicked])
    assert got_version == version
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert not np.allclose(got, before, atol=1e-4)  # the fold-in changed it

    nxt = items_call(server.stub, user, rid, k=10, explain=True)
    assert nxt.model_version == version and not nxt.degraded, nxt.degraded_reason
    scored = 0
    for e in nxt.entries:
        emb = e.explanation["embedding_score"]
        if math.isnan(emb):
            continue
        item_vector, _ = menu_model.entity_vectors([int(e.id)])
        assert math.isclose(emb, float(got @ item_vector[0]), rel_tol=1e-4, abs_tol=1e-5)
        scored += 1
    assert scored > 0
    assert online_clicks(config, rid) == {int(i): 1 for i in clicked}


def test_a_restart_resumes_from_the_committed_offset_and_counts_no_click_twice(world, server, menu_model):
    config, version = world
    cands = candidates_of(config, version)
    rid = best_known(cands, menu_model)[1]
    users = known_users(config, version)[10:13]
    job = OnlineUpdateJob(config, OnlineUpdater(config), batch=3).start()
    job.run(once=True)
    shown = []
    for user in users:
        resp = items_call(server.stub, user, rid, k=3)
        click(server.stub, resp.request_id, resp.entries[0].id)
        shown.append(int(resp.entries[0].id))
    job.run(once=True)
    expected = {}
    for item in shown:
        expected[item] = expected.get(item, 0) + 1
    assert online_clicks(config, rid) == expected

    # a new process: replays up to the committed offset, then consumes only what came after
    resp = items_call(server.stub, users[0], rid, k=3)
    click(server.stub, resp.request_id, resp.entries[1].id)
    expected[int(resp.entries[1].id)] = expected.get(int(resp.entries[1].id), 0) + 1
    restarted = OnlineUpdateJob(config, OnlineUpdater(config), batch=500).start()
    restarted.run(once=True)
    assert restarted.report.records == 2  # the served list and the click, nothing older
    assert online_clicks(config, rid) == expected

    # at-least-once: a batch delivered again (crash before the commit) writes the same rows
    updater = restarted.updater
    reader = EventLogReader(log_root(config) / "worker-0")
    tail = [LogEvent.decode("worker-0", r.offset, r.payload) for r in reader.read(0)]
    now = datetime.now(UTC)
    again = updater.process(tail[-4:], now)
    assert again.skipped == 4 and again.users == []
    assert online_clicks(config, rid) == expected
    fresh = OnlineUpdater(config).load()
    fresh.replay(tail[:-4])
    fresh.process(tail[-4:], now)
    fresh.process(tail[-4:], now)
    assert fresh.clicks_1h(rid, now) == expected


def test_a_new_serving_version_is_followed_and_stamps_the_rows(world, server, menu_model):
    config, first = world
    job = OnlineUpdateJob(config, OnlineUpdater(config), batch=500).start()
    job.run(once=True)
    second = republish_as(config, first, "online", ranker=True)
    registry = Registry.for_config(config).open()
    registry.promote(second, "test: online updater follows", publish=lambda v: publish_version(config, v))
    try:
        user = known_users(config, first)[20]
        rid = best_known(candidates_of(config, first), menu_model)[0]
        resp = items_call(server.stub, user, rid, k=5)
        click(server.stub, resp.request_id, resp.entries[0].id)
        job.run(once=True)
        assert job.updater.version == second
        got, got_version = online_embedding(config, user)
        assert got_version == second
        clicked = [int(resp.entries[0].id)] if known_items(menu_model, [resp.entries[0].id]) else []
        np.testing.assert_allclose(got, expected_embedding(config, second, menu_model, user, clicked), atol=1e-5)
    finally:
        registry.rollback("test: back", publish=lambda v: publish_version(config, v))
