"""The model path on a real server, real Redis and a nightly-published tiny world: each RPC, explain,
exploration propensities, no offline/online skew (item table and request-time features against
``get_historical_features``), offline lists == served lists with epsilon 0, hot reload and rollback
under concurrent calls with zero failed requests, and a version without a ranker."""

from __future__ import annotations

import math
import shutil
import threading
import time
from datetime import datetime, timedelta, timezone

import grpc
import numpy as np
import pandas as pd
import polars as pl
import pytest

from recsys.features.bulk_write import write_online
from recsys.features.store import offline_end, open_store
from recsys.ranking.ranker import ALS_SCORE
from recsys.registry import Registry
from recsys.registry.publish import ARTIFACTS, publish_version, read_version_outputs, write_version_outputs
from recsys.serving.domain import ItemsRequest, RestaurantsRequest
from recsys.serving.eventlog import EventLog
from recsys.serving.metrics import Metrics
from recsys.serving.recommender import ModelRecommender
from recsys.serving.server import create_server
from recsys.serving.settings import ServingConfig
from recsys.serving.stages import (
    CONTEXT_VIEWS, FEED_COLUMNS, MENU_MODEL_COLUMNS, RT_AVAILABLE, RT_CLICKS, RT_IDS, Exploration, feast_ref,
    feature_rows, menu_columns, parse_menu, rank_feed, rank_menu, score_embeddings,
)
from recsys.serving.v1 import recommender_pb2 as pb
from recsys.serving.v1 import recommender_pb2_grpc as pb_grpc

TOKEN = "admin-token"
EPS = 0.3


# ---------------------------------------------------------------- shared helpers (other modules use them)
class Server:
    """A real server on a socket around ``recommender``; ``stub`` talks to it."""

    def __init__(self, recommender, settings: ServingConfig, log_dir):
        self.event_log = EventLog(log_dir).open()
        self.server = create_server(settings, recommender, self.event_log, metrics=Metrics())
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.addr = f"127.0.0.1:{port}"
        self.channel = grpc.insecure_channel(self.addr)
        self.stub = pb_grpc.RecommenderStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(1).wait()
        self.event_log.close()


def items_call(stub, user, restaurant, k=10, **kw) -> pb.RecommendResponse:
    return stub.RecommendItems(pb.RecommendItemsRequest(user_id=str(user), restaurant_id=str(restaurant), k=k, **kw),
                               timeout=10)


def feed_call(stub, user, k=10, **kw) -> pb.RecommendResponse:
    return stub.RecommendRestaurants(pb.RecommendRestaurantsRequest(user_id=str(user), k=k, **kw), timeout=10)


def candidates_of(config, version) -> dict[int, list[int]]:
    frame = read_version_outputs(Registry.for_config(config).open(), version)["restaurant_candidates"]
    return {int(r): list(ids) for r, ids in zip(frame["restaurant_id"], frame["item_ids"])}


def known_users(config, version) -> list[int]:
    """Users with an embedding in ``version`` (the menu model knows them), ascending."""
    frame = read_version_outputs(Registry.for_config(config).open(), version)["user_embedding"]
    return sorted(int(u) for u in frame["user_id"])


def check_propensities(resp, eps: float) -> None:
    """Exact scheme: propensity = (1 - eps) [greedy puts it here] + eps / n (explain needed)."""
    n = resp.n_candidates
    assert [e.position for e in resp.entries] == list(range(len(resp.entries)))
    for e in resp.entries:
        greedy_here = e.explanation["greedy_rank"] == e.position
        assert math.isclose(e.propensity, (1 - eps) * greedy_here + eps / n, rel_tol=1e-12)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def world(published_copy):
    # A copy, not the shared `published`: test_unavailable_items writes a restaurant_realtime row
    # it leaves behind (items stay unavailable), which would change what other modules serve.
    return published_copy("online_path")


