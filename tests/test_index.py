"""Searchers agree with the definition of nearest neighbours; metrics agree with hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from core.search.index import AnnoySearcher, ExactSearcher
from core.search.metrics import precision_at_k, recall_at_k


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
    from core.search.index import KMeansSearcher

    vectors = unit_vectors(400, 12, seed=3)
    kmeans = KMeansSearcher.build(vectors, n_clusters=8, n_probe=8)
    exact = ExactSearcher(vectors)
    for row in (1, 50, 399):
        assert list(kmeans.search(vectors[row], 10).indices) == list(exact.search(vectors[row], 10).indices)


def test_kmeans_probing_one_cluster_searches_only_that_cluster():
    from core.search.index import KMeansSearcher

    vectors = unit_vectors(400, 12, seed=4)
    kmeans = KMeansSearcher.build(vectors, n_clusters=8, n_probe=1)
    found = kmeans.search(vectors[0], 400)
    home = np.argmax(kmeans.centroids @ vectors[0])
    members = kmeans.order[kmeans.offsets[home] : kmeans.offsets[home + 1]]
    assert set(found.indices) == set(members) and len(members) < 400


def test_pca_with_full_dimension_is_exact_and_fewer_dimensions_are_close():
    from core.search.index import PCASearcher

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
    from core.search.metrics import average_precision_at_k

    assert average_precision_at_k([1, 1, 1], 1, 3, n_relevant=100) == 1.0
    # hits at ranks 1 and 3: (1/1 + 2/3) / min(3, 100)
    assert average_precision_at_k([1, 0, 1], 1, 3, n_relevant=100) == pytest.approx((1 + 2 / 3) / 3)
    # only 2 relevant items exist and both are found first: perfect
    assert average_precision_at_k([1, 1, 0], 1, 3, n_relevant=2) == 1.0
    assert average_precision_at_k([0, 0, 0], 1, 3, n_relevant=5) == 0.0


HNSW_N, HNSW_D = 2000, 32


@pytest.fixture(scope="module")
def hnsw_case():
    from core.search.index import HNSWSearcher

    vectors = unit_vectors(HNSW_N, HNSW_D, seed=7)
    return vectors, HNSWSearcher.build(vectors, m=16, ef_construction=100, ef=64, seed=0)


def test_hnsw_recall_against_exact_is_high_and_scores_are_the_rows_cosines(hnsw_case):
    vectors, hnsw = hnsw_case
    exact = ExactSearcher(vectors)
    recalls = []
    for row in range(0, HNSW_N, 40):
        found = hnsw.search(vectors[row], 10)
        assert len(found.indices) == 10 and found.indices.dtype == np.int64
        recalls.append(recall_at_k(list(found.indices), list(exact.search(vectors[row], 10).indices), 10))
        np.testing.assert_allclose(found.scores, vectors[found.indices] @ vectors[row], atol=1e-5)
        assert np.all(np.diff(found.scores) <= 1e-6)  # best first
    assert np.mean(recalls) >= 0.95


def test_hnsw_ef_below_k_still_returns_k_good_neighbours(hnsw_case):
    vectors, hnsw = hnsw_case
    exact = ExactSearcher(vectors)
    hnsw.ef = 16
    try:
        recalls = []
        for row in range(0, HNSW_N, 100):
            found = hnsw.search(vectors[row], 100)  # hnswlib walks with max(ef, k)
            assert len(found.indices) == 100 and len(set(found.indices)) == 100
            recalls.append(recall_at_k(list(found.indices), list(exact.search(vectors[row], 100).indices), 100))
        assert np.mean(recalls) >= 0.9
    finally:
        hnsw.ef = 64


# A big subset at a small ef is walked with hnswlib's filter; a small one is searched by brute force (on 2,000 rows
# brute force wins unless the subset is most of them).
@pytest.mark.parametrize(("share", "ef", "walks"), [(0.8, 16, True), (0.02, 64, False)])
def test_hnsw_filtered_search_returns_the_nearest_allowed_rows(hnsw_case, share, ef, walks, monkeypatch):
    vectors, hnsw = hnsw_case
    monkeypatch.setattr(hnsw, "ef", ef)  # restored (through the setter) after the test
    allowed = np.random.default_rng(1).random(HNSW_N) < share
    walked = []
    real_knn_query = hnsw.index.knn_query

    def spy(*args, **kwargs):
        walked.append(kwargs.get("filter") is not None)
        return real_knn_query(*args, **kwargs)

    monkeypatch.setattr(hnsw, "index", _Spy(hnsw.index, spy))
    exact = ExactSearcher(vectors)
    recalls = []
    for row in range(0, HNSW_N, 100):
        found = hnsw.search(vectors[row], 10, allowed)
        assert len(found.indices) == 10 and allowed[found.indices].all()
        np.testing.assert_allclose(found.scores, vectors[found.indices] @ vectors[row], atol=1e-5)
        recalls.append(recall_at_k(list(found.indices), list(exact.search(vectors[row], 10, allowed).indices), 10))
    assert np.mean(recalls) >= 0.95
    assert walked == ([True] * len(recalls) if walks else [])


def test_hnsw_filtered_search_with_fewer_allowed_rows_than_k(hnsw_case):
    vectors, hnsw = hnsw_case
    allowed = np.zeros(HNSW_N, bool)
    allowed[[5, 600, 1999]] = True
    found = hnsw.search(vectors[0], 10, allowed)
    assert sorted(found.indices) == [5, 600, 1999]
    np.testing.assert_allclose(found.scores, vectors[found.indices] @ vectors[0], atol=1e-5)
    assert len(hnsw.search(vectors[0], 10, np.zeros(HNSW_N, bool)).indices) == 0


def test_hnsw_walk_that_comes_back_short_falls_back_to_exact(hnsw_case, monkeypatch):
    vectors, hnsw = hnsw_case

    def short(*args, **kwargs):
        raise RuntimeError("Cannot return the results in a contiguous 2D array. Probably ef or M is too small")

    monkeypatch.setattr(hnsw, "index", _Spy(hnsw.index, short))
    allowed = np.ones(HNSW_N, bool)
    allowed[::3] = False
    for mask in (None, allowed):
        found = hnsw.search(vectors[9], 10, mask)
        assert list(found.indices) == list(ExactSearcher(vectors).search(vectors[9], 10, mask).indices)


class _Spy:
    """An hnswlib index whose knn_query is replaced; everything else is the real index's."""

    def __init__(self, index, knn_query):
        self._index, self.knn_query = index, knn_query

    def __getattr__(self, name):
        return getattr(self._index, name)


