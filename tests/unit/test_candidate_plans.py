"""The per-version cache of candidate plans: a plan equals the lookups it replaces, whether it
was cached or not, and the cache keeps at most its capacity (oldest out first)."""

from __future__ import annotations

import numpy as np

from recsys.ranking.index import ItemIndex
from recsys.ranking.ranker import HOUR
from recsys.serving.scoring import MenuScorer
from recsys.serving.stages import CONTEXT_VIEWS, DAY_OF_WEEK, CandidatePlans
from tests.unit.test_scoring import _items, _ranker


def _world():
    rng = np.random.default_rng(5)
    ids = np.arange(0, 300, 3, dtype=np.int64)  # multiples of 3 are indexed
    index = ItemIndex.build(rng.standard_normal((len(ids), 8)).astype(np.float32), ids)
    scorer = MenuScorer(_ranker(), _items(50, rng), CONTEXT_VIEWS, (HOUR, DAY_OF_WEEK))
    lists = [rng.choice(300, size=40, replace=False).astype(np.int64) for _ in range(5)]
    return index, scorer, lists


def test_a_plan_equals_the_index_and_table_lookups_cached_or_not():
    index, scorer, lists = _world()
    plans = CandidatePlans(index, scorer, capacity=8)
    for ids in lists + lists:  # the second pass is served from the cache
        plan = plans.get(ids)
        np.testing.assert_array_equal(plan.positions, index.positions(ids))
        np.testing.assert_array_equal(plan.prepared.rows, scorer.rows_of(ids))
        np.testing.assert_array_equal(plan.prepared.base, scorer.prepare(ids).base)
        assert (plan.positions[ids % 3 != 0] == -1).all()
    assert len(plans) == len(lists)
    assert plans.get(lists[0].copy()) is plans.get(lists[0])  # keyed by the ids, not the array


def test_the_cache_keeps_its_capacity_oldest_out_first_and_zero_keeps_none():
    index, scorer, lists = _world()
    plans = CandidatePlans(index, None, capacity=2)
    first = plans.get(lists[0])
    plans.get(lists[1])
    plans.get(lists[2])
    assert len(plans) == 2 and plans.get(lists[2]).prepared is None
    assert plans.get(lists[0]) is not first  # evicted, computed again
    none = CandidatePlans(index, scorer, capacity=0)
    none.get(lists[0])
    assert len(none) == 0
