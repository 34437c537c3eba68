"""recall@k and NDCG@k on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.training.metrics import ndcg_at_k, recall_at_k

# user 0: relevant {1, 3}; user 1: relevant {0}; user 2: nothing relevant (left out of the means)
RELEVANT = sp.csr_matrix(np.array([[0, 1, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], np.float32))
RANKED = np.array([[3, 0, 1], [2, 4, 0], [1, 2, 3]])


def test_recall_counts_hits_over_relevant_per_user():
    assert recall_at_k(RANKED, RELEVANT, k=1, per_user=True).tolist() == [0.5, 0.0]
    assert recall_at_k(RANKED, RELEVANT, k=3, per_user=True).tolist() == [1.0, 1.0]
    assert recall_at_k(RANKED, RELEVANT, k=2) == pytest.approx((0.5 + 0.0) / 2)


def test_ndcg_discounts_by_log2_of_the_rank():
    # user 0: hits at ranks 1 and 3 -> (1 + 1/log2 4) / (1 + 1/log2 3); user 1: hit at rank 3 -> (1/2) / 1
    expected_u0 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    got = ndcg_at_k(RANKED, RELEVANT, k=3, per_user=True)
    np.testing.assert_allclose(got, [expected_u0, 0.5])
    assert ndcg_at_k(RANKED, RELEVANT, k=3) == pytest.approx((expected_u0 + 0.5) / 2)


def test_perfect_ranking_scores_one_and_empty_slots_score_nothing():
    ranked = np.array([[1, 3, -1], [0, -1, -1], [-1, -1, -1]])
    assert ndcg_at_k(ranked, RELEVANT) == pytest.approx(1.0)
    assert recall_at_k(ranked, RELEVANT) == pytest.approx(1.0)
    assert recall_at_k(np.full((3, 3), -1), RELEVANT) == 0.0


def test_ideal_dcg_is_capped_at_k():
    relevant = sp.csr_matrix(np.ones((1, 5), np.float32))
    assert ndcg_at_k(np.array([[0, 1]]), relevant) == pytest.approx(1.0)
    assert recall_at_k(np.array([[0, 1]]), relevant) == pytest.approx(2 / 5)


def test_ranked_rows_must_match_users():
    from recsys.training.errors import TrainingDataError

    with pytest.raises(TrainingDataError, match="ranked"):
        recall_at_k(RANKED[:2], RELEVANT)
