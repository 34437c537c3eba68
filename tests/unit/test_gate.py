"""The quality gate refuses, each with a readable reason, and lets a good model through."""

from datetime import datetime, timedelta, timezone

import numpy as np
import scipy.sparse as sp

from recsys.config import GateConfig
from recsys.training.gate import OVERALL, run_gate, slice_recall
from recsys.training.interactions import IdMap, InteractionMatrix

T = datetime(2026, 10, 28, tzinfo=timezone.utc)
CFG = GateConfig(tolerance=0.03, slice_tolerance=0.10, min_slice_users=30)
GOOD = {OVERALL: {"recall": 0.40, "users": 500}, "cuisine=pizza": {"recall": 0.35, "users": 120},
        "cuisine=sushi": {"recall": 0.30, "users": 80}, "new_users": {"recall": 0.20, "users": 60}}
POPULARITY = {"feed": {"recall": 0.25, "users": 500}}


def serving(metrics=GOOD, until=T):
    return {"version": "v-serving", "trained_until": until.isoformat(), "metrics": {"feed": metrics}}


def factors():
    return {"feed.user_factors": np.ones((4, 3), np.float32), "feed.item_factors": np.ones((5, 3), np.float32)}


def test_a_model_as_good_as_the_serving_one_passes():
    report = run_gate({"feed": GOOD}, POPULARITY, factors(), T, CFG, serving())
    assert report.passed, report.reasons


def test_a_nan_factor_is_refused_naming_the_matrix_and_row():
    f = factors()
    f["feed.user_factors"][2, 1] = np.nan
    report = run_gate({"feed": GOOD}, POPULARITY, f, T, CFG, serving())
    assert not report.passed
    assert report.reasons == ["numerical:feed.user_factors: 1 NaN/inf values (rows [2])"]


def test_a_model_trained_on_older_data_than_the_serving_one_is_refused():
    report = run_gate({"feed": GOOD}, POPULARITY, factors(), T - timedelta(days=1), CFG, serving())
    assert not report.passed
    assert "older data than the serving model" in report.summary()


def test_a_model_whose_recall_is_5_percent_below_the_serving_one_is_refused():
    worse = {**GOOD, OVERALL: {"recall": 0.40 * 0.95, "users": 500}}
    report = run_gate({"feed": worse}, POPULARITY, factors(), T, CFG, serving())
    assert [r.split(":")[0] for r in report.reasons] == ["no_regression"]
    assert "no_regression:feed:overall" in report.reasons[0]


def test_a_model_that_regresses_on_one_cuisine_slice_only_is_refused_naming_the_slice():
    worse = {**GOOD, "cuisine=sushi": {"recall": 0.20, "users": 80}}
    report = run_gate({"feed": worse}, POPULARITY, factors(), T, CFG, serving())
    assert len(report.reasons) == 1 and report.reasons[0].startswith("no_regression:feed:cuisine=sushi")


def test_small_slices_are_not_judged():
    worse = {**GOOD, "cuisine=sushi": {"recall": 0.0, "users": 5}}
    assert run_gate({"feed": worse}, POPULARITY, factors(), T, CFG, serving()).passed


def test_a_model_that_does_not_beat_popularity_is_refused_even_without_a_serving_model():
    weak = {OVERALL: {"recall": 0.2, "users": 500}}
    report = run_gate({"feed": weak}, POPULARITY, factors(), T, CFG, None)
    assert report.reasons == ["beats_popularity:feed: recall@10 0.2000 vs popularity 0.2500"]


class _Fixed:
    """A scorer whose score is a fixed per-entity value."""

    def __init__(self, values):
        self.values = values

    def score(self, user_ids, entity_ids):
        return np.asarray([self.values[e] for e in entity_ids], dtype=np.float32)

    def score_matrix(self, user_ids, entity_ids):
        return np.tile(self.score(None, entity_ids), (len(user_ids), 1))


def test_slice_recall_on_a_hand_computed_case():
    # users 10, 11; entities 0..3; top-2 by score is always [3, 2]
    rel = sp.csr_matrix(np.array([[0, 0, 1, 1], [1, 0, 1, 0]], dtype=np.float32))
    heldout = InteractionMatrix(rel, IdMap.from_values([10, 11]), IdMap.from_values([0, 1, 2, 3]), "feed")
    out = slice_recall(_Fixed({0: 0.0, 1: 0.1, 2: 0.5, 3: 0.9}), heldout, 2, [0, 1, 2, 3],
                       user_slices={"new_users": np.array([False, True])},
                       entity_slices={"cuisine=a": np.array([True, False, False, False])})
    assert out[OVERALL] == {"recall": (1.0 + 0.5) / 2, "users": 2}
    assert out["new_users"] == {"recall": 0.5, "users": 1}
    assert out["cuisine=a"] == {"recall": 0.0, "users": 1}
