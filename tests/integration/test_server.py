"""The gRPC server on a real socket with the popularity policy and a real event log on disk:
each RPC, health, reflection, bad input, admin tokens, metrics, random requests (hypothesis),
durability across kill -9 of the server, and two worker processes sharing one port."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from recsys.contracts.validate import validate_dataset
from recsys.errors import NotFoundError
from recsys.serving import events
from recsys.serving.client import RecommenderClient
from recsys.serving.domain import Feedback, InvalidArgumentError, PermissionDeniedError, RequestContext
from recsys.serving.eventlog import EventLog, EventLogReader
from recsys.serving.fallback import PopularityRecommender
from recsys.serving.metrics import Metrics
from recsys.serving.server import SERVICE_NAME, create_server
from recsys.serving.settings import ServingConfig
from recsys.serving.v1 import recommender_pb2 as pb
from recsys.serving.v1 import recommender_pb2_grpc as pb_grpc
from recsys.testing import free_port
from tests.conftest import tiny_config

TOKEN = "s3cret-token"
EPS = 0.3


def validated_world(tiny_world, directory):
    """A copy of the session's tiny world with its clean tables (what serving reads)."""
    shutil.copytree(tiny_world.data_dir, directory, dirs_exist_ok=True)
    config = tiny_config(directory)
    validate_dataset(config)
    return config


@pytest.fixture(scope="module")
def world(tiny_world, tmp_path_factory):
    return validated_world(tiny_world, tmp_path_factory.mktemp("serving_world"))


@pytest.fixture(scope="module")
def running(world, tmp_path_factory):
    """One server for the module: popularity policy, event log in a temp dir, metrics on a free port."""
    settings = ServingConfig(epsilon=EPS, k_max=50, admin_token=TOKEN, metrics_port=0,
                             max_request_bytes=8 << 10, max_message_bytes=256 << 10)
    recommender = PopularityRecommender.for_config(world, settings).load()
    log_dir = tmp_path_factory.mktemp("events") / "worker-0"
    event_log = EventLog(log_dir).open()
    metrics = Metrics()
    metrics.set_model_version("popularity")
    metrics_port = metrics.start_http(0)
    server = create_server(settings, recommender, event_log, metrics=metrics)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield dict(stub=pb_grpc.RecommenderStub(channel), channel=channel, addr=f"127.0.0.1:{port}",
               log_dir=log_dir, metrics_port=metrics_port, recommender=recommender)
    channel.close()
    server.stop(1).wait()
    event_log.close()
    metrics.stop_http()


def logged(log_dir) -> list[dict]:
    return [events.decode(r.payload) for r in EventLogReader(log_dir).read()]


