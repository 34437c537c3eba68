"""The sink: served lists + feedback on a real server -> Parquet impressions log that the contract
and the evaluator accept, propensities replayable under the exploration scheme; idempotent;
the lateness window; quarantine of ids that are not integers."""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from jobs.sink import sink_job
from recsys.contracts.schemas import IMPRESSIONS
from recsys.contracts.validate import validate_table
from recsys.evaluation.logs import load_log
from recsys.serving import events
from recsys.serving.client import RecommenderClient
from recsys.serving.domain import Entry, Feedback, ItemsRequest, RankedList, RequestContext, RestaurantsRequest
from recsys.serving.eventlog import EventLog
from recsys.serving.fallback import PopularityRecommender
from recsys.serving.server import create_server
from recsys.serving.settings import ServingConfig
from recsys.serving.sink import run_sink
from tests.integration.test_server import validated_world

EPS = 0.3
UTC = timezone.utc


@pytest.fixture(scope="module")
def landed(tiny_world, tmp_path_factory):
    """A server session (menus, feeds, clicks, orders, an orphan click, a non-integer user),
    then the sink with flush."""
    world = validated_world(tiny_world, tmp_path_factory.mktemp("sink_world"))
    settings = ServingConfig(epsilon=EPS)
    recommender = PopularityRecommender.for_config(world, settings).load()
    log = EventLog(world.data_dir / "events" / "worker-0").open()
    server = create_server(settings, recommender, log)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    served, feedback = [], []
    now = datetime.now(UTC)
    with RecommenderClient(f"127.0.0.1:{port}", timeout=5) as client:
        for u in range(30):
            menu = client.recommend_items(str(u), str(u % 10), k=5)
            feed = client.recommend_restaurants(str(u), k=6, context=RequestContext(local_hour=12))
            served += [("menu", str(u), str(u % 10), menu), ("feed", str(u), None, feed)]
            clicks = [Feedback(menu.request_id, menu.entries[u % len(menu.entries)].id, "click", now)]
            if u % 3 == 0:
                clicks.append(Feedback(menu.request_id, menu.entries[u % len(menu.entries)].id, "order", now))
            if u % 4 == 0:
                clicks.append(Feedback(feed.request_id, feed.entries[0].id, "click", now))
            feedback += clicks
            client.log_feedback(clicks)
        client.log_feedback([Feedback("no-such-request", "1", "click", now)])
        client.recommend_items("alice", "1", k=3)  # served, but not an integer user id
    server.stop(1).wait()
    log.close()
    report = sink_job(world, flush=True)
    return world, report, served, feedback, recommender


def _log(world) -> pl.DataFrame:
    return pl.read_parquet(world.data_dir / "impressions_log", hive_partitioning=False)


def test_landed_log_passes_the_impressions_contract(landed):
    world, report, served, _, _ = landed
    df = _log(world)
    refs = {t: pl.read_parquet(world.clean_dir / f"{t}.parquet") for t in ("users", "restaurants", "items")}
    result = validate_table(df, IMPRESSIONS, n_cells=world.grid_size ** 2, references=refs)
    assert result.report.bad_rows == 0, result.report.to_dict()
    assert df.height == sum(len(r.entries) for *_, r in served) == report.rows
    assert report.requests == len(served) and report.days_written


def test_landed_log_loads_in_the_evaluator_for_both_surfaces(landed):
    world, *_ = landed
    menu = load_log(world.data_dir / "impressions_log", surface="menu")
    feed = load_log(world.data_dir / "impressions_log", surface="feed")
    assert menu["request_id"].n_unique() == 30 and feed["request_id"].n_unique() == 30
    assert feed["item_id"].null_count() == feed.height


def test_clicks_and_orders_are_joined_to_the_entries_they_refer_to(landed):
    world, report, _, feedback, _ = landed
    df = _log(world)
    clicked = {(f.request_id, int(f.entity_id)) for f in feedback}
    ordered = {(f.request_id, int(f.entity_id)) for f in feedback if f.kind == "order"}
    entity = pl.coalesce("item_id", "restaurant_id")
    got_clicked = set(df.filter("clicked").select("request_id", entity).iter_rows())
    got_ordered = set(df.filter("ordered").select("request_id", entity).iter_rows())
    assert got_clicked == clicked and got_ordered == ordered
    assert report.feedback_joined == len(feedback) and report.feedback_late == 1  # the orphan click


def test_propensities_replay_exactly_under_the_exploration_scheme(landed):
    world, _, served, _, recommender = landed
    df = _log(world)
    for surface, user, restaurant, answer in served[:20]:
        rows = df.filter(pl.col("request_id") == answer.request_id).sort("position")
        if surface == "menu":
            again = recommender.recommend_items(ItemsRequest(request_id=answer.request_id, user_id=user,
                                                             restaurant_id=restaurant, k=5, explain=True))
        else:
            again = recommender.recommend_restaurants(RestaurantsRequest(
                request_id=answer.request_id, user_id=user, k=6, explain=True, context=RequestContext(local_hour=12)))
        n = again.n_candidates
        assert rows["n_candidates"].to_list() == [n] * rows.height
        assert rows["propensity"].to_list() == [e.propensity for e in again.entries]
        for e in again.entries:  # (1 - eps) * [greedy puts it here] + eps / n
            expected = (1 - EPS) * (e.explanation["greedy_rank"] == e.position) + EPS / n
            assert math.isclose(e.propensity, expected)


