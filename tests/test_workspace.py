"""The Workspace end to end on a tiny generated catalogue: search, caching by fingerprint, and damaged
artifacts rebuilt instead of trusted."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHAPES, encoded, synthetic_photos

from core.embedding.sequential_runner import SequentialRunner
from core.search.workspace import Workspace


def test_photo_of_an_item_finds_that_item_first(shared_workspace):
    photos, items = synthetic_photos()
    for row in (3, 20, 40, 60):
        result = shared_workspace.search(encoded(photos[row], "JPEG", quality=90), k=5)
        assert result.hits.loc[0, "row"] == row
        assert result.hits["score"].is_monotonic_decreasing
        assert result.predicted[0][0] == items.loc[row, "category"]
        assert result.query_image.size == (28, 28)
        assert len(result.hits) == 5 and result.latency_ms > 0


def test_exif_rotated_upload_is_searched_upright(shared_workspace):
    from test_images import exif_rotated_jpeg

    photos, _ = synthetic_photos()
    bar = 40  # a vertical bar: searched sideways it would look like nothing in the catalogue
    upright = photos[bar]
    result = shared_workspace.search(exif_rotated_jpeg(upright), k=3)
    assert result.hits.loc[0, "row"] == bar


def test_search_item_leaves_the_item_out_and_filters_by_category(shared_workspace):
    result = shared_workspace.search_item(5, k=4)
    assert 5 not in set(result.hits["row"]) and len(result.hits) == 4
    filtered = shared_workspace.search_item(5, k=4, category="Ring")
    assert set(filtered.hits["category"]) == {"Ring"}


def test_exact_and_annoy_agree_on_a_tiny_catalogue(shared_workspace):
    for row in range(0, 64, 9):
        a = shared_workspace.search_item(row, k=5, exact=False)
        e = shared_workspace.search_item(row, k=5, exact=True)
        # the same neighbours, up to near-ties at the k-th place (Annoy and numpy round differently)
        assert len(set(a.hits["row"]) ^ set(e.hits["row"])) <= 2
        np.testing.assert_allclose(a.hits["score"], e.hits["score"], atol=1e-3)


def test_embeddings_are_unit_length_and_category_structured(shared_workspace):
    e = np.asarray(shared_workspace.embeddings)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    labels = shared_workspace.catalog.labels
    hits = [shared_workspace.search_item(row, k=5, exact=True).hits for row in range(len(labels))]
    precision = np.mean([(h["label"].to_numpy() == labels[row]).mean() for row, h in enumerate(hits)])
    assert precision > 1.5 / len(SHAPES)  # a random backbone still separates simple shapes above chance


def test_second_open_loads_from_disk_without_embedding(settings, monkeypatch):
    first = Workspace.open(settings)

    def fail(*args, **kwargs):
        raise AssertionError("embeddings were recomputed instead of loaded")

    monkeypatch.setattr(SequentialRunner, "run", fail)
    second = Workspace.open(settings)
    np.testing.assert_array_equal(np.asarray(first.embeddings), np.asarray(second.embeddings))
    assert second.store.path == first.store.path


def test_a_changed_setting_makes_a_new_key(settings):
    a = Workspace.open(settings)
    b = Workspace.open(settings.replace(image_size=40))
    assert a.embedder.key != b.embedder.key and a.store.path != b.store.path


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
@pytest.mark.parametrize("name", ["embeddings.npy", "annoy-4trees.ann", "projection.npz"])
def test_damaged_artifacts_are_rebuilt_not_trusted(settings, name, damage):
    good = Workspace.open(settings)
    reference = good.search_item(0, k=5).hits["row"].tolist()
    path = good.store.file(name)
    size = path.stat().st_size
    if damage == "truncate":  # a half-written file
        with path.open("r+b") as fh:
            fh.truncate(size // 2)
    elif damage == "garbage":  # same size, different bytes
        path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    else:
        path.unlink()
    reopened = Workspace.open(settings)
    assert reopened.store.verified(name)
    assert reopened.search_item(0, k=5).hits["row"].tolist() == reference


def test_corrupt_meta_json_means_rebuild(settings):
    good = Workspace.open(settings)
    good.store.meta_path.write_text("{ not json")
    reopened = Workspace.open(settings)
    assert reopened.store.verified("embeddings.npy")


def test_is_built_agrees_with_open_without_loading_the_model(settings, monkeypatch):
    from core.embedding.embedder import Embedder

    assert not Workspace.is_built(settings)
    ws = Workspace.open(settings)

    def fail(*args, **kwargs):
        raise AssertionError("is_built loaded the model")

    monkeypatch.setattr(Embedder, "from_settings", fail)
    assert Workspace.is_built(settings)
    assert Workspace.store_for(settings).path == ws.store.path


def test_edge_cases_k_larger_than_catalogue_and_an_empty_filter(shared_workspace):
    everything = shared_workspace.search_item(0, k=500, exact=True)
    assert len(everything.hits) == 63  # all other items
    assert shared_workspace.search_item(0, k=5, category="No such category").hits.empty


def test_annoy_is_rebuilt_when_built_from_other_embeddings(settings):
    first = Workspace.open(settings)
    meta = first.store.meta()
    meta["files"]["annoy-4trees.ann"]["embeddings"] = "checksum-of-older-embeddings"
    first.store.write_meta(meta)
    second = Workspace.open(settings)
    files = second.store.meta()["files"]
    assert files["annoy-4trees.ann"]["embeddings"] == files["embeddings.npy"]["checksum"]
