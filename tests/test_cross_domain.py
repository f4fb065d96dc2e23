"""Across photo styles: the shared category map, the cross-domain benchmark's scoring, re-ranking by the predicted
category, and no PCA for a catalogue too small to fit one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_photos, tiny_settings
from PIL import Image

from core.bench.cross_domain import Query, score
from core.catalog.shared_categories import ACCEPTED, GARMENT_PHOTOS, LEFT_OUT, SHOP, accepted
from core.config import Settings
from core.search.workspace import RERANK_POOL, Workspace


def builtin_categories(name: str) -> set[str]:
    items = Settings().builtin_dir / name / "items.csv"
    return set(pd.read_csv(items)["category"].astype(str))


@pytest.mark.parametrize("source,target", [(GARMENT_PHOTOS, SHOP), (SHOP, GARMENT_PHOTOS)])
def test_the_category_map_covers_every_category_of_both_builtin_catalogues(source, target):
    mapped, left_out = ACCEPTED[source, target], LEFT_OUT[source, target]
    assert set(mapped) | set(left_out) == builtin_categories(source)
    assert not set(mapped) & set(left_out) and all(reason.strip() for reason in left_out.values())
    assert {c for accepted_ in mapped.values() for c in accepted_} <= builtin_categories(target)
    assert accepted(source, target, "no such category") == ()


def test_the_share_moves_when_a_query_is_moved_and_mistakes_land_in_their_cells(shared_workspace):
    photos, _ = synthetic_photos()
    ws = shared_workspace
    picked = [photos[i] for i in (0, 20, 40, 60)]
    hits = [ws.search(p, k=10).hits["category"].astype(str).tolist() for p in picked]
    # each query accepts exactly the category of its own top hit: its share is that category's share of its top 10
    queries = [Query(p, f"q{i}", (h[0],), str(i)) for i, (p, h) in enumerate(zip(picked, hits, strict=True))]
    expected = [np.mean([c == h[0] for c in h]) for h in hits]
    before = score(ws, queries)
    assert before["queries"] == 4 and before["top10_share"] == round(float(np.mean(expected)), 3)
    # moved: the first query now accepts a category none of its hits has, so its share drops to 0
    absent = next(c for c in ws.catalog.categories if c not in hits[0])
    moved = [Query(picked[0], "q0", (absent,), "0"), *queries[1:]]
    after = score(ws, moved)
    assert after["top10_share"] == round(float(np.mean([0.0, *expected[1:]])), 3) < before["top10_share"]
    assert after["per_category"]["q0"] == {"queries": 1, "share": 0.0}
    # the confusion count: each query's category against its top hit's category
    assert after["confusion"]["q0"] == {hits[0][0]: 1}


def test_rerank_puts_the_sure_category_first_and_says_so(shared_workspace, monkeypatch):
    ws = shared_workspace
    photos, _ = synthetic_photos()
    plain = ws.search(photos[3], k=10, rerank=False)
    assert plain.reranked_by is None
    monkeypatch.setattr(ws, "settings", ws.settings.replace(category_rerank=0.01))  # any prediction is sure enough
    reranked = ws.search(photos[3], k=10)
    top = reranked.predicted[0][0]
    assert reranked.reranked_by == top
    in_top = [c == top for c in reranked.hits["category"]]
    assert in_top == sorted(in_top, reverse=True)  # the sure category's items first, then the others
    pool = ws.exact.search(reranked.vector, RERANK_POOL)
    assert sum(in_top) == min(int(np.sum(ws.catalog.labels[pool.indices] == ws.catalog.categories.index(top))), 10)
    assert ws.search(photos[3], k=10, rerank=False).reranked_by is None  # the page's switch turns it off


def test_a_catalogue_too_small_for_its_pca_is_served_raw_features(tmp_path):
    settings = tiny_settings(tmp_path).replace(pca_min_fit_items=10_000)
    ws = Workspace.open(settings)
    assert ws.embedder.projection is None and not ws.store.verified("projection.npz")
    assert ws.embeddings.shape[1] == ws.embedder.feature_dim
    assert Workspace.is_built(settings)
    fitted = Workspace.open(settings.replace(pca_min_fit_items=0))
    assert fitted.embeddings.shape[1] == 16 and fitted.store.path != ws.store.path


def test_flip_averaging_gives_a_mirror_image_the_same_vector_and_its_own_key(tmp_path):
    settings = tiny_settings(tmp_path)
    flipped = Workspace.open(settings.replace(flip_average=True))
    plain = Workspace.open(settings)
    assert flipped.embedder.key != plain.embedder.key
    pixels = np.asarray(synthetic_photos()[0][5]).copy()
    pixels[:, : pixels.shape[1] // 3] = (200, 30, 30)  # a red band on the left: the photo is not symmetric
    photo = Image.fromarray(pixels)
    mirror = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    a, b = flipped.embed_photo(photo)[1], flipped.embed_photo(mirror)[1]
    assert np.allclose(a, b, atol=1e-4)
    c, d = plain.embed_photo(photo)[1], plain.embed_photo(mirror)[1]
    assert not np.allclose(c, d, atol=1e-4)


def test_the_confusion_table_puts_known_mistakes_in_their_cells():
    from core.search.metrics import confusion_table, row_shares

    names = ["Tees", "Shorts", "Pants"]
    true = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 2, 1, 2])  # one tee taken for shorts, one pair of shorts for pants
    table = confusion_table(true, predicted, names)
    assert table.loc["Tees", "Shorts"] == 1 and table.loc["Shorts", "Pants"] == 1 and table.loc["Tees", "Tees"] == 2
    assert table.values.sum() == 6 and list(table.columns) == names
    shares = row_shares(table)
    assert shares.loc["Tees"].tolist() == pytest.approx([2 / 3, 1 / 3, 0]) and shares.loc["Pants", "Pants"] == 1


@pytest.mark.parametrize("name", [GARMENT_PHOTOS, SHOP])
def test_the_shared_classes_name_real_categories_and_agree_with_the_accepted_map(name):
    from core.catalog.shared_categories import SHARED_CLASS, shared_class

    assert set(SHARED_CLASS[name]) <= builtin_categories(name)
    other = SHOP if name == GARMENT_PHOTOS else GARMENT_PHOTOS
    for category, shared in SHARED_CLASS[name].items():
        # a shared class joins only categories a person accepts for each other in that direction
        together = {c for c in builtin_categories(other) if shared_class(other, c) == shared}
        assert together and together <= set(accepted(name, other, category)), (category, together)
    assert shared_class(SHOP, "Watches") == "luma-shop: Watches"  # no counterpart: a class of its own


def test_the_benchmark_measures_a_given_run_on_both_targets(tmp_path):
    from core.bench.cross_domain import model_settings

    settings = tiny_settings(tmp_path, run="some-run")
    assert model_settings(settings, "luma-shop", "served").run == "some-run"
    assert model_settings(settings, "garment-photos", "served").catalog == "garment-photos"
    assert model_settings(settings, "luma-shop", "imagenet").run == ""
OTHER_STYLE = {"Square": "Box", "Disc": "Circle", "Bar": "Stick", "Ring": "Hoop"}


def other_style(seed: int):
    """The synthetic shapes drawn again (another jitter) under another catalogue's names: a second style."""
    from conftest import synthetic_arrays

    from core.catalog.base import Catalog
    from core.photo.domain import FashionMnistDomain

    def load(settings: Settings) -> Catalog:
        pixels, items = synthetic_arrays(seed)
        items["category"] = items["category"].map(OTHER_STYLE)
        return Catalog(name="synthetic-other", key=f"synthetic-other-{seed}", items=items,
                       categories=list(OTHER_STYLE.values()), domain=FashionMnistDomain(), pixels=pixels)

    return load


