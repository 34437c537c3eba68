"""The menu scorer (score in parts) equals the ranker's score over the full design."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.ranking.ranker import ALS_SCORE, HOUR, Feature, LinearRanker
from recsys.serving.item_features import ItemFeatureTable
from recsys.serving.scoring import CANDIDATE, CONTEXT, ITEM, ITEM_HOUR, MenuScorer, part_of
from recsys.serving.stages import CONTEXT_VIEWS, DAY_OF_WEEK, PRICE_VS_BASKET

CTR, CAT, PRICE = "item_stats__menu_ctr_7d", "item_profile__category", "item_profile__price"
USER_CTR, CUISINE = "user_stats__menu_dctr_28d", "restaurant_profile__cuisine"

FEATURES = [
    Feature("ctr:logit", "item_stats", "numeric", CTR, "logit", 0.05),
    Feature("item_stats:is_missing", "item_stats", "missing", CTR),
    Feature("price:log", "item_profile", "numeric", PRICE, "log", 10.0),
    Feature("cat=main", "item_profile", "onehot", CAT, value="main"),
    Feature("cat=main&hour[0,12)", "item_profile", "onehot_x_hour", CAT, value="main", hours=(0, 12)),
    Feature("cat=main&hour[12,24)", "item_profile", "onehot_x_hour", CAT, value="main", hours=(12, 24)),
    Feature("cat=side&hour[6,18)", "item_profile", "onehot_x_hour", CAT, value="side", hours=(6, 18)),
    Feature("hour:sin", "request_time", "numeric", HOUR, "sin_hour"),
    Feature("dow", "request_time", "numeric", DAY_OF_WEEK),
    Feature("user_ctr:logit", "user_stats", "numeric", USER_CTR, "logit", 0.1),
    Feature("user_stats:is_missing", "user_stats", "missing", USER_CTR),
    Feature("cuisine=thai", "restaurant_profile", "onehot", CUISINE, value="thai"),
    Feature("als", "als", "numeric", ALS_SCORE),
    Feature("als:is_missing", "als", "missing", ALS_SCORE),
    Feature("pvb:log", "price_vs_basket", "numeric", PRICE_VS_BASKET, "log", 1.0),
    Feature("position=1", "position", "position", "position", value=1),
    Feature("position=0", "position", "position", "position", value=0),  # on at serving: a constant
]


def _ranker(seed: int = 0) -> LinearRanker:
    rng = np.random.default_rng(seed)
    d = len(FEATURES)
    return LinearRanker(FEATURES, rng.normal(size=d), rng.uniform(0.5, 2.0, d), rng.normal(size=d), 0.3)


def _items(n: int, rng) -> ItemFeatureTable:
    table = ItemFeatureTable()
    table.item_ids = np.arange(0, 2 * n, 2, dtype=np.int64)  # even ids known, odd unknown
    ctr = rng.uniform(0.01, 0.3, n)
    ctr[rng.random(n) < 0.2] = np.nan
    table.values = {CTR: ctr, PRICE: rng.uniform(2, 30, n),
                    CAT: np.array(rng.choice(["main", "side", "drink", None], n), dtype=object)}
    return table


def test_each_feature_is_assigned_the_part_its_columns_imply():
    parts = [part_of(f, CONTEXT_VIEWS, (HOUR, DAY_OF_WEEK)) for f in FEATURES]
    assert parts == [ITEM, ITEM, ITEM, ITEM, ITEM_HOUR, ITEM_HOUR, ITEM_HOUR, CONTEXT, CONTEXT, CONTEXT, CONTEXT,
                     CONTEXT, CANDIDATE, CANDIDATE, CANDIDATE, CONTEXT, CONTEXT]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_in_parts_equal_the_full_design(seed):
    rng = np.random.default_rng(seed)
    ranker, items = _ranker(seed), _items(50, rng)
    scorer = MenuScorer(ranker, items, CONTEXT_VIEWS, (HOUR, DAY_OF_WEEK), row_columns=(PRICE,))
    for _ in range(30):
        ids = rng.choice(100, size=20, replace=False).astype(np.int64)  # known and unknown items
        hour = int(rng.integers(24))
        context = {HOUR: float(hour), DAY_OF_WEEK: float(rng.integers(7)),
                   USER_CTR: None if rng.random() < 0.3 else float(rng.uniform(0.01, 0.5)),
                   CUISINE: rng.choice(["thai", "pizza", None])}
        als = rng.normal(size=20)
        als[rng.random(20) < 0.2] = np.nan
        pvb = rng.uniform(0.2, 3.0, 20)
        full = {**items.rows(ids), **{k: np.full(20, v, dtype=object if isinstance(v, str) or v is None else float)
                                      for k, v in context.items()},
                ALS_SCORE: als, PRICE_VS_BASKET: pvb, "position": np.full(20, 3.0)}
        asked = []

        def candidate_rows(columns, prepared):
            asked.append(columns)
            np.testing.assert_array_equal(prepared.value(PRICE), items.rows(ids)[PRICE])
            return {ALS_SCORE: als, PRICE_VS_BASKET: pvb}

        got = scorer.score(scorer.prepare(ids), context, hour, candidate_rows)
        np.testing.assert_allclose(got, ranker.score_rows(full, serving=True), rtol=0, atol=1e-9)
        assert asked == [(ALS_SCORE, PRICE_VS_BASKET)]


def test_an_empty_item_table_scores_every_item_as_unknown():
    ranker = _ranker()
    scorer = MenuScorer(ranker, ItemFeatureTable(), CONTEXT_VIEWS, (HOUR, DAY_OF_WEEK))
    ids = np.array([3, 4], dtype=np.int64)
    rows = {ALS_SCORE: np.array([0.1, 0.2]), PRICE_VS_BASKET: np.array([1.0, 2.0])}
    got = scorer.score(scorer.prepare(ids), {HOUR: 5.0}, 5, lambda columns, _: rows)
    np.testing.assert_allclose(got, ranker.score_rows({**rows, HOUR: np.full(2, 5.0)}), atol=1e-9)
