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


def test_annoy_filtered_search_returns_the_nearest_allowed_rows(tmp_path):
    vectors = unit_vectors(400, 8)
    path = tmp_path / "index.ann"
    AnnoySearcher.build(vectors, path, n_trees=5)
    annoy = AnnoySearcher.load(path, vectors, search_k=50)
    allowed = np.zeros(400, bool)
    allowed[::40] = True
    found = annoy.search(vectors[3], 8, allowed)
    expected = ExactSearcher(vectors).search(vectors[3], 8, allowed)
    assert list(found.indices) == list(expected.indices)
    assert len(annoy.search(vectors[3], 8, np.zeros(400, bool)).indices) == 0


def test_annoy_filtered_search_falls_back_to_exact_when_the_forest_yields_too_few(tmp_path, monkeypatch):
    vectors = unit_vectors(400, 8)
    path = tmp_path / "index.ann"
    AnnoySearcher.build(vectors, path, n_trees=5)
    annoy = AnnoySearcher.load(path, vectors, search_k=50)
    monkeypatch.setattr(annoy, "index", _FewResults(annoy.index))
    allowed = np.zeros(400, bool)
    allowed[100:200] = True
    found = annoy.search(vectors[3], 8, allowed)
    assert list(found.indices) == list(ExactSearcher(vectors).search(vectors[3], 8, allowed).indices)


class _FewResults:
    """An Annoy index that returns only its first 3 neighbours, whatever is asked."""

    def __init__(self, index):
        self.index = index

    def get_n_items(self):
        return self.index.get_n_items()

    def get_nns_by_vector(self, vector, n, search_k, include_distances=False):
        ids, distances = self.index.get_nns_by_vector(vector, 3, search_k, include_distances=True)
        return (ids, distances) if include_distances else ids


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


def test_kmeans_probing_every_cluster_is_exact():
    from core.index import KMeansSearcher

    vectors = unit_vectors(400, 12, seed=3)
    kmeans = KMeansSearcher.build(vectors, n_clusters=8, n_probe=8)
    exact = ExactSearcher(vectors)
    for row in (1, 50, 399):
        assert list(kmeans.search(vectors[row], 10).indices) == list(exact.search(vectors[row], 10).indices)


def test_kmeans_probing_one_cluster_searches_only_that_cluster():
    from core.index import KMeansSearcher

    vectors = unit_vectors(400, 12, seed=4)
    kmeans = KMeansSearcher.build(vectors, n_clusters=8, n_probe=1)
    found = kmeans.search(vectors[0], 400)
    home = np.argmax(kmeans.centroids @ vectors[0])
    members = kmeans.order[kmeans.offsets[home] : kmeans.offsets[home + 1]]
    assert set(found.indices) == set(members) and len(members) < 400


def test_pca_with_full_dimension_is_exact_and_fewer_dimensions_are_close():
    from core.index import PCASearcher

    vectors = unit_vectors(500, 16, seed=5)
    exact = ExactSearcher(vectors)
    full = PCASearcher.build(vectors, dim=16)
    for row in (0, 250):
        e = exact.search(vectors[row], 10)
        f = full.search(vectors[row], 10)
        assert list(f.indices) == list(e.indices)
        np.testing.assert_allclose(f.scores, e.scores, atol=1e-4)
    reduced = PCASearcher.build(vectors, dim=8)
    assert reduced.reduced.shape == (500, 8) and reduced.memory_bytes < exact.memory_bytes


def test_average_precision_hand_cases():
    from core.evaluate import average_precision_at_k

    assert average_precision_at_k([1, 1, 1], 1, 3, n_relevant=100) == 1.0
    # hits at ranks 1 and 3: (1/1 + 2/3) / min(3, 100)
    assert average_precision_at_k([1, 0, 1], 1, 3, n_relevant=100) == pytest.approx((1 + 2 / 3) / 3)
    # only 2 relevant items exist and both are found first: perfect
    assert average_precision_at_k([1, 1, 0], 1, 3, n_relevant=2) == 1.0
    assert average_precision_at_k([0, 0, 0], 1, 3, n_relevant=5) == 0.0
