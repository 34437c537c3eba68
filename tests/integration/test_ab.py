"""A/B arms on a real server (real Redis, the session's nightly-published tiny world, gRPC on a
socket): a salted, stable user split; each arm answered by its own registry version, fallbacks per
arm; the arm in every logged list and in the landed impressions log (which the contract and the
evaluator still accept); GetModelInfo; clear errors for bad settings; the control following the
pointer while the treatment stays; `recsys monitor quality` on the landed log of simulated traffic."""

from __future__ import annotations

import json
from datetime import timedelta

import polars as pl
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from recsys.contracts.schemas import IMPRESSIONS
from recsys.contracts.validate import validate_table
from recsys.errors import ConfigError
from recsys.evaluation.logs import load_log
from recsys.registry import Registry
from recsys.registry.publish import publish_version
from recsys.serving import events
from recsys.serving.arms import Split
from recsys.serving.eventlog import EventLogReader
from recsys.serving.recommender import ModelRecommender
from recsys.serving.server import default_recommender
from recsys.serving.settings import ServingConfig
from recsys.serving.sink import run_sink
from recsys.serving.v1 import recommender_pb2 as pb
from recsys.simulation.run import load_truth
from recsys.simulation.traffic import TrafficSettings, run_traffic
from tests.integration.test_online_path import (
    Server, _wait_for, candidates_of, feed_call, items_call, known_users, republish_as,
)

EPS, SHARE, SALT = 0.3, 0.5, "exp-1"
SPLIT = Split(SHARE, SALT)


@pytest.fixture(scope="module")
def world(published):
    """(config, control = the serving version, treatment = another registered version)."""
    # The shared world: this module only adds registry versions (never served unless promoted) and
    # logs events under its own temp directories; the one pointer move (the control following the
    # pointer) rolls back in a `finally`, which republishes the control's online rows.
    config, control = published
    return config, control, republish_as(config, control, "treat", ranker=True)


@pytest.fixture(scope="module")
def model(world):
    config, _, treatment = world
    settings = ServingConfig(epsilon=EPS, metrics_port=None, ab_version=treatment, ab_share=SHARE, ab_salt=SALT)
    recommender = ModelRecommender(config, settings, poll_seconds=0.2).load()
    yield recommender
    recommender.close()


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    s = Server(model, model.settings, tmp_path_factory.mktemp("ab_events") / "worker-0")
    yield s
    s.close()


def _arm(user) -> str:
    return "treatment" if SPLIT.is_treatment(str(user)) else "control"


@pytest.fixture(scope="module")
def served(world, server):
    """Feeds for every known user, menus for some, unknown users in both arms, then simulated traffic
    (sessions with clicks and orders, as `recsys simulate traffic` sends them)."""
    config, control, _ = world
    users = known_users(config, control)
    cands = candidates_of(config, control)
    restaurant = max(cands, key=lambda r: len(cands[r]))
    feeds = {u: feed_call(server.stub, u) for u in users}
    menus = {u: items_call(server.stub, u, restaurant) for u in users[:40]}
    unknown = {}
    for u in range(10**6, 10**6 + 50):  # not users of the world
        unknown.setdefault(_arm(u), u)
    fallbacks = {arm: items_call(server.stub, u, restaurant) for arm, u in unknown.items()}
    traffic = run_traffic(server.addr, load_truth(config), TrafficSettings(
        users=150, requests=400, seed=3, feed_k=config.sim.feed_slots, menu_k=config.sim.menu_slots, max_seconds=120))
    return {"feeds": feeds, "menus": menus, "unknown": unknown, "fallbacks": fallbacks, "traffic": traffic}


@pytest.fixture(scope="module")
def landed(server, served, tmp_path_factory):
    out = tmp_path_factory.mktemp("ab_landed")
    report = run_sink(server.event_log.directory.parent, out / "impressions_log", out / "state.json",
                      lateness=timedelta(minutes=60), flush=True)
    assert report.rows > 0
    return out / "impressions_log"


# ---------------------------------------------------------------- the split and the versions
def test_users_are_split_by_a_salted_stable_hash_and_each_arm_is_served_by_its_version(world, server, served):
    config, control, treatment = world
    version = {"control": control, "treatment": treatment}
    for user, resp in {**served["feeds"], **served["menus"]}.items():
        assert (resp.model_version, resp.degraded) == (version[_arm(user)], False), user
    share = sum(_arm(u) == "treatment" for u in served["feeds"]) / len(served["feeds"])
    assert 0.35 < share < 0.65
    again = {u: feed_call(server.stub, u).model_version for u in list(served["feeds"])[:20]}
    assert again == {u: served["feeds"][u].model_version for u in again}  # stable
    other_salt = Split(SHARE, "exp-2")
    assert any(other_salt.is_treatment(str(u)) != SPLIT.is_treatment(str(u)) for u in served["feeds"])


