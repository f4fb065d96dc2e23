"""Training on several catalogues at once (core/catalog/union.py): two tiny catalogues of the same garments in two
photo styles, trained as one. Groups stay in one split across catalogues, the heads learn, the two styles' vectors of
one shared class move closer, an interrupted run resumes exactly, and the run serves each member catalogue."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import SHAPES, encoded, synthetic_arrays, synthetic_photos, tiny_settings
from test_train import _trainer, assert_an_interrupted_run_resumes_to_the_same_weights

from core.catalog.base import Catalog
from core.catalog.registry import open_catalog, register_source
from core.catalog.shared_categories import SHARED_CLASS
from core.catalog.splits import Splits
from core.catalog.union import held_out_everywhere, member_names
from core.config import TrainConfig
from core.embedding.embedder import Embedder
from core.model.runs import list_runs
from core.photo.domain import FashionMnistDomain
from core.search.serving import served_run, ship_run
from core.search.workspace import Workspace, member_heads, serving_heads
from core.training.trainer import Trainer, train

FLAT, WORN = "synthetic", "synthetic-worn"
UNION = f"{FLAT}+{WORN}"
WORN_NAMES = {shape: shape + "s" for shape in SHAPES}  # "Square" here is "Squares" there, as "T-Shirt" is "Tees"
RECIPE = TrainConfig(epochs=6, batch_size=16, lr=3e-3, image_size=32, embedding_dim=32, warmup_epochs=1,
                     freeze="full", triplet_weight=0.5)


def worn_style(pixels: np.ndarray, seed: int = 1) -> np.ndarray:
    """The same garments photographed another way: on a bright, noisy background instead of black, and dimmer
    (a garment worn on a bed or a body, not laid flat on a backdrop)."""
    rng = np.random.default_rng(seed)
    background = pixels < 20
    styled = (pixels.astype(np.float32) * 0.6).astype(np.float32)
    noise = rng.normal(170, 25, pixels.shape).astype(np.float32)
    return np.clip(np.where(background, noise, styled), 0, 255).astype(np.uint8)


def with_groups(items, test_from: int):
    """Group = one garment (two shots of it per group, shared by both catalogues); shots ``test_from``.. held out."""
    items = items.copy()
    number = items["id"].str.rsplit("-", n=1).str[1].astype(int)
    items["group"] = items["category"].str.lower() + "-" + (number // 2).astype(str)
    items["split"] = np.where(number >= test_from, "test", "train")
    return items


@register_source(FLAT + "-grouped", "Synthetic shapes with groups (tests)")
def load_flat(settings) -> Catalog:
    pixels, items = synthetic_arrays()
    key = FLAT + "-grouped-" + hashlib.blake2b(pixels.tobytes(), digest_size=6).hexdigest()
    return Catalog(name=FLAT, key=key, items=with_groups(items, 12), categories=list(SHAPES),
                   domain=FashionMnistDomain(), pixels=pixels)


@register_source(WORN, "Synthetic shapes, worn style (tests)")
def load_worn(settings) -> Catalog:
    pixels, items = synthetic_arrays(seed=1)
    pixels = worn_style(pixels)
    items = with_groups(items, 14)  # holds out less than the flat one: group 6 is train here, test there
    items["category"] = items["category"].map(WORN_NAMES)
    key = WORN + "-" + hashlib.blake2b(pixels.tobytes(), digest_size=6).hexdigest()
    return Catalog(name=WORN, key=key, items=items, categories=[WORN_NAMES[s] for s in SHAPES],
                   domain=FashionMnistDomain(), pixels=pixels)


@pytest.fixture(autouse=True)
def shared_names(monkeypatch):
    """The worn catalogue's names map onto the flat one's, as the built-in shop's "Tees" map onto "tee"; the flat
    one is opened under its grouped variant (its name stays "synthetic")."""
    from core.catalog import registry

    monkeypatch.setitem(SHARED_CLASS, FLAT, {shape: shape for shape in SHAPES})
    monkeypatch.setitem(SHARED_CLASS, WORN, {v: k for k, v in WORN_NAMES.items()})
    monkeypatch.setitem(registry.SOURCES, FLAT, registry.SOURCES[FLAT + "-grouped"])


def union_settings(tmp, **changes):
    return tiny_settings(tmp, catalog=UNION, **changes)


def test_member_names_and_the_shared_classes(tmp_path):
    assert member_names(UNION) == [FLAT, WORN] and member_names(FLAT) == [FLAT]
    union = open_catalog(union_settings(tmp_path))
    assert union.categories == list(SHAPES) and len(union) == 128
    assert union.members == {FLAT: open_catalog(tiny_settings(tmp_path)).key,
                             WORN: open_catalog(tiny_settings(tmp_path, catalog=WORN)).key}
    worn = union.items[union.items["member"] == WORN]
    assert (worn["category"] == worn["member_category"].str.rstrip("s")).all()
    assert (union.items["label"] == union.items["category"].map(SHAPES.index)).all()
    assert union.items["id"].is_unique  # both members have an item "square-00"


def test_each_group_stays_in_one_split_across_catalogues(tmp_path):
    union = open_catalog(union_settings(tmp_path))
    items = union.items
    assert (items.groupby("group")["split"].nunique() == 1).all()
    # group 6 of each shape is test in the flat catalogue: its worn shots are held out too, never trained on
    worn6 = items[(items["member"] == WORN) & items["group"].str.endswith("-6")]
    assert len(worn6) == 8 and (worn6["split"] == "test").all()
    assert (items.loc[items["member"] == FLAT, "split"].to_numpy()
            == open_catalog(tiny_settings(tmp_path)).items["split"].to_numpy()).all()
    splits = Splits.of(union, RECIPE)
    train_groups = set(items["group"].iloc[splits.train])
    assert train_groups.isdisjoint(items["group"].iloc[splits.val])
    assert train_groups.isdisjoint(items["group"].iloc[splits.test])


def test_held_out_anywhere_is_held_out_everywhere():
    import pandas as pd

    items = pd.DataFrame({"group": ["a", "a", "b", "b", "c"], "split": ["train", "test", "train", "train", "test"]})
    assert held_out_everywhere(items).tolist() == ["test", "test", "train", "train", "test"]


def cross_style_gap(trainer: Trainer) -> float:
    """Mean cosine of a flat and a worn shot of the same shared class, less that of different classes, over the
    held-out items: how much closer a garment's two styles are than two different garments."""
    items = trainer.catalog.items
    rows = np.flatnonzero(items["split"].to_numpy() == "test")
    vectors = trainer.predict(rows)["embeddings"]
    flat, worn = (items["member"].to_numpy()[rows] == name for name in (FLAT, WORN))
    labels = items["label"].to_numpy()[rows]
    cosine = vectors[flat] @ vectors[worn].T
    same = labels[flat][:, None] == labels[worn][None, :]
    return float(cosine[same].mean() - cosine[~same].mean())