def test_hnsw_save_and_load_round_trip(hnsw_case, tmp_path):
    from core.search.index import HNSWSearcher

    vectors, hnsw = hnsw_case
    hnsw.save(tmp_path / "graph.bin")
    loaded = HNSWSearcher.load(tmp_path / "graph.bin", vectors, ef=64)
    assert loaded.ef == 64 and loaded.memory_bytes == (tmp_path / "graph.bin").stat().st_size
    assert HNSW_N * HNSW_D * 4 < loaded.memory_bytes < HNSW_N * (HNSW_D * 4 + 2 * 16 * 4 + 64) * 1.2
    for row in (0, 777, 1999):
        a, b = hnsw.search(vectors[row], 10), loaded.search(vectors[row], 10)
        assert list(a.indices) == list(b.indices)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    with pytest.raises(ValueError, match="holds 2000 items"):
        HNSWSearcher.load(tmp_path / "graph.bin", unit_vectors(2100, HNSW_D), ef=64)
    with pytest.raises(ValueError, match="other vectors"):
        HNSWSearcher.load(tmp_path / "graph.bin", unit_vectors(HNSW_N, HNSW_D, seed=8), ef=64)
    with pytest.raises(ValueError, match="other vectors"):
        HNSWSearcher.load(tmp_path / "graph.bin", unit_vectors(HNSW_N, HNSW_D // 2, seed=7), ef=64)


def test_hnsw_sweep_rows_cover_every_m_and_ef():
    from core.bench.retrieval import SWEEP_EF, SWEEP_M, hnsw_sweep, truth_top_k
    from core.config import Settings

    vectors = unit_vectors(300, 16, seed=9)
    labels = np.arange(300) % 3
    queries = np.arange(0, 300, 30)
    rows = hnsw_sweep(vectors, queries, truth_top_k(vectors, queries), labels, Settings())
    assert [(r["m"], r["ef"]) for r in rows] == [(m, ef) for m in SWEEP_M for ef in SWEEP_EF]
    for row in rows:
        assert row["ef_construction"] == Settings().hnsw_ef_construction
        assert row["build_s"] >= 0 and row["memory_mb"] > 0 and row["p50_ms"] > 0
        assert 0.9 <= row["recall_at_10"] <= 1.0  # 300 rows: every ef reaches nearly all of the graph
    memory = {r["m"]: r["memory_mb"] for r in rows}
    assert memory[8] < memory[16] < memory[32]  # more links per node