def test_fallbacks_work_per_arm_and_log_the_policy_that_answered(world, server, served):
    assert set(served["fallbacks"]) == {"control", "treatment"}
    for resp in served["fallbacks"].values():
        assert resp.degraded and resp.degraded_reason == "unknown_user:popularity"
        assert resp.model_version == "popularity"
    logged = {r["request_id"]: r for r in _records(server) if r["type"] == events.SERVED}
    for arm, resp in served["fallbacks"].items():
        assert (logged[resp.request_id]["arm"], logged[resp.request_id]["policy"]) == (arm, "popularity")


def test_every_logged_list_carries_its_users_arm(server, served):
    records = [r for r in _records(server) if r["type"] == events.SERVED]
    assert len(records) >= len(served["feeds"]) + len(served["menus"])
    assert all(r["v"] == events.VERSION and r["arm"] == _arm(r["user_id"]) for r in records)


def _records(server) -> list[dict]:
    return [events.decode(r.payload) for r in EventLogReader(server.event_log.directory).read()]


def test_the_landed_log_has_the_arm_column_and_the_contract_and_evaluator_accept_it(world, landed):
    config = world[0]
    df = pl.read_parquet(landed)
    assert df["arm"].to_list() == [_arm(u) for u in df["user_id"]]
    refs = {t: pl.read_parquet(config.clean_dir / f"{t}.parquet") for t in ("users", "restaurants", "items")}
    df = df.filter(pl.col("user_id") < 10**6)  # the unknown users are not in the users table
    result = validate_table(df, IMPRESSIONS, n_cells=config.grid_size ** 2, references=refs)
    assert result.report.bad_rows == 0, result.report.to_dict()
    bad = validate_table(df.with_columns(arm=pl.lit("both")), IMPRESSIONS, n_cells=config.grid_size ** 2,
                         references=refs)
    assert bad.report.bad_rows == df.height  # the arm vocabulary is checked
    for surface in ("feed", "menu"):
        assert load_log(landed, surface=surface)["request_id"].n_unique() > 0


def test_model_info_names_both_arms(world, server):
    _, control, treatment = world
    info = server.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10).info
    assert (info["arm:control"], info["arm:treatment"]) == (control, treatment)
    assert (info["ab_share"], info["ab_salt"]) == ("0.5", SALT)


# ---------------------------------------------------------------- `recsys monitor quality`
def test_monitor_quality_reports_each_arm_and_the_lift_on_the_landed_log(world, landed, tmp_path):
    import recsys.cli.monitor  # noqa: F401 - registers the subcommands
    from recsys.cli import app

    config, control, treatment = world
    out = tmp_path / "quality.json"
    result = CliRunner().invoke(app, ["--data-dir", str(config.data_dir), "monitor", "quality", "--log", str(landed),
                                      "--out", str(out)])
    report = json.loads(out.read_text())
    assert result.exit_code == int(report["alert"]), result.output
    df = pl.read_parquet(landed)
    for by, column in (("arm", "arm"), ("version", "policy")):
        rows = {(r["surface"], r["group"]): r for r in report["totals"] if r["by"] == by}
        want = df.group_by("surface", column).agg(pl.len(), pl.col("clicked").sum())
        assert {(s, g): (n, c) for s, g, n, c in want.iter_rows()} == \
            {k: (r["impressions"], r["clicks"]) for k, r in rows.items()}
    lifts = {(c["surface"], c["metric"], c["subject"], c["baseline"]) for c in report["lifts"]}
    assert {(s, "ctr", "treatment", "control") for s in ("feed", "menu")} <= lifts
    assert {(c["subject"], c["baseline"]) for c in report["versions"]} == {(treatment, control)}


# ---------------------------------------------------------------- settings and hot reload
def test_bad_ab_settings_are_clear_errors(world):
    config, _, treatment = world
    with pytest.raises(ValidationError, match="ab_share"):
        ServingConfig(ab_version=treatment, ab_share=1.5)
    with pytest.raises(ValidationError, match="needs ab_version"):
        ServingConfig(ab_share=0.5)
    with pytest.raises(ConfigError, match="ab_version='20990101T000000Z-nope': no such version"):
        ModelRecommender(config, ServingConfig(ab_version="20990101T000000Z-nope", ab_share=0.5, metrics_port=None),
                         poll_seconds=0).load()
    with pytest.raises(ConfigError, match="A/B arms need the model policy"):
        default_recommender(config, ServingConfig(policy="popularity", ab_version=treatment, ab_share=0.5))


def test_the_control_follows_the_serving_pointer_while_the_treatment_stays(world, server, model, served):
    config, control, treatment = world
    newer = republish_as(config, control, "next", ranker=True)
    registry = Registry.for_config(config).open()
    users = list(served["feeds"])
    in_control = next(u for u in users if _arm(u) == "control")
    in_treatment = next(u for u in users if _arm(u) == "treatment")
    registry.promote(newer, "test: A/B hot reload", publish=lambda v: publish_version(config, v))
    try:
        _wait_for(lambda: model.bundle.version == newer)
        assert feed_call(server.stub, in_control).model_version == newer
        assert feed_call(server.stub, in_treatment).model_version == treatment
        assert model.model_info()["arm:treatment"] == treatment
    finally:
        registry.rollback("test: back", publish=lambda v: publish_version(config, v))
        _wait_for(lambda: model.bundle.version == control)
