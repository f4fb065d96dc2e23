"""A prepared file catalogue end to end: tags mined from its text, streaming resumable extraction, search that
finds near-duplicates first, uploads converted like items, and fine-tuning on its own categories and tags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import COLOURS, GARMENTS, encoded, garment_file_photo, tiny_settings, write_photo_records
from PIL import Image, ImageEnhance

from core.catalog.prepare import prepare_catalog
from core.catalog.registry import open_catalog
from core.catalog.sources import SourceSpec
from core.config import TrainConfig
from core.embedding.embedder import Embedder
from core.embedding.sequential_runner import SequentialRunner
from core.search.workspace import Workspace
from core.text import tags

DESCRIPTIONS = [
    "Slim black cotton shirt with long sleeves.",
    "Black cotton shirt with a pointed collar.",
    "Floral summer dress in soft viscose.",
    "Soft floral dress with short sleeves.",
    "Relaxed denim jacket with metal buttons.",
    "A dress in black with long sleeves.",
]


def test_tags_are_mined_from_descriptions_with_an_exact_vocabulary():
    mined = tags.mine_tags(DESCRIPTIONS, tags.TagMining(nouns=3, adjectives=2, per_item=10))
    # ranked by the number of items whose top terms hold them, then a-z: dress 3, sleeve 3, cotton 2, shirt 2
    assert mined.nouns == ["dress", "sleeve", "cotton"]
    assert mined.adjectives == ["black", "floral"]  # black is an adjective in 2 of its 3 uses
    assert mined.vocabulary == ["black", "cotton", "dress", "floral", "sleeve"]
    assert mined.item_tags[0] == ["cotton", "black", "sleeve"]  # TF-IDF order: cotton is the rarer word
    assert mined.item_tags[4] == []  # the jacket shares no frequent term


def test_part_of_speech_follows_context_and_lemmatises_nouns():
    words = dict(tags.candidate_words("Printed v-neck dress with long sleeves and two pockets, in black"))
    assert words == {"printed": "ADJ", "v-neck": "NOUN", "dress": "NOUN", "long": "ADJ", "sleeve": "NOUN",
                     "pocket": "NOUN", "black": "NOUN"}


def test_per_item_keeps_only_the_top_terms_by_tfidf():
    text = ["red wool coat"] * 3 + ["red silk scarf"]
    mined = tags.mine_tags(text, tags.TagMining(nouns=5, adjectives=5, per_item=1))
    assert [len(t) for t in mined.item_tags] == [1, 1, 1, 1]
    assert mined.item_tags[3] in (["scarf"], ["silk"])  # the rare words outrank the common "red"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A CSV catalogue of 12 colour packshots with descriptions, prepared at 64 px."""
    root = tmp_path_factory.mktemp("shop")
    records = write_photo_records(root / "data")
    pd.DataFrame(records).to_csv(root / "data" / "products.csv", index=False)
    settings = tiny_settings(root, catalog="shop", image_size=0)
    prepare_catalog(SourceSpec(path=str(root / "data" / "products.csv")), settings, name="shop", photo_size=64)
    return settings


def test_mined_tags_reach_the_items_table(shop):
    catalog = open_catalog(shop)
    vocabulary = tags.vocabulary(catalog.items)
    assert {"red", "navy", "green", "shirt", "skirt", "scarf"} <= set(vocabulary)
    first = catalog.items.iloc[0]
    assert first["category"] == "Shirt" and "shirt" in list(first["tags"])


def test_decoding_in_worker_processes_gives_the_same_features(shop):
    catalog = open_catalog(shop)
    embedder = Embedder.from_settings(shop.for_catalog(catalog.domain.input_size))
    inline = SequentialRunner(embedder, batch_size=5, workers=0).run(catalog.pixels)
    workers = SequentialRunner(embedder, batch_size=5, workers=2).run(catalog.pixels)
    np.testing.assert_allclose(inline, workers, atol=1e-5)
    assert embedder.runtime == "onnx"  # two batches in flight, each on its own single-threaded session
    streams = SequentialRunner(embedder, batch_size=5, workers=2, streams=(2, 1)).run(catalog.pixels)
    np.testing.assert_allclose(inline, streams, atol=1e-5)


def test_a_catalogue_pass_runs_two_onnx_streams_on_two_cores_or_more():
    from core.config import Settings
    from core.threads import embedding_streams

    assert embedding_streams(Settings(num_threads=2), "onnx") == (2, 1)
    assert embedding_streams(Settings(num_threads=16), "onnx") == (2, 8)
    assert embedding_streams(Settings(num_threads=1), "onnx") == (1, 1)
    assert embedding_streams(Settings(num_threads=2), "torchscript") == (1, 2)


