"""The FAISS item index: exact scores of exactly the candidate ids, unknown ids reported,
save/load round trip in FAISS's own format."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.errors import DataContractError, NotFoundError
from recsys.ranking.index import ItemIndex, UnknownItemsError, score_candidates, set_faiss_threads

DIM = 16


@pytest.fixture(scope="module")
def catalog():
    rng = np.random.default_rng(3)
    ids = rng.choice(10**12, 500, replace=False).astype(np.int64)
    vectors = rng.standard_normal((500, DIM)).astype(np.float32)
    return ids, vectors, rng.standard_normal(DIM).astype(np.float32)


def test_scores_equal_numpy_dot_products_in_candidate_order(catalog):
    ids, vectors, user = catalog
    index = ItemIndex.build(vectors, ids)
    pick = np.random.default_rng(0).choice(len(ids), 200, replace=False)
    scores = score_candidates(index, user, ids[pick])
    assert scores.dtype == np.float32 and scores.shape == (200,)
    np.testing.assert_allclose(scores, vectors[pick] @ user, rtol=1e-6, atol=1e-6)


def test_duplicate_candidates_are_scored_each_time(catalog):
    ids, vectors, user = catalog
    index = ItemIndex.build(vectors, ids)
    scores = score_candidates(index, user, ids[[5, 5, 7]])
    assert scores[0] == scores[1]
    np.testing.assert_allclose(scores, vectors[[5, 5, 7]] @ user, rtol=1e-6)


def test_unknown_ids_raise_naming_them_by_default(catalog):
    ids, vectors, user = catalog
    index = ItemIndex.build(vectors, ids)
    unknown = np.int64(np.setdiff1d(np.arange(10), ids)[0])
    with pytest.raises(UnknownItemsError) as err:
        score_candidates(index, user, np.r_[ids[:3], unknown])
    assert err.value.ids.tolist() == [unknown] and str(unknown) in str(err.value)


def test_unknown_ids_score_nan_with_a_mask_when_asked(catalog):
    ids, vectors, user = catalog
    index = ItemIndex.build(vectors, ids)
    unknown = np.int64(np.setdiff1d(np.arange(10), ids)[0])
    cand = np.r_[ids[:2], unknown, ids[9]]
    scores = score_candidates(index, user, cand, unknown="nan")
    assert np.isnan(scores[2]) and np.isfinite(scores[[0, 1, 3]]).all()
    result = index.score(user, cand)
    assert result.known.tolist() == [True, True, False, True]
    np.testing.assert_allclose(result.scores[[0, 1, 3]], vectors[[0, 1, 9]] @ user, rtol=1e-6)


def test_save_load_round_trip_keeps_ids_vectors_and_scores(tmp_path, catalog):
    ids, vectors, user = catalog
    index = ItemIndex.build(vectors, ids)
    path = index.save(tmp_path / "v1" / "items.faiss")
    assert path.read_bytes()[:2] != b"\x80\x04"  # FAISS format, not a pickle
    assert not list(path.parent.glob(".*"))  # no temporaries left
    loaded = ItemIndex.load(path)
    assert len(loaded) == len(ids) and loaded.dim == DIM
    order = np.argsort(ids)  # rows are stored in id order
    np.testing.assert_array_equal(loaded.ids, ids[order])
    np.testing.assert_array_equal(loaded.vectors, vectors[order])
    np.testing.assert_array_equal(score_candidates(loaded, user, ids[::7]), score_candidates(index, user, ids[::7]))


def test_bad_inputs_are_clear_errors(tmp_path, catalog):
    ids, vectors, user = catalog
    with pytest.raises(DataContractError, match="duplicates"):
        ItemIndex.build(vectors[:2], np.array([1, 1]))
    with pytest.raises(DataContractError, match="NaN"):
        ItemIndex.build(np.full((1, DIM), np.nan, np.float32), np.array([1]))
    with pytest.raises(DataContractError, match="dims"):
        ItemIndex.build(vectors, ids).score(user[:3], ids[:2])
    with pytest.raises(NotFoundError):
        ItemIndex.load(tmp_path / "missing.faiss")
    (tmp_path / "junk.faiss").write_bytes(b"not an index")
    with pytest.raises(DataContractError):
        ItemIndex.load(tmp_path / "junk.faiss")


def test_empty_index_reports_every_candidate_unknown():
    index = ItemIndex.build(np.zeros((0, DIM), np.float32), np.zeros(0, np.int64))
    assert len(index) == 0
    assert not index.score(np.ones(DIM, np.float32), np.array([1, 2])).known.any()


def test_faiss_threads_can_be_pinned_to_one():
    import faiss

    set_faiss_threads(1)
    assert faiss.omp_get_max_threads() == 1
    with pytest.raises(ValueError):
        set_faiss_threads(0)
