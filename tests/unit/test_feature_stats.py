"""Daily stats snapshots on tiny hand-computed logs: windows, point-in-time, smoothing, basket,
the examination curve and position-debiased CTRs, user x cuisine affinity."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from recsys.config import Config
from recsys.contracts.schemas import CUISINES
from recsys.features import stats

UTC = timezone.utc
D0 = datetime(2026, 10, 1, tzinfo=UTC)
K = 20.0


def day(n: int, hour: int = 12) -> datetime:
    return D0 + timedelta(days=n, hours=hour)


def impressions(rows: list[tuple]) -> pl.LazyFrame:
    """rows: (ts, user_id, surface, restaurant_id, item_id, clicked, ordered)."""
    cols = ["ts", "user_id", "surface", "restaurant_id", "item_id", "clicked", "ordered"]
    frame = pl.DataFrame([dict(zip(cols, r)) for r in rows], schema={
        "ts": pl.Datetime("us", "UTC"), "user_id": pl.Int64, "surface": pl.Utf8,
        "restaurant_id": pl.Int64, "item_id": pl.Int64, "clicked": pl.Boolean, "ordered": pl.Boolean,
    })
    return frame.with_columns(
        pl.int_range(pl.len()).alias("request_id"), pl.lit(0, pl.Int16).alias("position"),
        pl.lit(1.0).alias("propensity"),
    ).lazy()


ITEMS = pl.DataFrame(
    {"item_id": [100, 101], "restaurant_id": [10, 10], "category": ["main", "drink"], "price": [12.0, 4.0]},
    schema_overrides={"price": pl.Float32},
).lazy()


def snapshot(frame: pl.DataFrame, key: str, entity: int, ts: datetime) -> dict:
    rows = frame.filter((pl.col(key) == entity) & (pl.col("event_timestamp") == ts)).to_dicts()
    assert len(rows) == 1, f"expected one snapshot of {key}={entity} at {ts}, got {len(rows)}"
    return rows[0]


def user_stats(log: pl.LazyFrame, windows=(1, 7, 28)) -> pl.DataFrame:
    return stats.entity_stats(log, ITEMS, "user", windows, K).collect()


def test_snapshot_is_stamped_at_end_of_day_and_counts_that_day():
    log = impressions([(day(0), 1, "feed", 10, None, True, False)])
    out = user_stats(log)
    row = snapshot(out, "user_id", 1, D0 + timedelta(days=1))
    assert row["feed_impressions_1d"] == 1 and row["feed_clicks_1d"] == 1
    assert row["created_timestamp"] == row["event_timestamp"]


def test_event_at_snapshot_time_is_not_in_that_snapshot():
    t = D0 + timedelta(days=1)  # midnight: end of day 0, start of day 1
    log = impressions([(day(0), 1, "feed", 10, None, False, False), (t, 1, "feed", 10, None, True, False)])
    out = user_stats(log)
    at_t = snapshot(out, "user_id", 1, t)
    assert (at_t["feed_impressions_1d"], at_t["feed_clicks_1d"]) == (1, 0)
    nxt = snapshot(out, "user_id", 1, t + timedelta(days=1))
    assert (nxt["feed_impressions_1d"], nxt["feed_clicks_1d"]) == (1, 1)
    assert nxt["feed_impressions_7d"] == 2


def test_window_boundaries_drop_events_exactly_w_days_old():
    # One impression on day 0; the log runs to day 28 through another user.
    log = impressions([(day(0), 1, "feed", 10, None, False, False), (day(28), 2, "feed", 10, None, False, False)])
    out = user_stats(log)
    # Snapshot at end of day 6 = 7 days after day 0 started: still inside the 7d window.
    assert snapshot(out, "user_id", 1, D0 + timedelta(days=7))["feed_impressions_7d"] == 1
    assert snapshot(out, "user_id", 1, D0 + timedelta(days=8))["feed_impressions_7d"] == 0
    assert snapshot(out, "user_id", 1, D0 + timedelta(days=28))["feed_impressions_28d"] == 1
    assert snapshot(out, "user_id", 1, D0 + timedelta(days=29))["feed_impressions_28d"] == 0
    assert snapshot(out, "user_id", 1, D0 + timedelta(days=2))["feed_impressions_1d"] == 0


def test_rows_are_dense_from_first_activity_to_end_of_log():
    log = impressions([(day(3), 1, "feed", 10, None, False, False), (day(9), 2, "feed", 10, None, False, False)])
    out = user_stats(log)
    user1 = out.filter(pl.col("user_id") == 1)["event_timestamp"].to_list()
    assert user1 == [D0 + timedelta(days=d) for d in range(4, 11)]
    assert out.filter(pl.col("user_id") == 2).height == 1


def test_ctr_is_smoothed_toward_the_global_ctr_of_the_surface_in_the_window():
    # Feed on day 0: user 1 sees 2 (1 click), user 2 sees 2 (0 clicks) -> global feed CTR 1/4.
    # Menu CTR on day 0 is 1/1, which must not leak into feed CTR.
    log = impressions([
        (day(0), 1, "feed", 10, None, True, False),
        (day(0), 1, "feed", 11, None, False, False),
        (day(0), 2, "feed", 10, None, False, False),
        (day(0), 2, "feed", 11, None, False, False),
        (day(0), 2, "menu", 10, 100, True, False),
    ])
    row = snapshot(user_stats(log), "user_id", 1, D0 + timedelta(days=1))
    assert row["feed_ctr_1d"] == pytest.approx((1 + K * 0.25) / (2 + K))
    # No menu impressions for user 1: the smoothed CTR is the menu prior itself.
    assert row["menu_ctr_1d"] == pytest.approx(1.0)


def test_avg_basket_price_is_mean_price_of_ordered_menu_items_else_null():
    log = impressions([
        (day(0), 1, "menu", 10, 100, True, True),
        (day(1), 1, "menu", 10, 101, True, True),
        (day(1), 1, "menu", 10, 101, True, False),  # clicked, not ordered
        (day(0), 2, "menu", 10, 100, True, False),
    ])
    out = user_stats(log)
    assert snapshot(out, "user_id", 1, D0 + timedelta(days=2))["avg_basket_price_28d"] == pytest.approx(8.0)
    assert snapshot(out, "user_id", 1, D0 + timedelta(days=1))["avg_basket_price_28d"] == pytest.approx(12.0)
    assert snapshot(out, "user_id", 2, D0 + timedelta(days=2))["avg_basket_price_28d"] is None


def test_restaurant_and_item_stats_count_their_surfaces():
    log = impressions([
        (day(0), 1, "feed", 10, None, True, False),
        (day(0), 1, "menu", 10, 100, True, True),
        (day(0), 2, "menu", 10, 100, False, False),
    ])
    rest = stats.entity_stats(log, ITEMS, "restaurant", (1, 7, 28), K).collect()
    r = snapshot(rest, "restaurant_id", 10, D0 + timedelta(days=1))
    assert (r["feed_impressions_1d"], r["menu_impressions_1d"], r["menu_orders_1d"]) == (1, 2, 1)
    items = stats.entity_stats(log, ITEMS, "item", (1, 7, 28), K).collect()
    assert items.columns == ["item_id", "event_timestamp", "created_timestamp"] + stats.stats_feature_names(
        "item", (1, 7, 28)
    )
    i = snapshot(items, "item_id", 100, D0 + timedelta(days=1))
    assert (i["menu_impressions_1d"], i["menu_clicks_1d"], i["menu_orders_1d"]) == (2, 1, 1)


def test_feature_repo_schema_matches_stats_columns():
    import importlib
    import sys

    repo = str(Config().feature_repo)
    sys.path.insert(0, repo)
    try:
        views = importlib.import_module("views")
        for kind in ("user", "restaurant", "item"):
            fv = getattr(views, f"{kind}_stats")
            assert [f.name for f in fv.features] == stats.stats_feature_names(kind, Config().features.windows_days)
        assert views.CUISINES == CUISINES  # the order of user_cuisine_affinity.shares
        assert [f.name for f in views.user_cuisine_affinity.features] == [
            "shares", f"clicks_{stats.AFFINITY_WINDOW_DAYS}d"]
    finally:
        sys.path.remove(repo)
        for name in ("views", "entities", "sources"):
            sys.modules.pop(name, None)


def _write_clean(clean: Path, log: pl.LazyFrame) -> None:
    clean.mkdir(parents=True)
    pl.DataFrame({
        "user_id": [1, 2], "home_cell": pl.Series([3, 4], dtype=pl.Int32),
        "signup_ts": [D0 - timedelta(days=30)] * 2, "platform": ["ios", "web"],
    }).with_columns(pl.col("signup_ts").dt.replace_time_zone("UTC")).write_parquet(clean / "users.parquet")
    pl.DataFrame({
        "restaurant_id": [10], "cell": pl.Series([3], dtype=pl.Int32), "cuisine": ["thai"],
        "price_level": pl.Series([2], dtype=pl.Int8), "rating": pl.Series([4.5], dtype=pl.Float32),
        "open_hour": [8], "close_hour": [22], "created_ts": [D0 - timedelta(days=60)],
    }).write_parquet(clean / "restaurants.parquet")
    ITEMS.collect().write_parquet(clean / "items.parquet")
    log.collect().write_parquet(clean / "impressions.parquet")


def test_build_features_writes_every_table_atomically_and_idempotently(tmp_path):
    log = impressions([(day(0), 1, "menu", 10, 100, True, True), (day(2), 2, "feed", 10, None, False, False)])
    config = Config(data_dir=tmp_path)
    _write_clean(config.clean_dir, log)
    paths = stats.build_features(config)
    assert set(paths) == {"user_stats", "restaurant_stats", "item_stats", "user_cuisine_affinity", "user_profile",
                          "restaurant_profile", "item_profile"}
    first = {name: p.read_bytes() for name, p in paths.items()}
    stats.build_features(config)
    assert {name: p.read_bytes() for name, p in paths.items()} == first
    assert not list(config.offline_dir.glob("*.tmp"))
    profile = pl.read_parquet(paths["item_profile"])
    assert profile.columns == ["item_id", "restaurant_id", "category", "price", "event_timestamp", "created_timestamp"]
    assert profile.schema["event_timestamp"] == pl.Datetime("us", "UTC")


# ---------------------------------------------------------------- position debiasing

def positioned(rows: list[tuple]) -> pl.LazyFrame:
    """rows: (ts, request_id, position, propensity, surface, restaurant_id, item_id, clicked); n = 2."""
    cols = ["ts", "request_id", "position", "propensity", "surface", "restaurant_id", "item_id", "clicked"]
    frame = pl.DataFrame([dict(zip(cols, r)) for r in rows], schema={
        "ts": pl.Datetime("us", "UTC"), "request_id": pl.Int64, "position": pl.Int16, "propensity": pl.Float64,
        "surface": pl.Utf8, "restaurant_id": pl.Int64, "item_id": pl.Int64, "clicked": pl.Boolean,
    })
    return frame.with_columns(pl.lit(1, pl.Int64).alias("user_id"), pl.lit(False).alias("ordered"),
                              pl.lit(2, pl.Int32).alias("n_candidates")).lazy()


EXPLORED, GREEDY = 0.1, 0.9  # with n = 2: 0.2 <= 1 (a random permutation) and 1.8 > 1 (the greedy list)
# Day 0, explored: position 0 gets 2 clicks in 4, position 1 gets 1 in 4 -> exam(1) = 0.25 / 0.5 = 0.5.
# The greedy request r4 (a click at position 1 only) must not enter the curve (it would make it flat).
# Day 1, explored r5 (a click at position 1 only): pos 0 2/5, pos 1 2/5 -> exam(1) = 1.0 from day 1 on.
POSITIONED = [
    (day(0), 0, 0, EXPLORED, "menu", 10, 100, True), (day(0), 0, 1, EXPLORED, "menu", 10, 101, False),
    (day(0), 1, 0, EXPLORED, "menu", 10, 101, True), (day(0), 1, 1, EXPLORED, "menu", 10, 100, True),
    (day(0), 2, 0, EXPLORED, "menu", 10, 100, False), (day(0), 2, 1, EXPLORED, "menu", 10, 101, False),
    (day(0), 3, 0, EXPLORED, "menu", 10, 101, False), (day(0), 3, 1, EXPLORED, "menu", 10, 100, False),
    (day(0), 4, 0, GREEDY, "menu", 10, 100, False), (day(0), 4, 1, GREEDY, "menu", 10, 101, True),
    (day(0), 6, 3, GREEDY, "feed", 10, None, False),
    (day(1), 5, 0, EXPLORED, "menu", 10, 100, False), (day(1), 5, 1, EXPLORED, "menu", 10, 101, True),
]


def test_examination_curve_uses_explored_requests_up_to_the_end_of_each_day():
    curve = stats.examination_curve(stats._events(positioned(POSITIONED))).collect()
    got = {(r["surface"], r["day"] - curve["day"].min(), r["position"]): r["exam"] for r in curve.to_dicts()}
    assert got == {("menu", 0, 0): 1.0, ("menu", 0, 1): pytest.approx(0.5),
                   ("menu", 1, 0): 1.0, ("menu", 1, 1): pytest.approx(1.0)}


def test_debiased_ctr_is_clicks_per_expected_examination_smoothed_toward_the_global_rate():
    items = stats.entity_stats(positioned(POSITIONED), ITEMS, "item", (1, 7), K).collect()
    # Day 0: item 100 shown at 0, 1, 0, 1, 0 -> exam 1 + .5 + 1 + .5 + 1 = 4.0, 2 clicks;
    #        item 101 at 1, 0, 1, 0, 1 -> 3.5, 2 clicks. Global: 4 clicks per 7.5 examinations.
    i100 = snapshot(items, "item_id", 100, D0 + timedelta(days=1))
    i101 = snapshot(items, "item_id", 101, D0 + timedelta(days=1))
    q = 4 / 7.5
    assert (i100["menu_exam_1d"], i101["menu_exam_1d"]) == (pytest.approx(4.0), pytest.approx(3.5))
    assert i100["menu_dctr_1d"] == pytest.approx((2 + K * q) / (4.0 + K))
    assert i101["menu_dctr_1d"] == pytest.approx((2 + K * q) / (3.5 + K))
    assert i100["menu_ctr_1d"] == pytest.approx((2 + K * 4 / 10) / (5 + K))  # the raw CTR is unchanged
    # Day 1's impressions are weighted by day 1's curve (exam(1) = 1); day 0's keep day 0's.
    nxt = snapshot(items, "item_id", 101, D0 + timedelta(days=2))
    assert nxt["menu_exam_1d"] == pytest.approx(1.0) and nxt["menu_exam_7d"] == pytest.approx(4.5)
    assert nxt["menu_dctr_7d"] == pytest.approx((3 + K * 5 / 9.5) / (4.5 + K))


def test_a_surface_without_explored_requests_is_not_corrected():
    users = stats.entity_stats(positioned(POSITIONED), ITEMS, "user", (1, 28), K).collect()
    u = snapshot(users, "user_id", 1, D0 + timedelta(days=1))
    assert u["feed_exam_1d"] == 1.0 and u["feed_impressions_1d"] == 1  # position 3, but no curve: exam 1


# ---------------------------------------------------------------- user x cuisine affinity

RESTAURANTS = pl.DataFrame({"restaurant_id": [10, 11, 12], "cuisine": ["thai", "pizza", "unknown"]}).lazy()


def test_cuisine_shares_are_smoothed_click_shares_aligned_with_cuisines():
    log = impressions([
        (day(0), 1, "feed", 10, None, True, False),
        (day(0), 1, "menu", 10, 100, True, False),
        (day(0), 1, "feed", 11, None, True, False),
        (day(0), 2, "feed", 11, None, True, False),
        (day(0), 2, "feed", 10, None, False, False),
        (day(0), 3, "feed", 12, None, False, False),
    ])
    out = stats.user_cuisine_affinity(log, RESTAURANTS).collect()
    a = stats.AFFINITY_PRIOR_CLICKS
    thai, pizza = CUISINES.index("thai"), CUISINES.index("pizza")
    g = {thai: 0.5, pizza: 0.5}  # global: 2 thai clicks, 2 pizza clicks
    expect = {1: {thai: 2, pizza: 1}, 2: {pizza: 1}, 3: {}}
    for user, clicks in expect.items():
        row = snapshot(out, "user_id", user, D0 + timedelta(days=1))
        n = sum(clicks.values())
        assert row["clicks_28d"] == n
        want = [(clicks.get(j, 0) + a * g.get(j, 0.0)) / (n + a) for j in range(len(CUISINES))]
        assert row["shares"] == pytest.approx(want, rel=1e-6), user
        assert sum(row["shares"]) == pytest.approx(1.0, rel=1e-6)
    assert out.schema["shares"] == pl.List(pl.Float32)


def test_cuisine_shares_use_only_clicks_before_the_snapshot_and_fall_back_to_uniform():
    t = D0 + timedelta(days=1)
    log = impressions([(day(0), 1, "feed", 10, None, False, False), (t, 1, "feed", 11, None, True, False)])
    out = stats.user_cuisine_affinity(log, RESTAURANTS).collect()
    at_t = snapshot(out, "user_id", 1, t)  # the click at exactly t belongs to the next snapshot
    assert at_t["clicks_28d"] == 0 and at_t["shares"] == pytest.approx([1 / len(CUISINES)] * len(CUISINES))
    nxt = snapshot(out, "user_id", 1, t + timedelta(days=1))
    assert nxt["clicks_28d"] == 1 and nxt["shares"][CUISINES.index("pizza")] == pytest.approx((1 + 3.0) / 4)