@pytest.fixture(scope="module")
def model(world):
    config, _ = world
    settings = ServingConfig(epsilon=EPS, admin_token=TOKEN, metrics_port=None)
    recommender = ModelRecommender(config, settings, poll_seconds=0.2).load()
    yield recommender
    recommender.close()


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    s = Server(model, model.settings, tmp_path_factory.mktemp("events") / "worker-0")
    yield s
    s.close()


# ---------------------------------------------------------------- each RPC through the model path
def test_recommend_items_reranks_the_restaurants_candidates_with_the_serving_version(world, server):
    config, version = world
    cands = candidates_of(config, version)
    rid = max(cands, key=lambda r: len(cands[r]))
    resp = items_call(server.stub, known_users(config, version)[0], rid, k=5, explain=True)
    assert resp.model_version == version and not resp.degraded, resp.degraded_reason
    assert resp.n_candidates == len(cands[rid])
    assert {int(e.id) for e in resp.entries} <= set(cands[rid]) and len(resp.entries) == 5
    check_propensities(resp, EPS)


def test_explain_gives_the_embedding_score_and_each_ranker_features_contribution(world, server, model):
    resp = items_call(server.stub, known_users(*world)[1], 2, k=3, explain=True)
    assert not resp.degraded, resp.degraded_reason
    ranker = model.bundle.menu.ranker
    assert ranker is not None, "the nightly shipped no ranker: this test needs one"
    for e in resp.entries:
        ex = e.explanation
        contrib = {k[len("contrib:"):]: v for k, v in ex.items() if k.startswith("contrib:")}
        assert set(contrib) == set(ranker.feature_names)
        assert "embedding_score" in ex and ex["explored"] in (0.0, 1.0)
        assert math.isclose(ranker.bias + sum(contrib.values()), ex["ranker_score"], rel_tol=1e-6, abs_tol=1e-6)
        assert math.isclose(e.score, ex["ranker_score"], rel_tol=1e-6)
        # the embedding score is the ranker's als_score input, seen through its contribution; an
        # item the ALS never saw (NaN, kept: exploration may show it) uses the missing-value default
        if math.isnan(ex["embedding_score"]):
            continue
        w = dict(zip(ranker.feature_names, ranker.weights))[f"{ALS_SCORE}:identity"]
        j = ranker.feature_names.index(f"{ALS_SCORE}:identity")
        expected = w * (ex["embedding_score"] - ranker.means[j]) / ranker.scales[j]
        assert math.isclose(contrib[f"{ALS_SCORE}:identity"], expected, rel_tol=1e-5, abs_tol=1e-6)


def test_unavailable_items_are_dropped_and_listed_in_the_filters(world, server):
    config, version = world
    cands = candidates_of(config, version)
    rid = max(cands, key=lambda r: len(cands[r]))
    off = cands[rid][:2]
    items = cands[rid]
    frame = pl.DataFrame({"restaurant_id": [rid], "item_ids": [items], "available": [[0 if i in off else 1
                                                                                        for i in items]],
                          "clicks_1h": [[0] * len(items)],
                          "event_timestamp": [datetime.now(timezone.utc)]})
    store = open_store(config)
    assert write_online(store, "restaurant_realtime", frame) == 1
    resp = items_call(server.stub, known_users(config, version)[2], rid, k=len(items), explain=True)
    assert not resp.degraded
    assert {(f.id, f.reason) for f in resp.filters} == {(str(i), "unavailable") for i in off}
    assert not {str(i) for i in off} & {e.id for e in resp.entries}
    assert resp.n_candidates == len(items) - len(off)


def test_recommend_restaurants_serves_the_precomputed_list_without_closed_restaurants(world, server):
    config, version = world
    top = read_version_outputs(Registry.for_config(config).open(), version)["user_top_restaurants"]
    user = int(top.filter(~pl.col("cold_start"))["user_id"][0])
    precomputed = [str(r) for r in top.filter(pl.col("user_id") == user)["restaurant_ids"][0]]
    resp = feed_call(server.stub, user, k=50, explain=True, context=pb.RequestContext(local_hour=3))
    assert resp.model_version == version and not resp.degraded
    closed = {f.id for f in resp.filters}
    assert closed and all(f.reason == "closed" for f in resp.filters)
    open_ids = [r for r in precomputed if r not in closed]
    assert {e.id for e in resp.entries} == set(open_ids) and resp.n_candidates == len(open_ids)
    check_propensities(resp, EPS)


