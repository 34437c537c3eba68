"""Serving's feature samples on a real server (real Redis, the session's published tiny world): a
sampled menu request's ranker input rows are logged off the request path, landed by the sink in
the samples contract under ``feature_samples/date=.../``, and equal the rows the ranker used; which
requests are sampled follows ``is_sampled``; feeds, fallbacks and rate 0 log none."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import grpc
import numpy as np
import polars as pl
import pytest

from recsys.evaluation.logs import load_log
from recsys.monitoring import samples
from recsys.serving import events
from recsys.serving.eventlog import EventLog, EventLogReader
from recsys.serving.metrics import Metrics
from recsys.serving.recommender import ModelRecommender
from recsys.serving.sampling import FeatureSampleLogger
from recsys.serving.server import create_server
from recsys.serving.settings import ServingConfig
from recsys.serving.sink import run_sink
from recsys.serving.stages import feature_rows, parse_menu, score_embeddings
from recsys.serving.v1 import recommender_pb2 as pb
from recsys.serving.v1 import recommender_pb2_grpc as pb_grpc
from tests.integration.test_online_path import candidates_of, feed_call, items_call, known_users

REQUEST_TIME = datetime(2026, 10, 15, 19, 30, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def world(published):
    # The shared world: these tests only serve from it (event logs and landed files in temp dirs).
    return published


@contextmanager
def serving(config, rate: float, log_dir):
    """A real server sampling ``rate`` of requests; on exit every queued sample is logged."""
    recommender = ModelRecommender(config, ServingConfig(epsilon=0.0, metrics_port=None, feature_sample_rate=rate),
                                   poll_seconds=0).load()
    event_log = EventLog(log_dir).open()
    sampler = FeatureSampleLogger(event_log, Metrics())
    server = create_server(recommender.settings, recommender, event_log, samples=sampler)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.RecommenderStub(channel), recommender
    finally:
        channel.close()
        server.stop(1).wait()
        sampler.close()
        event_log.close()
        recommender.close()


def _context() -> pb.RequestContext:
    ctx = pb.RequestContext()
    ctx.request_time.FromDatetime(REQUEST_TIME)
    return ctx


def _menu_calls(config, version, stub, n: int) -> list[tuple[int, int, pb.RecommendResponse]]:
    cands = candidates_of(config, version)
    restaurants = sorted(cands, key=lambda r: -len(cands[r]))[:3]
    users = known_users(config, version)[:n]
    pairs = [(u, r) for u in users for r in restaurants][:n]
    return [(u, r, items_call(stub, u, r, context=_context())) for u, r in pairs]


def _logged(log_dir, kind: str) -> list[dict]:
    return [r for r in (events.decode(x.payload) for x in EventLogReader(log_dir).read()) if r["type"] == kind]


def test_a_sampled_requests_landed_feature_rows_equal_what_the_ranker_used(world, tmp_path):
    config, version = world
    log_dir = tmp_path / "events" / "worker-0"
    with serving(config, 1.0, log_dir) as (stub, recommender):
        menus = _menu_calls(config, version, stub, 4)
        feed = feed_call(stub, known_users(config, version)[0])
        fallback = items_call(stub, 10**6, menus[0][1])  # unknown user: popularity answers, nothing to sample
        bundle = recommender.bundle
        expected = {}
        for user, restaurant, resp in menus:  # the same stages on the same (unchanged) online row
            inputs = parse_menu(bundle.menu_reader.read({"user_id": user, "restaurant_id": restaurant}, 10.0))
            shown = np.array([int(e.id) for e in sorted(resp.entries, key=lambda e: e.position)], dtype=np.int64)
            assert len(shown) == len(resp.entries) < len(inputs.candidate_ids)  # the shown items only
            inputs = replace(inputs, candidate_ids=shown)
            scored, _ = score_embeddings(bundle.menu.index, inputs, keep_unknown=True)
            expected[resp.request_id] = (user, restaurant, scored.ids,
                                         feature_rows(bundle.menu.items, inputs, scored, REQUEST_TIME))
    assert fallback.degraded and all(not resp.degraded for *_, resp in menus)
    out = tmp_path / "landed"
    report = run_sink(log_dir.parent, out / "impressions_log", out / "state.json", lateness=timedelta(minutes=60),
                      flush=True)
    assert report.feature_samples == len(menus)
    parts = sorted((out / "feature_samples").glob("date=*/part-0.parquet"))
    assert [p.parent.name for p in parts] == [d.name for d in (out / "impressions_log").glob("date=*")]
    landed = pl.concat([pl.read_parquet(p) for p in parts])
    assert landed.schema == pl.Schema(samples.SCHEMA)
    assert set(landed["request_id"]) == set(expected)  # not the feed, not the fallback
    assert feed.request_id not in set(landed["request_id"])
    for request_id, (user, restaurant, ids, rows) in expected.items():
        got = landed.filter(pl.col("request_id") == request_id)
        assert set(got["user_id"]) == {user} and set(got["restaurant_id"]) == {restaurant}
        assert set(got["model_version"]) == {version} and set(got["ts"]) == {REQUEST_TIME}
        numeric = {name: np.asarray(col, dtype=np.float64) for name, col in rows.items()
                   if np.asarray(col).dtype.kind in "biuf"}
        assert set(got["feature"]) == set(numeric) and len(numeric) > 10
        for name, want in numeric.items():
            one = got.filter(pl.col("feature") == name)
            assert one["item_id"].to_list() == ids.tolist()
            np.testing.assert_array_equal(one["value"].to_numpy(), want, err_msg=name)  # NaN == NaN here
    # the samples never mix into the impressions log its readers scan
    assert not list((out / "impressions_log").rglob("*feature*"))
    assert load_log(out / "impressions_log", surface="menu")["request_id"].n_unique() == len(menus) + 1


def test_which_requests_are_sampled_follows_is_sampled_and_rate_0_samples_none(world, tmp_path):
    config, version = world
    with serving(config, 0.3, tmp_path / "a") as (stub, _):
        menus = _menu_calls(config, version, stub, 30)
    sampled = {r["request_id"] for r in _logged(tmp_path / "a", events.FEATURES)}
    want = {resp.request_id for *_, resp in menus if samples.is_sampled(resp.request_id, 0.3)}
    assert sampled == want and 0 < len(want) < len(menus)
    with serving(config, 0.0, tmp_path / "b") as (stub, _):
        _menu_calls(config, version, stub, 5)
    assert _logged(tmp_path / "b", events.FEATURES) == [] and len(_logged(tmp_path / "b", events.SERVED)) == 5