def test_extraction_killed_at_60_percent_resumes_instead_of_restarting(shop, tmp_path):
    catalog = open_catalog(shop)
    embedder = Embedder.from_settings(shop.for_catalog(catalog.domain.input_size))
    out = tmp_path / "features.partial.npy"

    class Killed(Exception):
        pass

    def kill_at_60_percent(stage, done, total):
        if done >= 0.6 * total:
            raise Killed

    runner = SequentialRunner(embedder, batch_size=2, progress=kill_at_60_percent, commit_every_s=0.0)
    with pytest.raises(Killed):
        runner.run(catalog.pixels, out=out)
    embedded = []
    original = embedder.features

    def counting(batch):
        embedded.append(len(batch))
        return original(batch)

    embedder.features = counting
    resumed = SequentialRunner(embedder, batch_size=2, commit_every_s=0.0).run(catalog.pixels, out=out)
    assert sum(embedded) == 12 - 8  # rows 0..7 were committed before the kill
    embedder.features = original
    fresh = SequentialRunner(embedder, batch_size=2).run(catalog.pixels)
    np.testing.assert_allclose(np.asarray(resumed), fresh, atol=1e-5)


def product_photo(category: str, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """A distinct product of a category: its shape in its own colour, with its own stripe pattern and print."""
    photo = garment_file_photo(category, list(COLOURS)[int(rng.integers(3))], rng, size=size)
    pixels = np.asarray(photo).copy()
    garment = pixels.min(axis=2) < 240
    yy, xx = np.mgrid[:size, :size]
    angle, period = rng.uniform(0, np.pi), rng.uniform(5, 16)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > rng.uniform(-0.3, 0.5)
    pixels[garment & stripes] = rng.integers(0, 256, 3)
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    pixels[(garment & ((yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(20, 90)))] = rng.integers(0, 256, 3)
    return Image.fromarray(pixels)


def near_duplicate(photo: Image.Image) -> Image.Image:
    """The same product shot again: shifted a little, a touch brighter, JPEG re-compressed."""
    shifted = Image.new("RGB", photo.size, (255, 255, 255))
    shifted.paste(photo, (3, 2))
    return Image.open(__import__("io").BytesIO(encoded(ImageEnhance.Brightness(shifted).enhance(1.05), "JPEG",
                                                        quality=70)))


def test_near_duplicates_are_found_first_with_the_real_backbone(tmp_path):
    """Eight products photographed twice among 40 other products of the same categories: with the packaged
    ImageNet weights, each shot's nearest item is its twin, and an upload of a third shot finds both."""
    rng = np.random.default_rng(7)
    root = tmp_path / "dupes"
    folders = {category: root / category for category in GARMENTS}
    for folder in folders.values():
        folder.mkdir(parents=True)
    twins = []
    for i in range(48):
        category = list(GARMENTS)[i % 3]
        photo = product_photo(category, rng)
        photo.save(folders[category] / f"{i:02d}.jpg", quality=92)
        if i < 8:
            near_duplicate(photo).save(folders[category] / f"{i:02d}-again.jpg", quality=92)
            twins.append((f"{category}/{i:02d}", f"{category}/{i:02d}-again", photo))
    settings = tiny_settings(tmp_path, catalog="dupes", backbone="efficientnet_lite0", image_size=0, pca_dim=0)
    prepare_catalog(SourceSpec(path=str(root)), settings, name="dupes", photo_size=96)
    ws = Workspace.open(settings)
    ids = list(ws.catalog.items["id"])
    for first, second, photo in twins:
        assert ws.search_item(ids.index(first), k=1).hits.iloc[0]["id"] == second
        assert ws.search_item(ids.index(second), k=1).hits.iloc[0]["id"] == first
        third = encoded(ImageEnhance.Contrast(photo).enhance(0.9), "JPEG", quality=80)  # a third shot
        assert set(ws.search(third, k=2).hits["id"]) == {first, second}


def test_an_upload_of_a_catalogue_file_is_converted_exactly_like_the_item(shop):
    ws = Workspace.open(shop)
    row = 7
    result = ws.search(open(ws.catalog.items.loc[row, "path"], "rb").read(), k=1)
    assert result.hits.iloc[0]["row"] == row and result.hits.iloc[0]["score"] > 0.9999
    np.testing.assert_array_equal(np.asarray(result.query_image), ws.catalog.domain_batch([row])[0])
    assert result.query_image.size == (64, 64) and ws.embedder.transform.size == 64  # image_size 0: the catalogue's


def test_fine_tuning_uses_the_catalogues_categories_and_mined_tags(shop):
    from core.training.trainer import train

    recipe = TrainConfig(epochs=2, batch_size=4, image_size=32, embedding_dim=16, warmup_epochs=0)
    run = train(shop, recipe)
    info = run.info()
    catalog = open_catalog(shop)
    assert info["categories"] == sorted(GARMENTS) == catalog.categories
    assert info["tags"] == tags.vocabulary(catalog.items) and "cotton" in info["tags"]
    ws = Workspace.open(shop.replace(run=run.id))
    assert ws.category_probs.shape == (12, 3) and ws.tag_probs().shape == (12, len(info["tags"]))
    assert "top1" in run.test_figures()