@pytest.fixture
def two_styles(monkeypatch):
    """Two tiny catalogues of one group in the shared category map (one shared class per shape); the second
    catalogue's loader can be swapped for another drawing of it (``use(seed)``)."""
    from core.catalog import registry, shared_categories

    def use(seed: int) -> None:
        monkeypatch.setitem(registry.SOURCES, "synthetic-other", other_style(seed))

    use(1)
    monkeypatch.setitem(registry.SOURCE_LABELS, "synthetic-other", "Synthetic shapes, another style (tests)")
    monkeypatch.setitem(shared_categories.SHARED_CLASS, "synthetic", {c: c.lower() for c in OTHER_STYLE})
    monkeypatch.setitem(shared_categories.SHARED_CLASS, "synthetic-other",
                        {theirs: ours.lower() for ours, theirs in OTHER_STYLE.items()})
    monkeypatch.setattr(shared_categories, "SHARED_GROUPS", [("synthetic", "synthetic-other")])
    return use


def test_the_shared_space_blends_own_and_shared_cosines_and_a_photo_finds_its_own_vector(two_styles, tmp_path):
    settings = tiny_settings(tmp_path).replace(shared_weight=0.75)
    ws = Workspace.open(settings)
    assert ws.shared is not None and set(ws.shared.projection.fitted_on) == {"synthetic", "synthetic-other"}
    own = Workspace.open(settings.replace(shared_weight=0.0))
    shared = ws.shared.projection(ws.shared.reference_vectors)
    assert ws.embeddings.shape == (len(own.embeddings), own.embeddings.shape[1] + shared.shape[1])
    i, j = 3, 40
    expected = 0.25 * float(own.embeddings[i] @ own.embeddings[j]) + 0.75 * float(shared[i] @ shared[j])
    assert float(ws.embeddings[i] @ ws.embeddings[j]) == pytest.approx(expected, abs=1e-5)
    # a query goes through the same two networks and the same blend as the catalogue's items
    photos, _ = synthetic_photos()
    assert np.allclose(ws.embed_photo(photos[5])[1], ws.embeddings[5], atol=1e-4)
    assert ws.describe()["shared_space"]["weight"] == 0.75 and own.shared is None
    assert own.describe()["shared_space"] is None