def test_model_info_names_the_loaded_version_and_its_ranker(world, server):
    _, version = world
    info = server.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert info.model_version == version and info.info["policy"] == "model"
    assert info.info["ranker"] == "linear" and info.info["snapshot:item_stats"] != "none"


def test_propensities_follow_the_exploration_scheme_and_both_branches_occur(world, server):
    explored = set()
    users = known_users(*world)
    for i in range(60):
        resp = items_call(server.stub, users[i % len(users)], 1 + i % 5, k=4, explain=True)
        assert not resp.degraded
        check_propensities(resp, EPS)
        explored.add(resp.entries[0].explanation["explored"])
    assert explored == {0.0, 1.0}


# ---------------------------------------------------------------- no skew
def _historical(store, entity: pd.DataFrame, refs: list[str]) -> pd.DataFrame:
    return store.get_historical_features(entity_df=entity, features=refs, full_feature_names=True).to_df()


def test_the_item_feature_table_equals_historical_features_at_its_snapshot(world, model):
    config, _ = world
    store = open_store(config)
    table = model.bundle.menu.items
    assert len(table) > 0
    sample = np.random.default_rng(0).choice(table.item_ids, size=min(40, len(table)), replace=False)
    for view in ("item_stats", "item_profile"):
        snap = table.snapshots[view].snapshot
        columns = [c for c in table.values if c.startswith(f"{view}__")]
        entity = pd.DataFrame({"item_id": sample, "event_timestamp": [snap] * len(sample)})
        hist = _historical(store, entity, [feast_ref(c) for c in columns]).sort_values("item_id")
        mine = table.rows(hist["item_id"].to_numpy())
        for c in columns:
            expected = hist[c].to_numpy()
            if mine[c].dtype == object:
                assert [None if pd.isna(v) else v for v in expected] == list(mine[c]), c
            else:
                np.testing.assert_allclose(mine[c], expected.astype(np.float64), rtol=0, atol=0, err_msg=c)


def test_served_ranker_rows_equal_the_training_rows_of_get_historical_features(world, model):
    """Every ranker input the menu path builds (online user/restaurant features, in-memory item
    features, request-time features computed in serving) equals the point-in-time training row."""
    from recsys.training.ranker_data import historical_features, rows_dict

    config, _ = world
    bundle = model.bundle
    ranker = bundle.menu.ranker
    # Just after what the nightly materialized (the training join moves rows that share a timestamp a
    # few microseconds earlier: at exactly the snapshot time it would see the day before).
    ts = offline_end(config) + timedelta(seconds=1)
    cands = candidates_of(config, bundle.version)
    for user, rid in zip(known_users(config, bundle.version)[:3], (1, 4, 7)):
        row = bundle.menu_reader.read({"user_id": user, "restaurant_id": rid}, timeout=10)
        inputs = parse_menu(row)
        scored, _ = score_embeddings(bundle.menu.index, inputs, keep_unknown=True)
        served = feature_rows(bundle.menu.items, inputs, scored, ts)
        frame = pl.DataFrame({"user_id": [user] * len(scored.ids), "restaurant_id": [rid] * len(scored.ids),
                              "item_id": scored.ids, "ts": [ts] * len(scored.ids)})
        training = rows_dict(historical_features(open_store(config), frame)[0])
        assert len(scored.ids) == len(cands[rid])
        for column in ranker.input_columns:
            if column in (ALS_SCORE, "position"):  # the FAISS score (checked above); fixed at 0 in serving
                continue
            a, b = served[column], training[column]
            if a.dtype == object or b.dtype == object:
                assert [None if (v is None or v != v) else v for v in a] == \
                       [None if (v is None or v != v) else v for v in b], column
            else:  # float32 online values (e.g. rating) round-trip through float32
                np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=column)


