"""The serving-side ranker: design matrix defaults, contributions, JSON artifacts, position at
serving; and the held-out ranking metrics it is judged by."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.ranking.ranker import Feature, LinearRanker, RankerError
from recsys.training.ranker_fit import default_features, request_metrics

CTR = "item_stats__menu_ctr_7d"
IMPS = "item_stats__menu_impressions_28d"

FEATURES = [
    Feature("als_score:identity", "als", "numeric", "als_score", "identity", 0.0),
    Feature("als:is_missing", "als", "missing", "als_score"),
    Feature(f"{CTR}:logit", "item_stats", "numeric", CTR, "logit", 0.12),
    Feature(f"{IMPS}:log1p", "item_stats", "numeric", IMPS, "log1p", 0.0),
    Feature("item_stats:is_missing", "item_stats", "missing", IMPS),
    Feature("item_profile__category=main", "item_profile", "onehot", "item_profile__category", value="main"),
    Feature("main&hour[18,21)", "request_time", "onehot_x_hour", "item_profile__category", value="main",
            hours=(18, 21)),
    Feature("request_time__hour_of_day:sin_hour", "request_time", "numeric", "request_time__hour_of_day",
            "sin_hour", 12.0),
    Feature("position=1", "position", "position", "position", value=1),
    Feature("position=2", "position", "position", "position", value=2),
]


def rows(**changes):
    base = {
        "als_score": [0.5, None, 0.1],
        CTR: [0.2, np.nan, 0.05],
        IMPS: np.array([10.0, np.nan, 3.0]),
        "item_profile__category": ["main", None, "dessert"],
        "request_time__hour_of_day": [19, 19, 8],
        "position": [0, 1, 5],
    }
    base.update(changes)
    return base


def ranker(seed: int = 0) -> LinearRanker:
    rng = np.random.default_rng(seed)
    d = len(FEATURES)
    return LinearRanker(FEATURES, rng.normal(size=d), rng.uniform(0.5, 2.0, d), rng.normal(size=d), 0.37,
                        {"note": "test"})


def column(name: str) -> int:
    return [f.name for f in FEATURES].index(name)


def test_null_inputs_take_the_documented_defaults_and_set_is_missing():
    X = ranker().features_from_rows(rows())
    assert X[1, column("als_score:identity")] == 0.0 and X[1, column("als:is_missing")] == 1.0
    assert X[0, column("als:is_missing")] == 0.0
    assert X[1, column(f"{CTR}:logit")] == pytest.approx(np.log(0.12 / 0.88))  # null CTR -> the prior
    assert X[1, column(f"{IMPS}:log1p")] == 0.0 and X[1, column("item_stats:is_missing")] == 1.0
    assert X[0, column(f"{IMPS}:log1p")] == pytest.approx(np.log(11.0))
    assert X[:, column("item_profile__category=main")].tolist() == [1.0, 0.0, 0.0]  # null category: no one-hot
    assert X[:, column("main&hour[18,21)")].tolist() == [1.0, 0.0, 0.0]


def test_an_absent_column_is_null_in_every_row_not_an_error():
    r = rows()
    del r[IMPS], r["als_score"]
    X = ranker().features_from_rows(r)
    assert (X[:, column("item_stats:is_missing")] == 1.0).all()
    assert (X[:, column("als:is_missing")] == 1.0).all()
    assert np.isfinite(ranker().score(X)).all()


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(RankerError, match="differ in length"):
        ranker().features_from_rows(rows(als_score=[0.1, 0.2]))


def test_position_is_fixed_at_zero_at_serving_and_read_in_training():
    r = ranker()
    serving = r.features_from_rows(rows())
    moved = r.features_from_rows(rows(position=[7, 7, 7]))
    np.testing.assert_array_equal(serving, moved)
    pos_cols = [column("position=1"), column("position=2")]
    assert (serving[:, pos_cols] == 0).all()
    training = r.features_from_rows(rows(), serving=False)
    assert training[:, pos_cols].tolist() == [[0, 0], [1, 0], [0, 1]]  # 5 falls in the last bucket


def test_training_rows_without_position_are_refused():
    r = rows()
    del r["position"]
    with pytest.raises(RankerError, match="position"):
        ranker().features_from_rows(r, serving=False)


def test_contributions_sum_to_the_score_minus_the_bias():
    r = ranker()
    X = r.features_from_rows(rows(), serving=False)
    np.testing.assert_allclose(r.contributions(X).sum(axis=1), r.score(X) - r.bias, rtol=1e-12, atol=1e-12)
    groups = r.group_contributions(X)
    np.testing.assert_allclose(sum(groups.values()), r.score(X) - r.bias, rtol=1e-12, atol=1e-12)


def test_save_then_load_gives_the_exact_model(tmp_path):
    r = ranker(seed=3)
    path = r.save(tmp_path / "ranker.json")
    back = LinearRanker.load(path)
    assert back.to_dict() == r.to_dict()
    X = r.features_from_rows(rows())
    assert np.array_equal(back.score(X), r.score(X))  # bit-identical
    assert json.loads(path.read_text())["kind"] == "linear_ranker"  # plain JSON, no pickle
    assert not list(tmp_path.glob("*.tmp"))


def test_a_corrupt_or_foreign_artifact_is_a_ranker_error(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RankerError, match="not valid JSON"):
        LinearRanker.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"kind": "als"}))
    with pytest.raises(RankerError, match="kind"):
        LinearRanker.load(tmp_path / "other.json")
    with pytest.raises(RankerError, match="not found"):
        LinearRanker.load(tmp_path / "missing.json")


def test_inconsistent_weights_or_scales_are_refused():
    d = len(FEATURES)
    with pytest.raises(RankerError, match="weights"):
        LinearRanker(FEATURES, np.zeros(d), np.ones(d), np.zeros(d - 1), 0.0)
    with pytest.raises(RankerError, match="scales"):
        LinearRanker(FEATURES, np.zeros(d), np.zeros(d), np.zeros(d), 0.0)
    with pytest.raises(RankerError, match="non-finite"):
        LinearRanker(FEATURES, np.zeros(d), np.ones(d), np.full(d, np.nan), 0.0)


def test_default_features_name_every_group_and_take_priors_from_the_training_rows():
    train = {CTR: np.array([0.1, 0.3, np.nan]), "item_stats__menu_ctr_28d": np.array([0.2, 0.2, 0.2])}
    feats = default_features(train)
    by_name = {f.name: f for f in feats}
    assert by_name[f"{CTR}:logit"].default == pytest.approx(0.2)
    assert by_name[f"{IMPS}:log1p"].default == 0.0
    assert {f.group for f in feats} >= {"als", "item_stats", "user_stats", "restaurant_stats", "item_profile",
                                        "request_time", "price_vs_basket", "position"}
    assert len({f.name for f in feats}) == len(feats)


def test_request_metrics_auc_and_ndcg_per_request():
    # request 1: the click scored highest (AUC 1, NDCG 1); request 2: the click scored lowest (AUC 0);
    # request 3 has no click and is left out.
    rid = np.array([1, 1, 1, 2, 2, 3, 3])
    score = np.array([0.9, 0.1, 0.2, 0.5, 0.1, 0.3, 0.2])
    clicked = np.array([1, 0, 0, 0, 1, 0, 0])
    m = request_metrics(score, rid, clicked)
    assert m["requests"] == 2
    assert m["auc"] == pytest.approx(0.5)
    assert m["ndcg"] == pytest.approx((1.0 + 1.0 / np.log2(3)) / 2)


def test_request_metrics_give_ties_half_credit():
    m = request_metrics(np.array([0.0, 0.0, np.nan]), np.array([1, 1, 1]), np.array([1, 0, 0]))
    assert m["auc"] == pytest.approx(0.75)  # tie with one negative (0.5), above the NaN (1)
