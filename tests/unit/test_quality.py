"""`recsys monitor quality` on hand-built impressions logs: known answers, interval behaviour under
correlated clicks (coverage, widening, 1/sqrt(users)), lift, regression, old logs, the CLI."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.monitoring.quality import Z95, compare, quality_report, rate_table, scan_impressions

T0 = datetime(2026, 10, 20, 9, tzinfo=timezone.utc)


def make_log(users, slots, clicks, *, orders=None, surface="menu", policy="v1", arm="control", ts=T0,
             lists_per_user=1) -> pl.DataFrame:
    """One row per shown slot: user u has slots[u] slots over ``lists_per_user`` lists, of which the
    first clicks[u] are clicked (and the first orders[u] ordered)."""
    rows = {"request_id": [], "user_id": [], "clicked": [], "ordered": []}
    orders = orders if orders is not None else [0] * len(users)
    for u, n, c, o in zip(users, slots, clicks, orders):
        for i in range(n):
            rows["request_id"].append(f"{u}-{i % lists_per_user}")
            rows["user_id"].append(int(u))
            rows["clicked"].append(i < c)
            rows["ordered"].append(i < o)
    n = len(rows["user_id"])
    return pl.DataFrame({**rows, "ts": [ts] * n, "surface": [surface] * n, "policy": [policy] * n,
                         "arm": [arm] * n})


def row(table: pl.DataFrame, **where) -> dict:
    return table.filter(*[pl.col(k) == v for k, v in where.items()]).to_dicts()[0]


def test_rates_and_their_clustered_errors_equal_a_hand_computation():
    # users: 10 slots 2 clicks 1 order, 10 slots 0 clicks, 20 slots 6 clicks
    got = row(rate_table(make_log([1, 2, 3], [10, 10, 20], [2, 0, 6], orders=[1, 0, 0]), ["surface"]))
    assert (got["impressions"], got["users"], got["clicks"], got["orders"]) == (40, 3, 8, 1)
    assert got["ctr"] == 0.2 and got["order_rate"] == 0.025
    # residuals y - R n: (0, -2, 2) -> sum of squares 8; K/(K-1) = 3/2
    assert math.isclose(got["ctr_se"], math.sqrt(1.5 * 8) / 40)
    assert math.isclose(got["ctr_lo"], 0.2 - Z95 * got["ctr_se"])
    assert math.isclose(got["ctr_hi"], 0.2 + Z95 * got["ctr_se"])
    # orders: residuals (0.75, -0.25, -0.5); the lower bound is clipped at 0
    assert math.isclose(got["order_rate_se"], math.sqrt(1.5 * 0.875) / 40)
    assert got["order_rate_lo"] == 0.0


def test_all_the_lists_of_a_user_form_one_cluster():
    # 20 users x 5 lists x 2 slots; 4 users click everything, the others nothing
    got = row(rate_table(make_log(range(20), [10] * 20, [10] * 4 + [0] * 16, lists_per_user=5), ["surface"]))
    assert got["lists"] == 100 and got["ctr"] == 0.2
    # per user: residuals 10 - 0.2 x 10 = 8 (x4) and -2 (x16): 320; clustering by list would give 0.040
    assert math.isclose(got["ctr_se"], math.sqrt(20 / 19 * 320) / 200)


def test_one_user_has_no_interval():
    got = row(rate_table(make_log([1], [10], [3]), ["surface"]))
    assert got["ctr"] == 0.3 and got["ctr_se"] is None and got["ctr_lo"] is None


def test_clicks_concentrated_in_few_users_give_a_wider_interval_than_independent_clicks():
    rng = np.random.default_rng(0)
    users = list(range(200))
    independent = make_log(users, [10] * 200, rng.binomial(10, 0.1, 200).tolist())
    clustered = make_log(users, [10] * 200, [10] * 20 + [0] * 180)  # same CTR, all-or-nothing users
    a, b = row(rate_table(independent, ["surface"])), row(rate_table(clustered, ["surface"]))
    binomial = math.sqrt(a["ctr"] * (1 - a["ctr"]) / a["impressions"])
    assert abs(a["ctr_se"] / binomial - 1) < 0.2  # independent clicks: about the binomial error
    assert b["ctr"] == 0.1 and b["ctr_se"] > 2.5 * a["ctr_se"]


def test_the_interval_narrows_with_the_square_root_of_the_users():
    base = make_log([1, 2, 3, 4], [10, 12, 8, 10], [1, 4, 0, 2])
    four = pl.concat([base.with_columns(pl.col("user_id") + 100 * k) for k in range(4)])
    one, many = row(rate_table(base, ["surface"])), row(rate_table(four, ["surface"]))
    assert many["ctr"] == one["ctr"]
    correction = math.sqrt((16 / 15) / (4 / 3))  # K/(K-1) for 16 users vs 4
    assert math.isclose(many["ctr_se"] / one["ctr_se"], correction / 2)


def test_intervals_cover_the_true_rate_when_clicks_are_correlated_within_users():
    """400 replications of 120 users whose own CTRs vary (beta, mean 0.1), 5-30 slots each: the
    clustered interval covers the true mean about 95% of the time, the binomial one far less."""
    rng = np.random.default_rng(7)
    reps, users = 400, 120
    p_user = rng.beta(0.5, 4.5, (reps, users))
    slots = rng.integers(5, 31, (reps, users))
    clicks = rng.binomial(slots, p_user)
    frame = pl.DataFrame({"rep": np.repeat(np.arange(reps), users), "user_id": np.tile(np.arange(users), reps),
                          "n": slots.ravel(), "c": clicks.ravel()})
    log = (frame.with_columns(slot=pl.int_ranges(0, pl.col("n"))).explode("slot")
           .with_columns(clicked=pl.col("slot") < pl.col("c"), ordered=pl.lit(False),
                         request_id=pl.format("{}-{}", "rep", "user_id")))
    table = rate_table(log, ["rep"])
    covered = ((table["ctr_lo"] <= 0.1) & (0.1 <= table["ctr_hi"])).mean()
    naive = Z95 * (table["ctr"] * (1 - table["ctr"]) / table["impressions"]).sqrt()
    naive_covered = ((table["ctr"] - naive <= 0.1) & (0.1 <= table["ctr"] + naive)).mean()
    assert 0.91 <= covered <= 0.98, covered
    assert naive_covered < 0.8, naive_covered


def _two_arms(p_control: float, p_treatment: float, users: int = 400, seed: int = 1) -> pl.DataFrame:
    """Half the users per arm (control: v1, treatment: v2), 10 slots each, Binomial(10, p) clicks."""
    rng = np.random.default_rng(seed)
    half = users // 2
    return pl.concat([make_log(range(offset, offset + half), [10] * half, rng.binomial(10, p, half).tolist(),
                               policy=version, arm=name)
                      for name, offset, p, version in (("control", 0, p_control, "v1"),
                                                       ("treatment", 10_000, p_treatment, "v2"))])


def _ctr(comparisons):
    return next(c for c in comparisons if c.metric == "ctr")


def test_the_lift_of_treatment_over_control_has_an_interval_around_it():
    better = _ctr(quality_report(_two_arms(0.1, 0.2, users=2000), ["v1", "v2"]).lifts)
    assert (better.subject, better.baseline) == ("treatment", "control")
    assert math.isclose(better.lift, better.subject_rate / better.baseline_rate - 1)
    assert 0 < better.lift_lo < 1.0 < better.lift_hi and better.significant
    assert better.diff_lo < 0.1 < better.diff_hi and better.diff_lo > 0
    same = _ctr(quality_report(_two_arms(0.15, 0.15), []).lifts)
    assert same.lift_lo < 0 < same.lift_hi and not same.significant


def test_a_version_worse_than_the_previous_beyond_tolerance_and_significantly_is_a_regression():
    worse = quality_report(_two_arms(0.2, 0.1), ["v1", "v2"], tolerance=0.05)
    assert worse.alert and {(c.subject, c.baseline, c.metric) for c in worse.regressions} == {("v2", "v1", "ctr")}
    # registry order decides which is the previous version: v1 after v2 is an improvement
    assert not quality_report(_two_arms(0.2, 0.1), ["v2", "v1"]).alert
    # significantly worse, but by less than the tolerance: no alert
    within = quality_report(_two_arms(0.2, 0.15), ["v1", "v2"], tolerance=0.5)
    assert _ctr(within.versions).lift_hi < 0 and not within.alert
    # worse beyond the tolerance, but not significantly (few users): no alert
    noisy = quality_report(_two_arms(0.2, 0.1, users=12), ["v1", "v2"], tolerance=0.05)
    assert _ctr(noisy.versions).lift < -0.05 < 0 < _ctr(noisy.versions).lift_hi and not noisy.alert


def test_fallback_policies_are_reported_but_never_compared_as_versions():
    log = pl.concat([_two_arms(0.2, 0.1), make_log([7, 8], [10, 10], [0, 0], policy="popularity")])
    report = quality_report(log, ["v1", "v2"])
    assert "popularity" in report.totals.filter(pl.col("by") == "version")["group"].to_list()
    assert all("popularity" not in (c.subject, c.baseline) for c in report.versions)


def test_rates_are_per_surface_and_per_day_or_hour():
    log = pl.concat([make_log([1, 2], [10, 10], [1, 2], ts=T0),
                     make_log([1, 3], [10, 10], [0, 5], ts=T0 + timedelta(hours=1)),
                     make_log([2], [10], [3], ts=T0 + timedelta(days=1)),
                     make_log([1], [5], [1], surface="feed")])
    daily, hourly = quality_report(log, []), quality_report(log, [], hourly=True)
    menu_arm = pl.col("surface").eq("menu") & pl.col("by").eq("arm")
    assert daily.series.filter(menu_arm)["period"].dt.day().to_list() == [20, 21]
    assert hourly.series.filter(menu_arm).height == 3
    assert daily.series.filter(menu_arm)["clicks"].sum() == row(daily.totals, surface="menu", by="arm")["clicks"] == 11
    assert row(daily.totals, surface="feed", by="arm")["ctr"] == 0.2


def test_logs_landed_before_arms_existed_read_as_control(tmp_path):
    (tmp_path / "date=2026-10-19").mkdir()
    (tmp_path / "date=2026-10-20").mkdir()
    make_log([1], [4], [1]).drop("arm").write_parquet(tmp_path / "date=2026-10-19" / "part-0.parquet")
    make_log([2], [4], [2], arm="treatment").write_parquet(tmp_path / "date=2026-10-20" / "part-0.parquet")
    log = scan_impressions(tmp_path).collect()
    assert dict(zip(log["user_id"], log["arm"])) == {1: "control", 2: "treatment"}


def test_compare_without_a_baseline_rate_has_no_lift():
    a = {"group": "a", "ctr": 0.1, "ctr_se": 0.01}
    b = {"group": "b", "ctr": 0.0, "ctr_se": 0.0}
    got = compare("menu", "ctr", a, b, tolerance=0.05)
    assert got.lift is None and not got.regression and math.isclose(got.diff, 0.1)


def test_the_cli_writes_json_and_prometheus_and_exits_1_on_a_regression(tmp_path):
    from recsys.cli import app
    from recsys.registry import Registry

    registry = Registry.for_config(_config(tmp_path)).open()
    for version in ("v1", "v2"):
        with registry.stage(version) as area:
            area.commit(trained_until=T0, data_fingerprint="d" * 64, feature_definitions_hash="f" * 64)
    log_dir = tmp_path / "impressions_log" / "date=2026-10-20"
    log_dir.mkdir(parents=True)
    _two_arms(0.2, 0.1).write_parquet(log_dir / "part-0.parquet")
    out, prom = tmp_path / "q.json", tmp_path / "q.prom"
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "monitor", "quality", "--out", str(out),
                                      "--prometheus", str(prom)])
    assert result.exit_code == 1, result.output
    assert "ALERT menu ctr: v2 is -" in result.output
    report = json.loads(out.read_text())
    assert report["alert"] and report["period"] == "day" and len(report["lifts"]) == 2
    assert 'recsys_quality_regression{metric="ctr",previous="v1",surface="menu",version="v2"} 1.0' in prom.read_text()
    fine = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "monitor", "quality", "--hourly",
                                    "--tolerance", "0.9"])
    assert fine.exit_code == 0, fine.output


def _config(data_dir):
    from recsys.config import load_config

    return load_config(environ={}, data_dir=data_dir)


@pytest.fixture(autouse=True)
def _register_cli():
    import recsys.cli.monitor  # noqa: F401 - registers `monitor` and its subcommands