def test_training_both_styles_learns_the_heads_and_brings_the_styles_together(tmp_path):
    trainer = _trainer(union_settings(tmp_path), RECIPE)
    before = cross_style_gap(trainer)
    history = trainer.fit()
    after = cross_style_gap(trainer)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_top1"] >= 0.75  # 4 shared classes over both styles: chance is 25 %
    # at the start the random network sees mostly the style; after training a class is closer across styles
    assert after > before + 0.2 and after > 0.2, (before, after)


def test_an_interrupted_union_run_resumes_to_the_same_weights(tmp_path):
    a, b = union_settings(tmp_path / "a"), union_settings(tmp_path / "b")
    assert_an_interrupted_run_resumes_to_the_same_weights(a, b, RECIPE.replace(epochs=2))


def test_a_union_run_serves_each_member_catalogue(tmp_path):
    settings = union_settings(tmp_path)
    run = train(settings, RECIPE.replace(epochs=2))
    figures = run.test_figures()
    # each member on its own test split (the worn one holds out fewer shots than the union does)
    assert set(figures["members"]) == {FLAT, WORN} and figures["queries"] == 16 + 8
    assert figures["members"][WORN]["classifier"].startswith("its own category head")
    assert run.info()["members"] == open_catalog(settings).members
    photos, _ = synthetic_photos()
    union_heads = Embedder.from_settings(settings.replace(run=run.id)).heads
    for member in (FLAT, WORN):
        member_settings = tiny_settings(tmp_path, catalog=member)
        key = open_catalog(member_settings).key
        assert served_run(member_settings, key).id == run.id  # the newest finished run of either catalogue
        assert [r.id for r in list_runs(member_settings, key)] == [run.id]
        ws = Workspace.open(member_settings.replace(run=run.id))
        assert ws.embeddings.shape == (64, RECIPE.embedding_dim)
        # each member's own head, fitted on its train items after training, in the catalogue's category order
        assert ws.category_probs.shape == (64, 4) and np.allclose(np.sum(ws.category_probs, axis=1), 1, atol=1e-5)
        assert ws.embedder.heads.categories == ws.catalog.categories
        result = ws.search(encoded(photos[52]), k=5)
        assert result.predicted_by.startswith("its own category head")
        assert figures["members"][member]["top1"] >= 0.5  # chance is 25 %
        # without an own head, the union's head over shapes mapped back: one category per class here, so the
        # member's probabilities are the union head's, class by class
        mapped = member_heads(union_heads, ws.catalog)
        features = ws.embedder.features(ws.catalog.domain_batch(np.arange(8)))
        order = [union_heads.categories.index(c.rstrip("s")) for c in ws.catalog.categories]
        assert np.allclose(mapped.category_probs(features), union_heads.category_probs(features)[:, order],
                           atol=1e-5)
        assert Workspace.is_built(member_settings.replace(run=run.id))
        assert np.array_equal(ws.validation_rows(), ws.catalog.query_rows())  # the union's own rows are not its
    assert f"on {UNION}" in run.label()
    # shipped, it records what it predicts on each member, and the served heads reproduce it
    import json

    shipped = ship_run(settings.replace(shipped_runs_dir=tmp_path / "models"), run.id)
    check = json.loads((shipped / "check.json").read_text())["members"]
    for member in (FLAT, WORN):
        member_settings = tiny_settings(tmp_path, catalog=member, run=run.id)
        catalog, embedder = open_catalog(member_settings), Embedder.from_settings(member_settings)
        assert check[member]["catalog"] == catalog.key
        assert len(check[member]["ids"]) == (16 if member == FLAT else 8)  # each member's own test split
        rows = [int(np.flatnonzero(catalog.items["id"].to_numpy() == i)[0]) for i in check[member]["ids"]]
        probs = serving_heads(member_settings, catalog, embedder).category_probs(
            embedder.features(catalog.domain_batch(rows)))
        assert [catalog.categories[i] for i in probs.argmax(1)] == check[member]["predicted"]
        assert set(check[member]["predicted"]) <= set(catalog.categories)
    # a catalogue that was not a member, with the union's categories, is served with the head as any run's own
    other = Workspace.open(tiny_settings(tmp_path, catalog="synthetic-untagged").replace(run=run.id))
    assert other.search(encoded(photos[52]), k=5).predicted_by == "the fine-tuned category head"


