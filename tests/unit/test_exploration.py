"""The exploration scheme: exact propensities (DESIGN.md)."""

import numpy as np

from recsys.ranking.exploration import RequestDraws, explore_rank, explore_top, propensity, rank_within_groups


def test_rank_within_groups_orders_each_group_by_key_then_tiebreak():
    group = np.array([0, 0, 0, 1, 1])
    key = np.array([3.0, 1.0, 1.0, 5.0, 2.0])
    tiebreak = np.array([10, 12, 11, 0, 1])
    assert rank_within_groups(group, key, tiebreak).tolist() == [2, 1, 0, 1, 0]


def test_greedy_requests_show_the_greedy_ranking_with_propensity_one_minus_eps_plus_eps_over_n():
    group = np.array([0, 0, 0])
    ranked = explore_rank(group, np.array([0.1, 0.9, 0.5]), np.array([7, 8, 9]),
                          np.array([False]), np.random.default_rng(0))
    assert ranked.shown_rank.tolist() == [2, 0, 1]
    np.testing.assert_allclose(ranked.propensity(0.3), 0.7 + 0.3 / 3)


def test_logged_propensities_match_empirical_frequencies_of_100k_draws():
    """Draw the logging policy 100k times for one request of 6 candidates; every (entry,
    position) frequency agrees with its logged propensity within 4 standard errors."""
    n, draws, eps = 6, 100_000, 0.25
    rng = np.random.default_rng(42)
    scores = rng.random(n)
    group = np.repeat(np.arange(draws), n)
    ranked = explore_rank(group, np.tile(scores, draws), np.tile(np.arange(n), draws),
                          rng.random(draws) < eps, rng)
    entity = np.tile(np.arange(n), draws)
    counts = np.zeros((n, n))
    np.add.at(counts, (entity, ranked.shown_rank), 1)
    freq = counts / draws
    logged = np.zeros((n, n))
    logged[entity, ranked.shown_rank] = ranked.propensity(eps)  # the same value for every draw
    greedy_rank = ranked.greedy_rank[:n]
    expected = np.full((n, n), eps / n)
    expected[np.arange(n), greedy_rank] += 1 - eps
    np.testing.assert_allclose(logged[counts > 0], expected[counts > 0])
    se = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(freq - expected) < 4 * se + 1e-12)


def test_propensity_is_eps_over_n_off_the_greedy_position():
    p = propensity(np.array([0, 1]), np.array([1, 1]), np.array([4, 4]), 0.2)
    np.testing.assert_allclose(p, [0.05, 0.85])


def test_fast_ranking_path_equals_lexsort_on_random_ragged_groups():
    rng = np.random.default_rng(1)
    for trial in range(200):
        sizes = rng.integers(1, 8, rng.integers(1, 20))
        group = np.repeat(np.arange(len(sizes)), sizes)
        key = rng.integers(0, 3, len(group)).astype(float)  # many ties
        tiebreak = rng.integers(0, 5, len(group)) if trial % 2 else np.arange(len(group))
        order = np.lexsort((tiebreak, key, group))
        expected = np.empty(len(group), dtype=np.int32)
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        expected[order] = np.arange(len(group)) - np.repeat(starts, np.diff(np.r_[starts, len(group)]))
        assert rank_within_groups(group, key, tiebreak).tolist() == expected.tolist()


def test_explore_top_shows_the_first_k_entries_of_the_scheme_with_their_propensities():
    """Serving's one-request path against the batch scheme: the greedy ranks of explore_rank, the
    permutation of the same draws when exploring, and propensity() of the resulting ranks."""
    rng = np.random.default_rng(3)
    explored_seen = set()
    for trial in range(300):
        n, k = int(rng.integers(0, 30)), int(rng.integers(1, 12))
        eps = float(rng.choice([0.0, 0.3, 1.0]))
        score = rng.integers(0, 5, n).astype(float)  # many ties: broken by ascending id
        ids = rng.permutation(1000)[:n]
        draws = RequestDraws(7, f"request-{trial}")
        greedy_rank = explore_rank(np.zeros(n, dtype=int), score, ids, np.array([False]),
                                   np.random.default_rng(0)).greedy_rank
        explored = draws.random() < eps
        shown_rank = draws.permutation(n) if explored else greedy_rank
        want = np.argsort(shown_rank, kind="stable")[:k]

        got = explore_top(score, ids, eps, RequestDraws(7, f"request-{trial}"), k)
        assert got.explored == explored
        assert got.index.tolist() == want.tolist()
        assert got.greedy_rank.tolist() == greedy_rank[want].tolist()
        np.testing.assert_allclose(got.propensity,
                                   propensity(greedy_rank, shown_rank, np.full(n, n), eps)[want])
        explored_seen.add(explored)
    assert explored_seen == {True, False}
