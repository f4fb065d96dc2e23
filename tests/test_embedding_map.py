"""The embedding map and the per-label figures: shapes, determinism, caching, queries landing by their neighbours,
and reports equal to scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from core.search.embedding_map import (
    OTHER,
    category_groups,
    category_palette,
    components_for,
    compute_map,
    explained_variance,
    kmeans_clusters,
    sample_rows,
    silhouette,
)
from core.search.metrics import label_report


def clustered(n_per: int = 40, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in 4 well-separated clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, dim))
    x = np.concatenate([c + 0.15 * rng.normal(size=(n_per, dim)) for c in centres]).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(4), n_per)


@pytest.mark.parametrize("method,dims", [("pca", 2), ("pca", 3), ("umap", 2), ("umap", 3)])
def test_map_shapes_and_determinism(method, dims):
    x, _ = clustered()
    rows = sample_rows(len(x), 120, seed=0)
    first = compute_map(x, rows, method, dims, seed=0)
    again = compute_map(x, rows, method, dims, seed=0)
    assert first.coords.shape == (120, dims) and np.array_equal(first.rows, rows)
    np.testing.assert_allclose(first.coords, again.coords, atol=1e-5)


@pytest.mark.parametrize("method", ["pca", "umap"])
def test_a_query_lands_next_to_its_nearest_neighbour(method):
    x, labels = clustered()
    rows = np.arange(len(x))
    emap = compute_map(x, rows, method, 2, seed=0)
    rng = np.random.default_rng(3)
    for target in (5, 60, 100, 150):
        query = x[target] + 0.02 * rng.normal(size=x.shape[1]).astype(np.float32)
        query /= np.linalg.norm(query)
        placed = emap.place(query, x)[0]
        nearest_on_map = int(np.argmin(np.linalg.norm(emap.coords - placed, axis=1)))
        assert labels[nearest_on_map] == labels[target]  # among its own cluster on the map
        spread = np.linalg.norm(emap.coords.max(0) - emap.coords.min(0))
        assert np.linalg.norm(placed - emap.coords[target]) < 0.25 * spread


def test_the_map_is_cached_by_embeddings_and_settings(shared_workspace):
    first = shared_workspace.embedding_map("pca", sample=0, dims=2)
    cached = shared_workspace.embedding_map("pca", sample=0, dims=2)
    assert cached.seconds == 0.0 and np.array_equal(first.coords, cached.coords)
    maps = set(shared_workspace.store.path.glob("map-*.npz"))
    other = shared_workspace.embedding_map("pca", sample=32, dims=2)
    assert len(other.rows) == 32 and len(set(shared_workspace.store.path.glob("map-*.npz")) - maps) == 1


def test_sample_rows_are_fixed_and_sorted():
    assert np.array_equal(sample_rows(100, 30, 1), sample_rows(100, 30, 1))
    assert np.all(np.diff(sample_rows(100, 30, 1)) > 0) and len(sample_rows(100, 0, 1)) == 100


def test_explained_variance_and_components_for_90_percent():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 10)) * np.array([10, 5, 1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    curve = explained_variance(x, np.arange(300))
    assert np.all(np.diff(curve) >= -1e-9) and curve[-1] == pytest.approx(1.0)
    assert components_for(curve, 0.9) == 2 and components_for(curve[:1], 0.99) is None


def test_kmeans_and_silhouette_find_the_clusters():
    x, labels = clustered()
    clusters = kmeans_clusters(x, np.arange(len(x)), 4)
    assert len(set(zip(clusters, labels, strict=True))) == 4  # one cluster per true group
    assert silhouette(x, labels, metric="cosine") > 0.5
    assert silhouette(x, np.zeros(len(x))) is None


def test_label_report_equals_scikit_learn_for_tags_and_categories():
    rng = np.random.default_rng(2)
    true, predicted = rng.integers(0, 2, (50, 4)), rng.integers(0, 2, (50, 4))
    report = label_report(true, predicted, ["a", "b", "c", "d"])
    expected = precision_recall_fscore_support(true, predicted, average=None, zero_division=0)
    for column, values in zip(["precision", "recall", "f1", "support"], expected, strict=True):
        np.testing.assert_allclose(report[column], values)
    labels, guesses = rng.integers(0, 3, 60), rng.integers(0, 3, 60)
    report = label_report(labels, guesses, ["x", "y", "z"])
    expected = precision_recall_fscore_support(labels, guesses, labels=[0, 1, 2], average=None, zero_division=0)
    np.testing.assert_allclose(report["f1"], expected[2])
    assert list(report["label"]) == ["x", "y", "z"] and report["support"].sum() == 60


def test_label_report_has_one_row_per_tag_for_one_tag_and_for_none():
    """The garment photos' vocabulary is one tag ("kids"): scikit-learn reads that as binary labels (two rows for one
    name), which took the Tags page down on the default catalogue."""
    true = np.array([[1], [0], [1], [0]])
    predicted = np.array([[1], [1], [0], [0]])
    report = label_report(true, predicted, ["kids"])
    assert report.to_dict("records") == [{"label": "kids", "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}]
    assert label_report(np.zeros((4, 0)), np.zeros((4, 0)), []).empty


def contrast_on_white(colour: str) -> float:
    """WCAG contrast ratio of a ``#rrggbb`` colour against white (1 = invisible, 21 = black)."""
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 1.05 / (luminance + 0.05)


@pytest.mark.parametrize("n", [17, 30])
def test_the_category_palette_gives_distinct_colours_visible_on_white(n):
    categories = [f"Category {i}" for i in range(n)]
    counts = [100 - i for i in range(n)]  # the first are the largest
    groups, palette = category_groups(categories, counts), category_palette(categories, counts)
    shown = set(groups.values())
    assert set(palette) == shown and len(set(palette.values())) == len(shown)  # one distinct colour per group
    assert min(contrast_on_white(c) for c in palette.values()) >= 3, palette  # WCAG 3:1 for graphics
    if n <= 24:
        assert shown == set(categories)  # every category its own colour, none merged
    else:
        assert len(shown) == 24 and OTHER in shown
        assert all(groups[c] == c for c in categories[:23]) and groups[categories[-1]] == OTHER  # the largest kept