def test_offline_lists_equal_served_lists_with_exploration_off(world, tmp_path):
    """The evaluator's path: rows read offline (get_historical_features under the same names),
    the same stages; with epsilon 0 the lists equal the served ones."""
    config, version = world
    settings = ServingConfig(epsilon=0.0, metrics_port=None)
    recommender = ModelRecommender(config, settings, poll_seconds=0).load()
    server = Server(recommender, settings, tmp_path / "worker-0")
    try:
        store = open_store(config)
        bundle = recommender.bundle
        stats_ts = offline_end(config)
        model_ts = datetime.now(timezone.utc)  # after the publish: its audit rows are the online rows
        request_ts = datetime(2026, 10, 14, 19, tzinfo=timezone.utc)
        exploration = Exploration(0.0, config.seed)
        context_cols = [c for c in menu_columns(bundle.menu.ranker) if c.partition("__")[0] in CONTEXT_VIEWS]
        model_cols = [c for c in MENU_MODEL_COLUMNS if c not in (RT_IDS, RT_AVAILABLE, RT_CLICKS)]
        pairs = [(u, r) for u, r in zip(range(0, 400, 23), range(3, 60, 3))]
        entity = pd.DataFrame({"user_id": [u for u, _ in pairs], "restaurant_id": [r for _, r in pairs]})
        ctx_rows = _historical(store, entity.assign(event_timestamp=stats_ts), [feast_ref(c) for c in context_cols])
        model_rows = _historical(store, entity.assign(event_timestamp=model_ts), [feast_ref(c) for c in model_cols])
        feed_rows = _historical(store, entity[["user_id"]].assign(event_timestamp=model_ts),
                                [feast_ref(c) for c in FEED_COLUMNS])
        keyed = lambda df: {(int(r.user_id), int(getattr(r, "restaurant_id", -1))): r._asdict()  # noqa: E731
                            for r in df.itertuples(index=False)}
        ctx_rows, model_rows = keyed(ctx_rows), keyed(model_rows)
        feed_rows = {u: r for (u, _), r in keyed(feed_rows).items()}
        ctx = pb.RequestContext(local_hour=19)
        ctx.request_time.FromDatetime(request_ts)
        compared = 0
        for user, rid in pairs:
            served = items_call(server.stub, user, rid, k=8, context=ctx)
            row = {**{c: _plain(ctx_rows[(user, rid)][c]) for c in context_cols},
                   **{c: _plain(model_rows[(user, rid)][c]) for c in model_cols}}
            offline = rank_menu(row, bundle.menu, ItemsRequest(request_id=served.request_id, user_id=str(user),
                                                               restaurant_id=str(rid), k=8), request_ts, exploration)
            if isinstance(offline, str):  # the model cannot answer (e.g. unknown user): so did the server
                assert served.degraded and served.degraded_reason.startswith(offline)
                continue
            assert not served.degraded
            assert [e.id for e in served.entries] == [e.id for e in offline.entries]
            np.testing.assert_allclose([e.score for e in served.entries], [e.score for e in offline.entries],
                                       rtol=1e-5)
            assert [e.propensity for e in served.entries] == [1.0] * len(served.entries)
            feed = feed_call(server.stub, user, k=10, context=ctx)
            off_feed = rank_feed({c: _plain(feed_rows[user][c]) for c in FEED_COLUMNS}, bundle.version, bundle.hours,
                                 RestaurantsRequest(request_id=feed.request_id, user_id=str(user), k=10),
                                 19, exploration)
            assert [e.id for e in feed.entries] == [e.id for e in off_feed.entries]
            compared += 1
        assert compared >= 10
    finally:
        server.close()
        recommender.close()


