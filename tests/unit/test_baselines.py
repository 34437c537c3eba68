"""Baselines run the same model contract as ALS, and rank as their definitions say."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.training.baselines import (
    CellPopularity,
    Popularity,
    RandomScorer,
    RestaurantPopularity,
)
from recsys.training.interactions import IdMap, InteractionMatrix
from tests.unit.test_als import ENTITIES, USERS, ModelContractTests


class TestPopularityContract(ModelContractTests):
    def make_model(self):
        return Popularity()


class TestRestaurantPopularityContract(ModelContractTests):
    def make_model(self):
        return RestaurantPopularity(ENTITIES, ENTITIES // 10)


class TestCellPopularityContract(ModelContractTests):
    def make_model(self):
        return CellPopularity(USERS, USERS % 3)


class TestRandomContract(ModelContractTests):
    needs_fit = False

    def make_model(self):
        return RandomScorer(seed=5)


def _matrix(dense, users=(1, 2, 3), entities=(10, 11, 12)) -> InteractionMatrix:
    return InteractionMatrix(sp.csr_matrix(np.asarray(dense, np.float32)), IdMap(np.array(users)),
                             IdMap(np.array(entities)), "feed")


def test_popularity_ranks_by_total_confidence_and_unknown_entities_last():
    model = Popularity().fit(_matrix([[1, 0, 0], [1, 2, 0], [1, 0, 0]]))
    scores = model.score(np.array([1, 1, 1, 1]), np.array([10, 11, 12, 99]))
    np.testing.assert_array_equal(scores, [3, 2, 0, 0])


def test_restaurant_popularity_is_the_items_share_of_its_restaurant():
    # items 10, 11 in restaurant 0; item 12 alone in restaurant 1
    model = RestaurantPopularity([10, 11, 12], [0, 0, 1], prior=1.0).fit(_matrix([[3, 1, 0], [0, 0, 0], [0, 0, 0]]))
    np.testing.assert_allclose(model.score(np.array([1, 1, 1]), np.array([10, 11, 12])), [4 / 6, 2 / 6, 1.0])


def test_cell_popularity_prefers_what_the_users_cell_clicked():
    # users 1, 2 live in cell 0 and click 10; user 3 in cell 1 clicks 12 (more, globally)
    model = CellPopularity([1, 2, 3], [0, 0, 1], backoff=1.0).fit(_matrix([[1, 0, 0], [1, 0, 0], [0, 0, 5]]))
    in_cell0 = model.score(np.array([1, 1]), np.array([10, 12]))
    in_cell1 = model.score(np.array([3, 3]), np.array([10, 12]))
    assert in_cell0[0] > in_cell0[1] and in_cell1[1] > in_cell1[0]


def test_random_scores_are_fixed_per_pair_and_seed_and_roughly_uniform():
    users, entities = np.repeat(np.arange(200), 50), np.tile(np.arange(50), 200)
    a = RandomScorer(seed=1).score(users, entities)
    assert np.array_equal(a, RandomScorer(seed=1).score(users, entities))
    assert not np.array_equal(a, RandomScorer(seed=2).score(users, entities))
    assert 0.0 <= a.min() and a.max() < 1.0 and abs(a.mean() - 0.5) < 0.01


def test_random_scorer_accepts_string_ids():
    scores = RandomScorer(seed=1).score(np.array(["u1", "u2"]), np.array(["i1", "i1"]))
    assert scores.shape == (2,) and scores[0] != scores[1]