def test_the_shared_projection_is_keyed_by_every_catalogue_of_its_group(two_styles, tmp_path):
    settings = tiny_settings(tmp_path).replace(shared_weight=0.5)
    first = Workspace.open(settings).shared.projection
    folder = tmp_path / "artifacts" / "shared-projections"
    assert [p.name for p in folder.glob("*.npz")] == [f"discriminant-{first.key}.npz"]
    assert Workspace.open(settings).shared.projection.key == first.key  # loaded, not fitted again
    two_styles(2)  # the other catalogue changes: the projection is fitted again, under another key
    second = Workspace.open(settings).shared.projection
    assert second.key != first.key and len(list(folder.glob("*.npz"))) == 2
    # a catalogue outside every group is served its own vectors
    from core.catalog import shared_categories

    shared_categories.SHARED_GROUPS = []  # (restored by the fixture's monkeypatch)
    assert Workspace.open(settings).shared is None


def test_with_the_shared_space_a_photo_is_predicted_by_the_head_and_the_vote(two_styles, tmp_path):
    from test_train import TINY_RECIPE

    from core.search.workspace import HEAD_AND_VOTE
    from core.training.trainer import train

    settings = tiny_settings(tmp_path).replace(shared_weight=0.75)
    run = train(settings, TINY_RECIPE.replace(epochs=1))
    ws = Workspace.open(settings.replace(run=run.id))
    photo = synthetic_photos()[0][7]
    result = ws.search(photo, k=10)
    steps, vector, probs = ws.embed_photo(photo)
    vote = ws.vote(ws.index.search(vector, 10))
    assert result.predicted_by == HEAD_AND_VOTE
    assert dict(result.predicted)[result.predicted[0][0]] == pytest.approx(float(np.max((probs + vote) / 2)))
    assert np.allclose(ws.predict(photo).categories, (probs + vote) / 2)  # the Tags page agrees with the Search page
    plain = Workspace.open(settings.replace(run=run.id, shared_weight=0.0))
    assert plain.search(photo, k=10).predicted_by == "the fine-tuned category head"