def _plain(value):
    """pandas / numpy values from get_historical_features as the online read returns them."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------- hot reload and rollback
def republish_as(config, source: str, suffix: str, *, ranker: bool) -> str:
    """A new registry version from ``source``'s artifacts (its rows re-stamped with the new version),
    optionally without ranker.json; committed, not promoted."""
    registry = Registry.for_config(config).open()
    version = f"{source}-{suffix}"
    frames = {v: f.with_columns(pl.lit(version).alias("model_version"))
              for v, f in read_version_outputs(registry, source).items()}
    src = registry.version_dir(source)
    meta = registry.show(source)
    with registry.stage(version) as area:
        for path in sorted(src.rglob("*")):
            rel = str(path.relative_to(src))
            if path.is_file() and rel != "metadata.json" and rel not in ARTIFACTS.values() and \
                    (ranker or rel != "ranker.json"):
                shutil.copyfile(path, area.artifact(rel))
        write_version_outputs(area, frames)
        area.commit(trained_until=meta.trained_until, data_fingerprint=meta.data_fingerprint,
                    feature_definitions_hash=meta.feature_definitions_hash, params=meta.params,
                    metrics=meta.metrics, gate=meta.gate, status="candidate", code_version=meta.code_version)
    return version


class Traffic:
    """Threads calling both RPCs until stopped; every failure is kept."""

    def __init__(self, addr: str, threads: int = 4):
        self.failures: list[str] = []
        self.versions: list[str] = []
        self.calls = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(addr, i)) for i in range(threads)]

    def _run(self, addr: str, seed: int) -> None:
        channel = grpc.insecure_channel(addr)
        stub = pb_grpc.RecommenderStub(channel)
        i = seed
        while not self._stop.is_set():
            i += 7
            try:
                resp = items_call(stub, i % 400, i % 60) if i % 2 else feed_call(stub, i % 400)
                self.versions.append(resp.model_version)
                self.calls += 1
            except grpc.RpcError as exc:
                self.failures.append(f"{exc.code()}: {exc.details()}")
        channel.close()

    def __enter__(self) -> "Traffic":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def _wait_for(predicate, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_hot_reload_and_rollback_under_concurrent_calls_drop_no_request(world, server, model):
    config, first = world
    second = republish_as(config, first, "noranker", ranker=False)
    registry = Registry.for_config(config).open()
    with Traffic(server.addr) as traffic:
        _wait_for(lambda: traffic.calls > 50)
        registry.promote(second, "test: hot reload", publish=lambda v: publish_version(config, v))
        _wait_for(lambda: model.bundle.version == second)  # the watcher saw the pointer move
        n = traffic.calls
        _wait_for(lambda: traffic.calls > n + 50)
        served_second = traffic.versions[-1]
        rolled = server.stub.Rollback(pb.AdminRequest(token=TOKEN), timeout=60).model_version
        n = traffic.calls
        _wait_for(lambda: traffic.calls > n + 50)
    assert traffic.failures == [] and traffic.calls > 150
    assert served_second in (second, "popularity") and second in traffic.versions
    assert rolled == first and model.bundle.version == first
    assert registry.serving().version == first
    assert traffic.versions[-1] in (first, "popularity")


def test_a_version_without_a_ranker_ranks_by_the_embedding_score_flagged(world, tmp_path):
    config, first = world
    version = republish_as(config, first, "emb", ranker=False)
    registry = Registry.for_config(config).open()
    registry.promote(version, "test: embedding-only", publish=lambda v: publish_version(config, v))
    recommender = ModelRecommender(config, ServingConfig(epsilon=0.0, metrics_port=None), poll_seconds=0).load()
    try:
        user = str(known_users(config, version)[0])
        got = recommender.recommend_items(ItemsRequest(request_id="r1", user_id=user, restaurant_id="2", k=20,
                                                       explain=True))
        assert got.model_version == version and not got.degraded
        assert all(e.explanation["ranker_missing"] == 1.0 for e in got.entries)
        assert [e.score for e in got.entries] == sorted((e.score for e in got.entries), reverse=True)
        known = [not np.isnan(e.explanation["embedding_score"]) for e in got.entries]
        assert all(e.score == e.explanation["embedding_score"] for e, k in zip(got.entries, known) if k)
        # items the ALS never saw stay, after every scored one (a new item is never dropped)
        assert known == sorted(known, reverse=True)
    finally:
        recommender.close()
        registry.rollback("test: back", publish=lambda v: publish_version(config, v))