def code_of(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    try:
        call(*args, timeout=5, **kwargs)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def _check_exploration(resp, k: int) -> None:
    n = resp.n_candidates
    assert [e.position for e in resp.entries] == list(range(min(k, n)))
    greedy, explored = (1 - EPS) + EPS / n, EPS / n
    for e in resp.entries:
        assert math.isclose(e.propensity, greedy) or math.isclose(e.propensity, explored)
    assert resp.degraded and resp.degraded_reason == "fallback:popularity"
    assert resp.model_version == "popularity" and len(resp.request_id) == 32


# ---------------------------------------------------------------- each RPC
def test_recommend_items_ranks_the_restaurants_menu_with_exact_propensities(running, world):
    import polars as pl

    items = pl.read_parquet(world.clean_dir / "items.parquet")
    rid = int(items["restaurant_id"][0])
    menu = set(items.filter(pl.col("restaurant_id") == rid)["item_id"].cast(str))
    resp = running["stub"].RecommendItems(pb.RecommendItemsRequest(user_id="3", restaurant_id=str(rid), k=5),
                                          timeout=5)
    _check_exploration(resp, 5)
    assert {e.id for e in resp.entries} <= menu and resp.n_candidates == len(menu)
    assert all(not e.explanation for e in resp.entries)  # explanations only on request


def test_explain_returns_score_components_and_the_filters(running):
    stub = running["stub"]
    resp = stub.RecommendItems(pb.RecommendItemsRequest(user_id="3", restaurant_id="1", k=3, explain=True), timeout=5)
    assert {"clicks", "greedy_rank", "explored"} <= set(resp.entries[0].explanation)
    ctx = pb.RequestContext(local_hour=3)  # night: some restaurants are closed
    feed = stub.RecommendRestaurants(pb.RecommendRestaurantsRequest(user_id="3", k=5, context=ctx, explain=True),
                                     timeout=5)
    assert {"cell_clicks", "global_clicks", "backoff_global"} <= set(feed.entries[0].explanation)
    assert feed.filters and all(f.reason == "closed" for f in feed.filters)
    assert not {f.id for f in feed.filters} & {e.id for e in feed.entries}


def test_recommend_restaurants_for_unknown_users_backs_off_to_global_popularity(running):
    resp = running["stub"].RecommendRestaurants(
        pb.RecommendRestaurantsRequest(user_id="no-such-user", k=4, explain=True), timeout=5)
    _check_exploration(resp, 4)
    assert all(e.explanation["backoff_global"] == 1.0 for e in resp.entries)


def test_every_served_list_is_in_the_event_log_when_the_answer_arrives(running):
    resp = running["stub"].RecommendItems(pb.RecommendItemsRequest(user_id="7", restaurant_id="2", k=4), timeout=5)
    record = next(r for r in logged(running["log_dir"]) if r.get("request_id") == resp.request_id)
    assert record["type"] == "served" and record["surface"] == "menu" and record["restaurant_id"] == "2"
    assert [e[0] for e in record["entries"]] == [e.id for e in resp.entries]
    assert [e[2] for e in record["entries"]] == [e.propensity for e in resp.entries]


def test_feedback_is_acknowledged_once_durable(running):
    with RecommenderClient(running["addr"]) as client:
        served = client.recommend_items("5", "3", k=3)
        ts = datetime(2026, 10, 20, 12, tzinfo=timezone.utc)
        n = client.log_feedback([Feedback(served.request_id, served.entries[0].id, "click", ts),
                                 Feedback(served.request_id, served.entries[0].id, "order", ts)])
    assert n == 2
    fb = [r for r in logged(running["log_dir"]) if r["type"] == "feedback" and r["request_id"] == served.request_id]
    assert [r["kind"] for r in fb] == ["click", "order"] and fb[0]["ts_us"] == events.to_us(ts)


def test_model_info_names_the_version_and_the_worker(running):
    with RecommenderClient(running["addr"]) as client:
        info = client.model_info()
    assert info["model_version"] == "popularity" and info["worker"] == "0" and info["pid"] == str(os.getpid())


def test_health_is_serving_for_the_server_and_the_service(running):
    stub = health_pb2_grpc.HealthStub(running["channel"])
    for service in ("", SERVICE_NAME):
        assert stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(running):
    stub = reflection_pb2_grpc.ServerReflectionStub(running["channel"])
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


def test_metrics_endpoint_has_latency_errors_and_model_version(running):
    code_of(running["stub"].RecommendItems, pb.RecommendItemsRequest(user_id="1", restaurant_id="999999", k=3))
    text = urllib.request.urlopen(f"http://127.0.0.1:{running['metrics_port']}/metrics", timeout=5).read().decode()
    assert 'recsys_rpc_latency_seconds_bucket{le="0.001",method="RecommendItems"}' in text
    assert 'recsys_rpc_errors_total{code="NOT_FOUND",method="RecommendItems"}' in text
    assert 'recsys_model_version_info{version="popularity"} 1.0' in text
    assert 'recsys_degraded_total{method="menu",reason="fallback:popularity"}' in text


# ---------------------------------------------------------------- bad input
def _items(**kw) -> pb.RecommendItemsRequest:
    return pb.RecommendItemsRequest(**{"user_id": "1", "restaurant_id": "1", "k": 3, **kw})


BAD = [
    ("empty user_id", "RecommendItems", _items(user_id=""), "user_id"),
    ("blank restaurant_id", "RecommendItems", _items(restaurant_id="  "), "restaurant_id"),
    ("k = 0", "RecommendItems", _items(k=0), "k"),
    ("k < 0", "RecommendRestaurants", pb.RecommendRestaurantsRequest(user_id="1", k=-4), "k"),
    ("k above k_max", "RecommendItems", _items(k=51), "k"),
    ("NaN latitude", "RecommendItems", _items(context=pb.RequestContext(lat=float("nan"))), "context.lat"),
    ("infinite longitude", "RecommendItems", _items(context=pb.RequestContext(lon=float("inf"))), "context.lon"),
    ("hour 24", "RecommendRestaurants",
     pb.RecommendRestaurantsRequest(user_id="1", k=3, context=pb.RequestContext(local_hour=24)), "context.local_hour"),
    ("negative cell", "RecommendItems", _items(context=pb.RequestContext(cell=-1)), "context.cell"),
    ("cell outside the grid", "RecommendRestaurants",
     pb.RecommendRestaurantsRequest(user_id="1", k=3, context=pb.RequestContext(cell=10_000)), "context.cell"),
    ("unknown platform", "RecommendItems", _items(context=pb.RequestContext(platform=17)), "context.platform"),
    ("timestamp in year 1970", "RecommendItems",
     _items(context=pb.RequestContext(request_time={"seconds": 5})), "context.request_time"),
    ("oversized id", "RecommendItems", _items(user_id="u" * 20_000), "user_id"),
    ("control characters", "RecommendItems", _items(user_id="a\x00b"), "user_id"),
    ("no feedback events", "LogFeedback", pb.LogFeedbackRequest(), "events"),
    ("feedback without type", "LogFeedback",
     pb.LogFeedbackRequest(events=[pb.FeedbackEvent(request_id="r", entity_id="1")]), "events[0].type"),
    ("feedback without entity", "LogFeedback",
     pb.LogFeedbackRequest(events=[pb.FeedbackEvent(request_id="r", type=pb.EVENT_TYPE_CLICK)]), "events[0].entity_id"),
    ("oversized feedback batch", "LogFeedback",
     pb.LogFeedbackRequest(events=[pb.FeedbackEvent(request_id="r" * 100, entity_id="1", type=pb.EVENT_TYPE_CLICK)] * 200),
     "request"),
]


@pytest.mark.parametrize("method,request_msg,field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_invalid_argument_naming_the_field(running, method, request_msg, field):
    code, details = code_of(getattr(running["stub"], method), request_msg)
    assert code is grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith(f"{field}: ")


@pytest.mark.parametrize("restaurant_id", ["999999", "not-a-number"])
def test_unknown_restaurant_is_not_found(running, restaurant_id):
    code, details = code_of(running["stub"].RecommendItems, _items(restaurant_id=restaurant_id))
    assert code is grpc.StatusCode.NOT_FOUND and restaurant_id in details


def test_a_message_above_the_transport_cap_is_refused_before_parsing(running):
    code, _ = code_of(running["stub"].RecommendItems, _items(user_id="u" * (300 << 10)))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_an_expired_deadline_is_deadline_exceeded_not_internal(running):
    try:
        running["stub"].RecommendItems(_items(), timeout=1e-5)
    except grpc.RpcError as exc:
        assert exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def test_the_client_raises_typed_errors(running):
    with RecommenderClient(running["addr"]) as client:
        with pytest.raises(NotFoundError):
            client.recommend_items("1", "999999")
        with pytest.raises(InvalidArgumentError) as err:
            client.recommend_items("1", "1", k=0)
        assert err.value.field == "k"
        ctx = RequestContext(local_hour=12, platform="ios")
        assert client.recommend_restaurants("1", k=2, context=ctx).entries


# ---------------------------------------------------------------- admin
def test_admin_calls_need_the_token(running):
    stub = running["stub"]
    assert code_of(stub.Reload, pb.AdminRequest())[0] is grpc.StatusCode.UNAUTHENTICATED
    assert code_of(stub.Reload, pb.AdminRequest(token="wrong"))[0] is grpc.StatusCode.PERMISSION_DENIED
    assert code_of(stub.Rollback, pb.AdminRequest(), metadata=(("x-admin-token", "nope"),))[0] is \
        grpc.StatusCode.PERMISSION_DENIED
    assert stub.Reload(pb.AdminRequest(token=TOKEN), timeout=10).model_version == "popularity"
    # popularity has no previous version: a clear FAILED_PRECONDITION, not an internal error
    assert code_of(stub.Rollback, pb.AdminRequest(), metadata=(("x-admin-token", TOKEN),))[0] is \
        grpc.StatusCode.FAILED_PRECONDITION
    with RecommenderClient(running["addr"], timeout=10) as client:
        with pytest.raises(PermissionDeniedError):
            client.reload()
        assert client.reload(TOKEN) == "popularity"


# ---------------------------------------------------------------- random requests
ids = st.one_of(st.text(max_size=12), st.integers(-5, 10_000).map(str), st.sampled_from(["", " ", "1", "42", "x" * 200]))
floats = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def contexts(draw):
    ctx = pb.RequestContext(platform=draw(st.integers(0, 6)))
    for name, strategy in (("local_hour", st.integers(-3, 30)), ("lat", floats), ("lon", floats),
                           ("cell", st.integers(-2, 100))):
        if draw(st.booleans()):
            setattr(ctx, name, draw(strategy))
    if draw(st.booleans()):
        ctx.request_time.seconds = draw(st.integers(-10**10, 10**10))
        ctx.request_time.nanos = draw(st.integers(-5, 2 * 10**9))
    return ctx


requests = st.one_of(
    st.builds(lambda u, r, k, c, e: ("RecommendItems", pb.RecommendItemsRequest(
        user_id=u, restaurant_id=r, k=k, context=c, explain=e)), ids, ids, st.integers(-3, 60), contexts(), st.booleans()),
    st.builds(lambda u, k, c, e: ("RecommendRestaurants", pb.RecommendRestaurantsRequest(
        user_id=u, k=k, context=c, explain=e)), ids, st.integers(-3, 60), contexts(), st.booleans()),
    st.builds(lambda evs: ("LogFeedback", pb.LogFeedbackRequest(events=evs)), st.lists(st.builds(
        lambda r, e, t: pb.FeedbackEvent(request_id=r, entity_id=e, type=t), ids, ids, st.integers(0, 4)), max_size=3)),
)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=requests)
def test_random_requests_never_get_an_internal_error(running, call):
    method, msg = call
    code, details = code_of(getattr(running["stub"], method), msg)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (code, details)


# ---------------------------------------------------------------- processes
SERVE = [sys.executable, "-c", "import recsys.cli.serve; from recsys.cli import main; main()"]


def _start_serve(world, port: int, workers: int, tmp_path) -> subprocess.Popen:
    env = {**os.environ, "RECSYS_SIM__SIZE": "tiny", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([*SERVE, "--data-dir", str(world.data_dir), "serve", "--port", str(port), "--workers",
                             str(workers), "--no-metrics"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "serve.log", "w"), start_new_session=True)


def _wait_serving(addr: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    with RecommenderClient(addr, timeout=1) as client:
        client.wait_until_serving(lambda: proc.poll() is None, seconds)


def test_acknowledged_lists_survive_a_kill_9_of_the_server(world, tmp_path):
    port = free_port()
    proc = _start_serve(world, port, 1, tmp_path)
    addr = f"127.0.0.1:{port}"
    try:
        _wait_serving(addr, proc)
        acked: list[str] = []
        stop = threading.Event()

        def caller() -> None:
            with RecommenderClient(addr, timeout=2, retries=0) as client:
                while not stop.is_set():
                    try:
                        acked.append(client.recommend_items("3", "1", k=4).request_id)
                    except Exception:
                        return  # the server is gone

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for t in threads:
            t.start()
        while len(acked) < 100:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream, with calls in flight
        proc.wait()
        stop.set()
        for t in threads:
            t.join()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    in_log = {r["request_id"] for r in logged(world.data_dir / "events" / "worker-0")}
    assert len(acked) >= 100 and set(acked) <= in_log


def test_two_workers_share_the_port_and_both_answer(world, tmp_path):
    port = free_port()
    proc = _start_serve(world, port, 2, tmp_path)
    addr = f"127.0.0.1:{port}"
    try:
        _wait_serving(addr, proc)
        pids, request_ids = set(), set()
        for _ in range(200):  # each new channel is a new connection; the kernel spreads them
            with RecommenderClient(addr, timeout=5) as client:
                pids.add(client.model_info()["pid"])
                request_ids.add(client.recommend_items("2", "1", k=2).request_id)
            if len(pids) == 2:
                break
        assert len(pids) == 2, f"only pids {pids} answered"
    finally:
        os.kill(proc.pid, signal.SIGTERM)  # graceful: the parent stops both workers
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # fail with the server's log, and leave no process behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = "no exit within 60 s of SIGTERM"
        assert code == 0, f"exit: {code}; serve.log: {(tmp_path / 'serve.log').read_text()[-3000:]}"
    logs = [logged(world.data_dir / "events" / f"worker-{i}") for i in (0, 1)]
    assert request_ids <= {r["request_id"] for log in logs for r in log}


# ---------------------------------------------------------------- random requests: the MODEL server
@pytest.fixture(scope="module")
def model_running(published, tmp_path_factory):
    """The model policy (FAISS + ranker over Feast on Redis) of the session's nightly-published tiny
    world, shared: it only serves from it (feedback goes to its own event log in a temp dir)."""
    from recsys.serving.recommender import ModelRecommender

    config, _ = published
    settings = ServingConfig(epsilon=EPS, metrics_port=None, policy="model")
    recommender = ModelRecommender(config, settings, poll_seconds=0).load()
    log = EventLog(tmp_path_factory.mktemp("model_events") / "worker-0").open()
    server = create_server(settings, recommender, log, metrics=Metrics())
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield {"stub": pb_grpc.RecommenderStub(channel), "config": config}
    channel.close()
    server.stop(1).wait()
    log.close()
    recommender.close()


# ids that exist in the tiny world most of the time (so the model path, not only validation, runs)
model_ids = st.one_of(st.integers(0, 420).map(str), ids)
valid_times = st.integers(946_684_800, 4_102_444_799)


@st.composite
def model_contexts(draw):
    ctx = draw(contexts())
    if draw(st.booleans()):  # a valid request time half of the time: the ranker's time features
        ctx.request_time.seconds = draw(valid_times)
        ctx.request_time.nanos = draw(st.integers(0, 999_999_999))
    return ctx


model_requests = st.one_of(
    st.builds(lambda u, r, k, c, e: ("RecommendItems", pb.RecommendItemsRequest(
        user_id=u, restaurant_id=r, k=k, context=c, explain=e)), model_ids, model_ids, st.integers(-3, 120),
        model_contexts(), st.booleans()),
    st.builds(lambda u, k, c, e: ("RecommendRestaurants", pb.RecommendRestaurantsRequest(
        user_id=u, k=k, context=c, explain=e)), model_ids, st.integers(-3, 120), model_contexts(), st.booleans()),
    st.builds(lambda evs: ("LogFeedback", pb.LogFeedbackRequest(events=evs)), st.lists(st.builds(
        lambda r, e, t: pb.FeedbackEvent(request_id=r, entity_id=e, type=t), ids, model_ids, st.integers(0, 4)),
        max_size=3)),
    st.just(("GetModelInfo", pb.GetModelInfoRequest())),
)


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=model_requests)
def test_random_requests_to_the_model_server_never_get_an_internal_error(model_running, call):
    method, msg = call
    code, details = code_of(getattr(model_running["stub"], method), msg)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (code, details)
