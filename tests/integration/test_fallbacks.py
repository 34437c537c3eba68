"""Every fallback of the model path answers through the real server, flagged degraded with its reason:
unknown user, no candidates, online rows of a foreign model version, and Redis stopped mid-test
(last known good list, then popularity) and started again (recovered, nothing restarted)."""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone

import polars as pl
import pytest

from recsys.features.bulk_write import write_online
from recsys.features.store import materialize, offline_end, open_store
from recsys.registry.publish import publish_version
from recsys.testing import LocalRedis
from recsys.serving.recommender import ModelRecommender
from recsys.serving.settings import ServingConfig
from tests.integration.test_online_path import Server, candidates_of, feed_call, items_call, known_users

EPS = 0.2


@pytest.fixture(scope="module")
def world(published_copy):
    # A copy, not the shared `published`: the tests write online rows they leave behind (a
    # restaurant without candidates, a user's rows of a foreign version), and the Redis-down test
    # republishes into this world's offline audit.
    return published_copy("fallbacks")


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    config, _ = world
    recommender = ModelRecommender(config, ServingConfig(epsilon=EPS, metrics_port=None), poll_seconds=0).load()
    s = Server(recommender, recommender.settings, tmp_path_factory.mktemp("events") / "worker-0")
    yield s
    s.close()
    recommender.close()


def _write(config, view: str, **columns) -> None:
    frame = pl.DataFrame({**{k: [v] for k, v in columns.items()}, "event_timestamp": [datetime.now(timezone.utc)]})
    assert write_online(open_store(config), view, frame) == 1


@pytest.mark.parametrize("user", ["999999", "not-a-number"])
def test_an_unknown_user_gets_popularity_flagged_on_both_surfaces(server, user):
    menu = items_call(server.stub, user, 1, k=5)
    assert menu.degraded and menu.degraded_reason == "unknown_user:popularity"
    assert menu.model_version == "popularity" and len(menu.entries) == 5
    feed = feed_call(server.stub, user, k=5)
    assert feed.degraded and feed.degraded_reason == "unknown_user:popularity" and len(feed.entries) == 5


def test_a_restaurant_without_candidates_gets_its_menu_by_popularity(world, server):
    config, version = world
    menu = pl.read_parquet(config.clean_dir / "items.parquet").filter(pl.col("restaurant_id") == 11)["item_id"]
    _write(config, "restaurant_candidates", restaurant_id=11, item_ids=pl.Series([[]], dtype=pl.List(pl.Int64))[0],
           scores=pl.Series([[]], dtype=pl.List(pl.Float32))[0], model_version=version)
    resp = items_call(server.stub, known_users(config, version)[0], 11, k=50)
    assert resp.degraded and resp.degraded_reason == "no_candidates:popularity"
    assert {e.id for e in resp.entries} == {str(i) for i in menu}


def test_online_rows_of_a_foreign_model_version_are_never_mixed_in(world, server):
    config, version = world
    user = known_users(config, version)[5]
    rid = next(iter(candidates_of(config, version)))
    assert not items_call(server.stub, user, rid).degraded
    _write(config, "user_embedding", user_id=user, embedding=[0.5] * 8, model_version="foreign-v0")
    resp = items_call(server.stub, user, rid)
    assert resp.degraded and resp.degraded_reason == "model_version_mismatch:popularity"
    assert resp.model_version == "popularity"
    _write(config, "user_top_restaurants", user_id=user, restaurant_ids=[1, 2, 3], scores=[0.3, 0.2, 0.1],
           model_version="foreign-v0")
    feed = feed_call(server.stub, user)
    assert feed.degraded and feed.degraded_reason == "model_version_mismatch:popularity"


# ---------------------------------------------------------------- Redis down, then back
def test_redis_stopped_mid_test_degrades_to_last_known_good_then_popularity_and_recovers(world, tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is required on PATH for this test")
    config, version = world
    own = LocalRedis(tmp_path, durable=True).start()
    try:
        config = config.with_overrides(online_store=own.url)
        materialize(config, offline_end(config))  # the same registry and rows, on this Redis
        publish_version(config, version)
        recommender = ModelRecommender(config, ServingConfig(epsilon=EPS, metrics_port=None), store_timeout=0.5,
                                       poll_seconds=0).load()
        server = Server(recommender, recommender.settings, tmp_path / "worker-0")
        try:
            users = known_users(config, version)
            seen, unseen = users[0], users[1]
            rid = next(iter(candidates_of(config, version)))
            first = items_call(server.stub, seen, rid)
            assert not first.degraded and first.model_version == version
            assert not feed_call(server.stub, seen).degraded

            own.stop()
            kept = items_call(server.stub, seen, rid)
            assert kept.degraded and kept.degraded_reason == "store_unavailable:last_known_good"
            assert kept.model_version == version and {e.id for e in kept.entries} <= \
                {str(i) for i in candidates_of(config, version)[rid]}
            assert feed_call(server.stub, seen).degraded_reason == "store_unavailable:last_known_good"
            cold = items_call(server.stub, unseen, rid)
            assert cold.degraded and cold.degraded_reason == "store_unavailable:popularity"
            assert feed_call(server.stub, unseen).degraded_reason == "store_unavailable:popularity"

            own.start()  # same port, same append-only file: the rows are back
            recovered = None
            for _ in range(100):
                recovered = items_call(server.stub, unseen, rid)
                if not recovered.degraded:
                    break
                time.sleep(0.05)
            assert not recovered.degraded and recovered.model_version == version
            assert not feed_call(server.stub, seen).degraded
        finally:
            server.close()
            recommender.close()
    finally:
        if own.proc is not None and own.proc.poll() is None:
            own.stop()