def test_a_heads_only_union_run_serves_from_its_cached_features_and_shares_them(tmp_path):
    """The members are indexed from the trainer's cached backbone features (no second backbone pass), with the
    vectors an embedding pass gives; a second heads-only recipe at the same size borrows the cache."""
    settings = union_settings(tmp_path)
    config = RECIPE.replace(freeze="heads", epochs=2, triplet_weight=0.0)
    run = train(settings, config)
    ws = Workspace.open(tiny_settings(tmp_path, catalog=WORN, run=run.id))
    assert ws.store.meta()["files"]["embeddings.npy"]["runner"] == "the trainer's features of every item"
    rows = np.arange(0, 64, 7)
    fresh = ws.embedder(ws.catalog.domain_batch(rows))
    assert np.allclose(np.asarray(ws.embeddings)[rows], fresh, atol=1e-4)
    other = _trainer(settings, config.replace(lr=1e-3))
    other.fit()
    record = other.run.path / "meta.json"
    assert run.id in record.read_text()  # borrowed_from
    assert np.array_equal(np.load(other.run.path / "features-32px.npy"), np.load(run.path / "features-32px.npy"))


def test_balanced_epochs_draw_each_catalogue_equally_often(tmp_path, monkeypatch):
    from core.catalog import registry

    def fewer_worn(settings) -> Catalog:  # a third of the worn shots: the shop beside the phone photos
        worn = load_worn(settings)
        keep = np.flatnonzero(np.arange(len(worn)) % 3 == 0)
        worn.items, worn.pixels = worn.items.iloc[keep].reset_index(drop=True), worn.pixels[keep]
        worn.key += "-third"
        return worn

    monkeypatch.setitem(registry.SOURCES, WORN, fewer_worn)
    union = open_catalog(union_settings(tmp_path))
    member_of = union.items["member"].to_numpy()
    plain = _trainer(union_settings(tmp_path), RECIPE)
    balanced = _trainer(union_settings(tmp_path), RECIPE.replace(balance_catalogues=True))
    counts = {name: int(np.sum(member_of[balanced.train_rows] == name)) for name in (FLAT, WORN)}
    assert counts[FLAT] == counts[WORN] == max(np.sum(member_of[plain.train_rows] == name) for name in counts)
    assert len(balanced.train_rows) > len(plain.train_rows)
    assert set(balanced.train_rows) == set(plain.splits.train)  # repeats, never a validation or test row
    assert plain.run.id != balanced.run.id and "balance_catalogues" not in RECIPE.identity()