def test_requests_with_non_integer_ids_are_quarantined_not_dropped(landed):
    world, report, *_ = landed
    bad = pl.read_parquet(world.data_dir / "impressions_log_quarantine")
    assert set(bad["user_id"]) == {"alice"} and bad["reason"].str.contains("not integers").all()
    assert report.quarantined_requests == 1
    assert "alice" not in _log(world)["user_id"].cast(str).to_list()


def test_running_again_is_idempotent(landed, tmp_path):
    world, *_ = landed
    out = world.data_dir / "impressions_log"
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.parquet")}
    again = sink_job(world, flush=True)  # same state: nothing new to land
    assert again.days_written == () and again.rows == 0
    (world.data_dir / "sink" / "state.json").unlink()  # re-land from offset 0: same bytes
    shutil.rmtree(out)
    sink_job(world, flush=True)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*.parquet")} == before


def _served(rid: str, ts: datetime, entries=("1", "2")) -> bytes:
    req = ItemsRequest(request_id=rid, user_id="1", restaurant_id="0", k=len(entries))
    ranked = RankedList(rid, "v1", tuple(Entry(e, 1.0, i, 1.0) for i, e in enumerate(entries)), n_candidates=len(entries))
    return events.encode(events.served_record(req, ranked, ts))


def _click(rid: str, entity: str, at: datetime) -> bytes:
    return events.encode(events.feedback_record(Feedback(rid, entity, "click", at), at))


def test_a_day_lands_once_the_watermark_passes_its_end_plus_lateness(tmp_path):
    logs, out, state = tmp_path / "events", tmp_path / "out", tmp_path / "state.json"
    day1 = datetime(2026, 10, 20, 23, 30, tzinfo=UTC)
    lateness = timedelta(minutes=60)
    with EventLog(logs / "worker-0") as log:
        log.append(_served("a", day1))
        log.append(_click("a", "1", day1 + timedelta(minutes=50)))  # inside the window (and the next day)
        log.append(_click("a", "2", day1 + timedelta(minutes=80)))  # after the window: not joined
        log.append(_served("b", day1 + timedelta(minutes=40)))  # day 2
    first = run_sink(logs, out, state, lateness=lateness)
    # watermark 00:50 < end of day 1 + 1h; the late click is counted once, in the run that reads it
    assert first.days_written == () and first.pending_requests == 2 and first.feedback_late == 1
    with EventLog(logs / "worker-0") as log:
        log.append(_served("c", datetime(2026, 10, 21, 1, 5, tzinfo=UTC)))
    second = run_sink(logs, out, state, lateness=lateness)
    assert second.days_written == ("2026-10-20",) and second.feedback_late == 0 and second.pending_requests == 2
    df = pl.read_parquet(out / "date=2026-10-20" / "part-0.parquet")
    assert df["clicked"].to_list() == [True, False]
    third = run_sink(logs, out, state, lateness=lateness, flush=True)
    assert third.days_written == ("2026-10-21",) and third.requests == 2 and third.feedback_late == 0


def test_lists_logged_before_arms_land_as_control_and_unknown_record_versions_are_refused(tmp_path):
    logs, out = tmp_path / "events", tmp_path / "out"
    at = datetime(2026, 10, 20, 12, tzinfo=UTC)
    v1 = events.served_record(ItemsRequest(request_id="old", user_id="1", restaurant_id="0", k=1),
                              RankedList("old", "v1", (Entry("1", 1.0, 0, 1.0),), n_candidates=1), at)
    del v1["arm"]
    v1["v"] = 1  # a record written before the format had arms
    treated = RankedList("new", "v2", (Entry("2", 1.0, 0, 1.0),), n_candidates=1, arm="treatment")
    with EventLog(logs / "worker-0") as log:
        log.append(events.encode(v1))
        log.append(_served("plain", at))
        log.append(events.encode(events.served_record(
            ItemsRequest(request_id="new", user_id="1", restaurant_id="0", k=1), treated, at)))
    run_sink(logs, out, tmp_path / "state.json", lateness=timedelta(minutes=60), flush=True)
    df = pl.read_parquet(out)
    assert dict(zip(df["request_id"], df["arm"])) == {"old": "control", "plain": "control", "new": "treatment"}
    for record in ({"type": "features", "v": 1}, {"type": "served", "v": 3}, {"type": "served"}):
        with pytest.raises(ValueError, match="unknown event record"):
            events.decode(json.dumps(record).encode())
