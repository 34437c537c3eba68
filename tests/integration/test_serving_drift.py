"""`recsys monitor drift --samples` on real landed samples (the session's published tiny world, a
real server on Redis, the sink): a clean day raises no serving-drift alert; one feature's values
altered in the landed Parquet alert, name it, and make the command exit 1.

The clean day: the logged menu requests of the weekday a week before the day after the log (users,
restaurants, times of day) replayed a week later, so the sample has the log's traffic mix."""

from __future__ import annotations

import json
from datetime import timedelta

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import _register, app
from recsys.serving.sink import run_sink
from recsys.serving.v1 import recommender_pb2 as pb
from recsys.training.interactions import scan_impressions
from tests.integration.test_feature_samples import serving
from tests.integration.test_online_path import items_call

ALTERED = "item_profile__price"  # a static profile field: never warming up


@pytest.fixture(scope="module")
def landed(published, tmp_path_factory):
    """The landed feature samples of one replayed day: (config, version, samples directory)."""
    config, version = published  # the shared world: served from, not changed
    menus = (scan_impressions(config.clean_dir).filter(pl.col("surface") == "menu")
             .group_by("request_id").agg(pl.col("user_id", "restaurant_id").first(), pl.col("ts").min(),
                                         pl.len().alias("k"))
             .collect())
    day = menus["ts"].max().date() - timedelta(days=6)
    replay = menus.filter(pl.col("ts").dt.date() == day).sort("ts")
    root = tmp_path_factory.mktemp("serving_drift")
    with serving(config, 1.0, root / "events" / "worker-0") as (stub, _):
        for user, restaurant, ts, k in replay.select("user_id", "restaurant_id", "ts", "k").iter_rows():
            context = pb.RequestContext()
            context.request_time.FromDatetime(ts + timedelta(days=7))
            items_call(stub, user, restaurant, k=k, context=context)
    report = run_sink(root / "events", root / "impressions_log", root / "state.json",
                      lateness=timedelta(minutes=60), flush=True)
    assert report.feature_samples > 50, report
    return config, version, root / "feature_samples"


def _drift(config, samples, out):
    _register()
    return CliRunner().invoke(app, ["--data-dir", str(config.data_dir), "monitor", "drift", "--no-retrain",
                                    "--samples", str(samples), "--out", str(out / "drift.json"),
                                    "--prometheus", str(out / "drift.prom")])


def test_a_clean_day_of_served_samples_raises_no_serving_drift_alert(landed, tmp_path):
    config, version, samples = landed
    result = _drift(config, samples, tmp_path)
    report = json.loads((tmp_path / "drift.json").read_text())
    serving_report = report["serving"]
    assert serving_report["version"] == version and not serving_report["alert"], result.output
    statuses = {f["feature"]: f["status"] for f in serving_report["features"]}
    assert statuses[ALTERED] == "monitored" and statuses["request_time__hour_of_day"] == "calendar"
    assert statuses["user_stats__menu_clicks_28d"] == "warming_up"  # 28 days > the 14-day log
    assert result.exit_code == int(report["alert"]), result.output  # only the other checks can decide
    assert f'recsys_drift_serving_alert{{feature="{ALTERED}"' in (tmp_path / "drift.prom").read_text()


def test_one_altered_feature_in_the_landed_samples_alerts_names_it_and_exits_1(landed, tmp_path):
    config, _, samples = landed
    altered = tmp_path / "feature_samples"
    for part in sorted(samples.glob("date=*/part-0.parquet")):
        frame = pl.read_parquet(part).with_columns(
            pl.when(pl.col("feature") == ALTERED).then(pl.col("value") * 2).otherwise(pl.col("value")).alias("value"))
        (altered / part.parent.name).mkdir(parents=True)
        frame.write_parquet(altered / part.parent.name / part.name)
    result = _drift(config, altered, tmp_path)
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "drift.json").read_text())
    assert report["alert"] and report["serving"]["alerts"] == [ALTERED]
    assert ALTERED in result.output