def test_a_shared_class_head_maps_back_to_a_catalogues_categories_by_their_share():
    from core.embedding.embedder import Heads

    # classes tee, pants; the catalogue has T-Shirt and Polo (both tee, 3:1 in its train split), Pants, and Dress,
    # which the union never saw
    heads = Heads(["tee", "pants"], np.eye(2, dtype=np.float32), np.zeros(2, np.float32), [])
    mapped = heads.mapped(["T-Shirt", "Polo", "Pants", "Dress"], ["tee", "tee", "pants", "Dress"],
                          np.array([0.75, 0.25, 1.0, 1.0]), "mapped")
    features = np.array([[np.log(3.0), 0.0]], np.float32)  # p(tee) = 0.75, p(pants) = 0.25
    assert np.allclose(mapped.category_probs(features), [[0.5625, 0.1875, 0.25, 0.0]], atol=1e-6)
    assert mapped.categories == ["T-Shirt", "Polo", "Pants", "Dress"] and mapped.source == "mapped"


def test_a_union_run_is_served_without_the_discriminants_blend(tmp_path, monkeypatch):
    """A run trained on a group's catalogues together learned its own shared space: the ImageNet discriminant of
    core.search.shared_space is not blended into its vectors (its figures were measured without), while the same
    catalogue's ImageNet features still get it."""
    from core.catalog import shared_categories

    monkeypatch.setattr(shared_categories, "SHARED_GROUPS", [(FLAT, WORN)])
    settings = union_settings(tmp_path).replace(shared_weight=0.75)
    run = train(settings, RECIPE.replace(epochs=1))
    member = settings.replace(catalog=WORN)
    assert Workspace.open(member.replace(run=run.id)).shared is None
    assert Workspace.open(member).shared is not None
