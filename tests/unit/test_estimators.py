"""Estimators on hand-computed cases, log checks, baselines and a small statistical check."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from recsys.errors import DataContractError, NotFoundError
from recsys.evaluation.bootstrap import _TABLE, _THRESHOLDS, poisson_weights
from recsys.evaluation.columns import ENTITY, EvalOptions
from recsys.evaluation.compare import compare, exposure, gini
from recsys.evaluation.estimators import estimate_all
from recsys.evaluation.logs import check_log, check_policy_lists, join_policy, load_log
from recsys.evaluation.policies import resolve_policy
from recsys.evaluation.synthetic import synthetic_log

T0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
POINT = EvalOptions(n_bootstrap=0, min_matched=1, min_ess=1)


def make_log(rows: list[tuple], *, as_str: bool = False) -> pl.DataFrame:
    """rows: (request_id, position, restaurant_id, propensity, clicked)."""
    req, pos, ent, prop, clk = (list(c) for c in zip(*rows))
    if as_str:
        req, ent = [f"r{r}" for r in req], [f"e{e}" for e in ent]
    return pl.DataFrame({
        "request_id": req, "ts": [T0] * len(rows), "user_id": [1] * len(rows), "surface": ["feed"] * len(rows),
        "restaurant_id": ent, "item_id": pl.Series([None] * len(rows), dtype=pl.Int64), "position": pos,
        "propensity": prop, "policy": ["log"] * len(rows), "clicked": [bool(c) for c in clk],
        "ordered": [False] * len(rows),
    })


def make_lists(rows: list[tuple], *, as_str: bool = False) -> pl.DataFrame:
    req, pos, ent = (list(c) for c in zip(*rows))
    if as_str:
        req, ent = [f"r{r}" for r in req], [f"e{e}" for e in ent]
    return pl.DataFrame({"request_id": req, "position": pos, "restaurant_id": ent})


def events_for(log: pl.DataFrame, lists: pl.DataFrame) -> pl.DataFrame:
    checked = check_log(log).with_columns(pl.col("restaurant_id").alias(ENTITY))
    return join_policy(checked, check_policy_lists(lists, surface="feed"), surface="feed")


# Two requests, two entries A=1, B=2, uniform logging over the 2 orders (propensity 1/2).
UNIFORM_LOG = [(1, 0, 1, 0.5, 1), (1, 1, 2, 0.5, 0), (2, 0, 2, 0.5, 0), (2, 1, 1, 0.5, 1)]
ALWAYS_AB = [(1, 0, 1), (1, 1, 2), (2, 0, 1), (2, 1, 2)]

# A slate: entries A=1, B=2, C=3; non-uniform propensities per position.
SLATE_LOG = [(1, 0, 1, 0.8, 1), (1, 1, 2, 0.8, 0),
             (2, 0, 1, 0.8, 0), (2, 1, 3, 0.1, 1),
             (3, 0, 3, 0.1, 1), (3, 1, 1, 0.1, 0)]
SLATE_POLICY = [(1, 0, 1), (1, 1, 3), (2, 0, 1), (2, 1, 3), (3, 0, 3), (3, 1, 1)]


def test_uniform_logging_deterministic_policy_matches_hand_computation():
    est = estimate_all(events_for(make_log(UNIFORM_LOG), make_lists(ALWAYS_AB)), POINT)
    # Request 1 matches both slots (w = 2), request 2 none.
    assert est["ips"].positions[0].estimate == pytest.approx(2 * 1 / 2)  # (2*1 + 0) / 2 slots
    assert est["ips"].positions[1].estimate == pytest.approx(0.0)
    assert est["ips"].overall.estimate == pytest.approx(0.5)
    assert est["snips"].positions[0].estimate == pytest.approx(1.0)
    assert est["replay"].overall.estimate == pytest.approx(0.5)
    assert est["naive"].overall.estimate == pytest.approx(0.5)
    assert est["ips"].overall.matched == 2
    assert est["ips"].positions[0].ess == pytest.approx(1.0)  # (2)^2 / 2^2
    assert est["ips"].overall.ess == pytest.approx(2.0)  # (4)^2 / 8


def test_slate_estimates_weight_each_position_by_its_own_propensity():
    est = estimate_all(events_for(make_log(SLATE_LOG), make_lists(SLATE_POLICY)), POINT)
    ips, snips, replay = est["ips"], est["snips"], est["replay"]
    # position 0: matches r1 (w=1.25, y=1), r2 (w=1.25, y=0), r3 (w=10, y=1)
    assert ips.positions[0].estimate == pytest.approx((1.25 + 10) / 3)
    assert snips.positions[0].estimate == pytest.approx(11.25 / 12.5)
    assert replay.positions[0].estimate == pytest.approx(2 / 3)
    # position 1: matches r2 (w=10, y=1), r3 (w=10, y=0)
    assert ips.positions[1].estimate == pytest.approx(10 / 3)
    assert snips.positions[1].estimate == pytest.approx(0.5)
    assert ips.overall.estimate == pytest.approx(21.25 / 6)
    assert snips.overall.estimate == pytest.approx((3 * 0.9 + 3 * 0.5) / 6)
    assert replay.overall.estimate == pytest.approx((3 * 2 / 3 + 3 * 0.5) / 6)
    assert ips.positions[0].ess == pytest.approx(12.5 ** 2 / (2 * 1.25 ** 2 + 100))


def test_weight_clipping_caps_each_weight():
    ev = events_for(make_log(SLATE_LOG), make_lists(SLATE_POLICY))
    est = estimate_all(ev, EvalOptions(n_bootstrap=0, clip=2.0))
    assert est["ips"].positions[0].estimate == pytest.approx((1.25 + 2.0) / 3)


def test_string_and_integer_ids_give_the_same_estimates():
    as_int = estimate_all(events_for(make_log(SLATE_LOG), make_lists(SLATE_POLICY)), POINT)
    as_str = estimate_all(events_for(make_log(SLATE_LOG, as_str=True), make_lists(SLATE_POLICY, as_str=True)), POINT)
    for name in as_int:
        assert as_str[name].overall.estimate == pytest.approx(as_int[name].overall.estimate, nan_ok=True)


def test_mismatched_id_types_are_a_clear_error():
    with pytest.raises(DataContractError, match="id types differ"):
        events_for(make_log(SLATE_LOG, as_str=True), make_lists(SLATE_POLICY))


def test_small_support_sets_the_warning():
    est = estimate_all(events_for(make_log(SLATE_LOG), make_lists(SLATE_POLICY)), EvalOptions(n_bootstrap=0))
    assert est["ips"].overall.warning  # 4 matched events < 100


@pytest.mark.parametrize("change, pattern", [
    (lambda f: f.drop("propensity"), r"missing required column\(s\) \['propensity'\]"),
    (lambda f: f.with_columns(propensity=pl.when(pl.col("request_id") == 2).then(0.0).otherwise(pl.col("propensity"))),
     r"propensity outside \(0, 1\]: row 2 \(request_id=2"),
    (lambda f: f.with_columns(propensity=pl.when(pl.int_range(pl.len()) == 5).then(1.5).otherwise(pl.col("propensity"))),
     r"propensity outside \(0, 1\]: row 5 \(request_id=3, position=1"),
    (lambda f: f.with_columns(position=pl.when(pl.int_range(pl.len()) == 3).then(0).otherwise(pl.col("position"))),
     r"repeat a \(request_id, position\) pair: row 3 \(request_id=2, position=0"),
    (lambda f: f.with_columns(position=pl.when(pl.int_range(pl.len()) == 5).then(2).otherwise(pl.col("position"))),
     r"gap.*row 5 \(request_id=3, position=2, previous_position=0"),
    (lambda f: f.with_columns(ordered=pl.int_range(pl.len()) == 1),
     r"ordered without clicked: row 1 \(request_id=1, position=1"),
])
def test_bad_logs_raise_naming_the_rows(change, pattern):
    with pytest.raises(DataContractError, match=pattern):
        check_log(change(make_log(SLATE_LOG)))


def test_shuffled_log_is_put_in_canonical_order():
    log = make_log(SLATE_LOG)
    shuffled = log.sample(fraction=1.0, shuffle=True, seed=3)
    a = estimate_all(events_for(log, make_lists(SLATE_POLICY)), POINT)
    b = estimate_all(events_for(shuffled, make_lists(SLATE_POLICY)), POINT)
    assert b["snips"].overall.estimate == pytest.approx(a["snips"].overall.estimate)


def test_duplicate_policy_entries_raise():
    lists = make_lists(SLATE_POLICY + [(1, 0, 2)])
    with pytest.raises(DataContractError, match=r"repeat a \(request_id, position\) pair: row 0 \(request_id=1"):
        events_for(make_log(SLATE_LOG), lists)


def _synthetic(tmp_path, **kw):
    s = synthetic_log(**kw)
    path = tmp_path / "log.parquet"
    s.log.write_parquet(path)
    return s, load_log(path)


def test_logged_policy_estimates_equal_the_naive_ctr(tmp_path):
    _, log = _synthetic(tmp_path, n_requests=400, seed=1)
    ev = join_policy(log, resolve_policy("logged", log, surface="feed"), surface="feed")
    est = estimate_all(ev, EvalOptions(n_bootstrap=0))
    naive = log["clicked"].mean()
    for name in ("naive", "replay", "ips", "snips", "dr"):
        assert est[name].overall.estimate == pytest.approx(naive, abs=1e-12), name


@pytest.mark.parametrize("name", ["random", "popularity"])
def test_baselines_reorder_each_requests_logged_entries(tmp_path, name):
    _, log = _synthetic(tmp_path, n_requests=300, seed=2)
    lists = resolve_policy(name, log, surface="feed", seed=5)
    key = ["request_id", "position"]
    assert lists.select(key).sort(key).equals(log.select(key).sort(key))
    shown = log.group_by("request_id").agg(pl.col("entity").sort()).sort("request_id")
    ranked = lists.group_by("request_id").agg(pl.col("policy_entity").sort()).sort("request_id")
    assert shown["entity"].to_list() == ranked["policy_entity"].to_list()


def test_popularity_ranks_by_click_count(tmp_path):
    _, log = _synthetic(tmp_path, n_requests=300, seed=2)
    lists = resolve_policy("popularity", log, surface="feed")
    clicks = log.group_by("entity").agg(pl.col("clicked").sum().alias("c"))
    top = lists.join(clicks, left_on="policy_entity", right_on="entity").sort("request_id", "position")
    diffs = top.group_by("request_id").agg(pl.col("c").diff().max().alias("up"))
    assert (diffs["up"].fill_null(0) <= 0).all()


def test_unknown_policy_name_is_a_clear_error(tmp_path):
    _, log = _synthetic(tmp_path, n_requests=20)
    with pytest.raises(NotFoundError, match="not a known policy"):
        resolve_policy("nope", log, surface="feed")


def test_paired_lift_of_a_policy_against_itself_is_exactly_zero(tmp_path):
    _, log = _synthetic(tmp_path, n_requests=500, seed=4)
    ev = join_policy(log, resolve_policy("popularity", log, surface="feed"), surface="feed")
    res = compare(ev, ev.clone(), EvalOptions(n_bootstrap=200))
    for lift in res.lifts.values():
        assert (lift.lift, lift.low, lift.high) == (0.0, 0.0, 0.0)
        assert (lift.difference, lift.difference_low, lift.difference_high) == (0.0, 0.0, 0.0)


def test_poisson_weights_have_mean_and_variance_one():
    w = poisson_weights(np.random.default_rng(0), 200, 5000)
    assert w.mean() == pytest.approx(1.0, abs=0.01) and w.var() == pytest.approx(1.0, abs=0.02)
    assert _TABLE.min() == 0 and _TABLE.max() >= 6


def test_poisson_threshold_counts_equal_the_quantile_table_at_every_level():
    levels = np.arange(1 << 16)
    counts = sum((levels >= t).astype(np.int64) for t in _THRESHOLDS)
    assert np.array_equal(counts, _TABLE.astype(np.int64))


def test_gini_and_exposure():
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 8])) == pytest.approx(0.75)
    ev = events_for(make_log(SLATE_LOG), make_lists(SLATE_POLICY))
    out = exposure(ev, surface="feed", catalog=pl.Series([1, 2, 3, 4]))
    assert out["coverage"] == pytest.approx(2 / 4)  # policy shows 1 and 3


def test_ips_and_snips_intervals_cover_the_truth_and_naive_misses(tmp_path):
    """Over 10 seeded logs the 95% intervals of IPS, SNIPS and DR cover the target's true CTR in
    at least 8; the naive logged CTR (a negative control) covers it in at most 2."""
    covered = {"ips": 0, "snips": 0, "dr": 0, "naive": 0}
    for seed in range(10):
        s, log = _synthetic(tmp_path, n_requests=6_000, slots=5, epsilon=0.3, seed=100 + seed)
        ev = join_policy(log, check_policy_lists(s.target_lists, surface="feed"), surface="feed")
        est = estimate_all(ev, EvalOptions(n_bootstrap=200, seed=seed))
        for name in covered:
            covered[name] += est[name].overall.low <= s.true_ctr <= est[name].overall.high
    assert min(covered["ips"], covered["snips"], covered["dr"]) >= 8, covered
    assert covered["naive"] <= 2, covered


def test_reward_model_integer_id_path_equals_the_general_path():
    """Integer ids take a bincount path; the same log with string ids takes the polars joins:
    both must predict the same q at every slot (nulls: a target with no entry)."""
    from recsys.evaluation.columns import ENTITY, POLICY_ENTITY, POSITION, REQ_IDX, EvalOptions
    from recsys.evaluation.estimators import reward_model

    rng = np.random.default_rng(3)
    n = 3000
    entity = rng.integers(0, 40, n)
    target = pl.Series(np.where(rng.random(n) < 0.1, None, rng.integers(0, 50, n)).tolist(), dtype=pl.Int64)
    ints = pl.DataFrame({REQ_IDX: np.arange(n) // 6, POSITION: np.arange(n) % 6, ENTITY: entity,
                         POLICY_ENTITY: target, "clicked": rng.random(n) < 0.2})
    strings = ints.with_columns(pl.col(ENTITY).cast(pl.Utf8), pl.col(POLICY_ENTITY).cast(pl.Utf8))
    np.testing.assert_allclose(reward_model(ints, EvalOptions()), reward_model(strings, EvalOptions()),
                               rtol=1e-12, atol=1e-15)


def test_a_log_directory_whose_files_differ_in_optional_columns_loads_as_one(tmp_path):
    # The sink added the `arm` column later: days landed before it lack the column.
    before, after = make_log(UNIFORM_LOG[:2]), make_log(UNIFORM_LOG[2:]).with_columns(pl.lit("control").alias("arm"))
    (tmp_path / "date=2026-10-01").mkdir()
    (tmp_path / "date=2026-10-02").mkdir()
    before.write_parquet(tmp_path / "date=2026-10-01/part-0.parquet")
    after.write_parquet(tmp_path / "date=2026-10-02/part-0.parquet")
    log = load_log(tmp_path, surface="feed")
    assert log.height == 4
    estimates = estimate_all(events_for(log, make_lists(ALWAYS_AB)), POINT)
    assert estimates["ips"].overall.estimate == pytest.approx(estimate_all(
        events_for(make_log(UNIFORM_LOG), make_lists(ALWAYS_AB)), POINT)["ips"].overall.estimate)
