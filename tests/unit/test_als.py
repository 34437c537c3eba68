"""ALS model: the model contract (shared mixin), strict edges, reproducibility, artifacts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.training.als import ALSModel, check_factors, top_k
from recsys.training.errors import ModelArtifactError, ModelFitError, TrainingDataError
from recsys.training.interactions import IdMap, InteractionMatrix
from recsys.training.params import ALSParams

USERS, ENTITIES = np.arange(100, 160), np.arange(1000, 1040)


def small_matrix(seed: int = 0, density: float = 0.15) -> InteractionMatrix:
    """60 users x 40 entities with block structure (two taste groups), float32 confidences."""
    rng = np.random.default_rng(seed)
    group_u, group_e = np.arange(60) % 2, np.arange(40) % 2
    p = np.where(group_u[:, None] == group_e[None, :], 3 * density, density / 3)
    dense = (rng.random((60, 40)) < p) * rng.integers(1, 4, (60, 40))
    return InteractionMatrix(sp.csr_matrix(dense.astype(np.float32)), IdMap(USERS), IdMap(ENTITIES), "menu")


class ModelContractTests:
    """Behaviour every model (ALS and every baseline) shares. Subclasses provide ``make_model``."""

    needs_fit = True

    def make_model(self):
        raise NotImplementedError

    @pytest.fixture
    def data(self):
        return small_matrix()

    @pytest.fixture
    def fitted(self, data):
        return self.make_model().fit(data)

    def test_fit_returns_the_model(self, data):
        model = self.make_model()
        assert model.fit(data) is model

    def test_scores_are_float32_aligned_with_pairs(self, fitted):
        users, entities = USERS[[0, 1, 2, 2]], ENTITIES[[5, 5, 7, 9]]
        scores = fitted.score(users, entities)
        assert scores.dtype == np.float32 and scores.shape == (4,)

    def test_score_matrix_equals_pairwise_scores(self, fitted):
        users, entities = USERS[:5], ENTITIES[:7]
        matrix = fitted.score_matrix(users, entities)
        pairs = fitted.score(np.repeat(users, 7), np.tile(entities, 5)).reshape(5, 7)
        np.testing.assert_allclose(matrix, pairs, rtol=1e-5, atol=1e-6)

    def test_save_load_roundtrip_gives_identical_scores(self, fitted, tmp_path):
        path = fitted.save(tmp_path / "model.npz")
        loaded = type(fitted).load(path)
        users, entities = np.repeat(USERS, 40), np.tile(ENTITIES, 60)
        np.testing.assert_array_equal(loaded.score(users, entities), fitted.score(users, entities))
        with np.load(path, allow_pickle=False) as npz:  # no object arrays anywhere
            assert all(npz[k].dtype != object for k in npz.files)

    def test_load_refuses_another_kind_of_model(self, fitted, tmp_path):
        from recsys.training.baselines import RandomScorer

        other = RandomScorer if not isinstance(fitted, RandomScorer) else ALSModel
        path = fitted.save(tmp_path / "model.npz")
        with pytest.raises(ModelArtifactError, match="model"):
            other.load(path)

    def test_scoring_before_fit_is_a_typed_error_unless_stateless(self):
        if not self.needs_fit:
            assert np.isfinite(self.make_model().score(USERS[:1], ENTITIES[:1])).all()
            return
        with pytest.raises(ModelFitError):
            self.make_model().score(USERS[:1], ENTITIES[:1])


class TestALSContract(ModelContractTests):
    def make_model(self):
        return ALSModel(ALSParams(factors=4, iterations=5, alpha=5.0), seed=3)


def test_refit_with_same_data_params_and_seed_gives_identical_factors():
    a = ALSModel(ALSParams(factors=8, iterations=6), seed=11).fit(small_matrix())
    b = ALSModel(ALSParams(factors=8, iterations=6), seed=11).fit(small_matrix())
    assert np.array_equal(a.user_factors, b.user_factors) and np.array_equal(a.item_factors, b.item_factors)


def test_solver_threads_do_not_change_the_factors():
    one = ALSModel(ALSParams(factors=8, iterations=6), seed=11, num_threads=1).fit(small_matrix())
    two = ALSModel(ALSParams(factors=8, iterations=6), seed=11, num_threads=2).fit(small_matrix())
    assert np.array_equal(one.user_factors, two.user_factors) and np.array_equal(one.item_factors, two.item_factors)


def test_another_seed_gives_other_factors():
    a = ALSModel(ALSParams(factors=8, iterations=6), seed=1).fit(small_matrix())
    b = ALSModel(ALSParams(factors=8, iterations=6), seed=2).fit(small_matrix())
    assert not np.array_equal(a.item_factors, b.item_factors)


def test_factors_are_float32_with_the_configured_width():
    model = ALSModel(ALSParams(factors=6, iterations=3), seed=0).fit(small_matrix())
    assert model.user_factors.dtype == np.float32 and model.user_factors.shape == (60, 6)
    assert model.item_factors.shape == (40, 6)


def test_diverging_fit_raises_model_fit_error():
    data = small_matrix()
    data.matrix.data[:] = 3e38  # finite confidences whose alpha-scaled values overflow to NaN factors
    with pytest.raises(ModelFitError, match="NaN"):
        ALSModel(ALSParams(factors=4, alpha=1e10, iterations=2), seed=0).fit(data)


def test_nan_factor_is_refused_by_the_numerical_check():
    factors = np.ones((3, 4), np.float32)
    bad = factors.copy()
    bad[1, 2] = np.nan
    check_factors(factors, factors, 4)
    with pytest.raises(ModelFitError, match="item_factors has 1 NaN/inf values in 1 rows"):
        check_factors(factors, bad, 4)


def test_loading_an_artifact_with_a_nan_factor_raises(tmp_path):
    model = ALSModel(ALSParams(factors=4, iterations=3), seed=0).fit(small_matrix())
    model.item_factors[0, 0] = np.inf
    path = model.save(tmp_path / "bad.npz")
    with pytest.raises(ModelFitError, match="item_factors"):
        ALSModel.load(path)


@pytest.mark.parametrize("matrix, message", [
    (sp.csc_matrix(np.ones((60, 40), np.float32)), "csr_matrix"),
    (sp.csr_matrix(np.ones((60, 40), np.float64)), "float32"),
    (sp.csr_matrix(-np.ones((60, 40), np.float32)), "negative"),
])
def test_fit_refuses_bad_matrices_with_a_typed_error(matrix, message):
    data = small_matrix()
    object.__setattr__(data, "matrix", matrix)  # bypass the dataclass's own check: test the model's
    with pytest.raises(TrainingDataError, match=message):
        ALSModel(ALSParams(factors=4), seed=0).fit(data)


def test_matrix_and_id_maps_must_agree():
    with pytest.raises(TrainingDataError, match="shape"):
        InteractionMatrix(sp.csr_matrix((3, 4), dtype=np.float32), IdMap(np.arange(3)), IdMap(np.arange(5)), "menu")


def test_unknown_users_and_entities_score_nan():
    model = ALSModel(ALSParams(factors=4, iterations=3), seed=0).fit(small_matrix())
    scores = model.score(np.array([USERS[0], 9999, USERS[1]]), np.array([ENTITIES[0], ENTITIES[0], 9999]))
    assert np.isfinite(scores[0]) and np.isnan(scores[1:]).all()


def test_recalculate_user_is_the_exact_solve_with_item_factors_fixed():
    data = small_matrix()
    model = ALSModel(ALSParams(factors=5, iterations=8, regularization=0.5, alpha=4.0), seed=0).fit(data)
    row = data.rows(USERS[[7]])
    got = model.recalculate_user(row)
    # implicit's normal equations: (Y'CY + reg I) x = Y'Cp with c = alpha r where r > 0, else 1
    Y = model.item_factors.astype(np.float64)
    r = row.toarray().ravel()
    c = np.where(r > 0, 4.0 * r, 1.0)
    p = (r > 0).astype(np.float64)
    A = Y.T @ (c[:, None] * Y) + 0.5 * np.eye(5)
    expected = np.linalg.solve(A, Y.T @ (c * p))
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-4)
    with pytest.raises(TrainingDataError, match="shape"):
        model.recalculate_user(sp.csr_matrix((1, 3), dtype=np.float32))


def test_top_k_by_shards_equals_one_big_shard():
    model = ALSModel(ALSParams(factors=4, iterations=4), seed=0).fit(small_matrix())
    ids_a, scores_a = top_k(model, USERS, ENTITIES, 5, shard_users=7)
    ids_b, scores_b = top_k(model, USERS, ENTITIES, 5, shard_users=1000)
    assert np.array_equal(ids_a, ids_b) and np.array_equal(scores_a, scores_b)
    full = model.score_matrix(USERS, ENTITIES)
    np.testing.assert_allclose(scores_a[:, 0], full.max(axis=1), rtol=1e-6)
    assert (np.diff(scores_a, axis=1) <= 0).all()
