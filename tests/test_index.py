"""Searchers agree with the definition of nearest neighbours; metrics agree with hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from core.evaluate import precision_at_k, recall_at_k
from core.index import AnnoySearcher, ExactSearcher


def unit_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_matches_a_full_sort():
    vectors = unit_vectors(300, 16)
    query = vectors[7]
    found = ExactSearcher(vectors).search(query, 5)
    expected = np.argsort(-(vectors @ query))[:5]
    assert list(found.indices) == list(expected)
    assert found.indices[0] == 7 and found.scores[0] == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.diff(found.scores) <= 0)


def test_exact_search_respects_a_filter():
    vectors = unit_vectors(100, 8)
    allowed = np.zeros(100, bool)
    allowed[50:60] = True
    found = ExactSearcher(vectors).search(vectors[0], 20, allowed)
    assert len(found.indices) == 10 and set(found.indices) == set(range(50, 60))


def test_annoy_with_a_generous_search_k_is_exact_and_scores_are_cosines(tmp_path):
    vectors = unit_vectors(500, 12)
    path = tmp_path / "index.ann"
    AnnoySearcher.build(vectors, path, n_trees=10)
    annoy = AnnoySearcher.load(path, vectors, search_k=100_000)
    exact = ExactSearcher(vectors)
    for row in (0, 123, 499):
        a, e = annoy.search(vectors[row], 10), exact.search(vectors[row], 10)
        assert list(a.indices) == list(e.indices)
        np.testing.assert_allclose(a.scores, e.scores, atol=1e-4)


def test_annoy_filtered_search_returns_only_allowed_rows(tmp_path):
    vectors = unit_vectors(400, 8)
    path = tmp_path / "index.ann"
    AnnoySearcher.build(vectors, path, n_trees=5)
    annoy = AnnoySearcher.load(path, vectors, search_k=50)
    allowed = np.zeros(400, bool)
    allowed[::40] = True  # 10 rows, rare enough to need the exact fallback
    found = annoy.search(vectors[3], 8, allowed)
    assert len(found.indices) == 8 and allowed[found.indices].all()


def test_annoy_refuses_an_index_for_other_embeddings(tmp_path):
    vectors = unit_vectors(50, 8)
    AnnoySearcher.build(vectors, tmp_path / "i.ann", n_trees=2)
    with pytest.raises(ValueError, match="holds 50 items"):
        AnnoySearcher.load(tmp_path / "i.ann", unit_vectors(60, 8), search_k=10)


def test_recall_at_k_hand_cases():
    assert recall_at_k([1, 2, 3], [1, 2, 3], 3) == 1.0
    assert recall_at_k([3, 2, 1], [1, 2, 3], 3) == 1.0  # order within the top k does not matter
    assert recall_at_k([1, 9, 8], [1, 2, 3], 3) == pytest.approx(1 / 3)
    assert recall_at_k([9, 1, 2, 3], [1, 2, 3, 4], 3) == pytest.approx(2 / 3)  # only each side's top 3 counts


def test_precision_at_k_hand_cases():
    assert precision_at_k([0, 0, 1, 0], 0, 4) == 0.75
    assert precision_at_k([2, 2], 2, 4) == 0.5  # fewer results than k are misses
    assert precision_at_k(np.array([5] * 12), 5, 10) == 1.0
