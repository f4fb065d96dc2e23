"""Colours read from the pixels (core.photo.colour): named right on synthetic photos, cached with the catalogue by
prepare, tags with their source that the words search finds, kept out of the tag head, and the same for an upload."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_settings
from PIL import Image, ImageDraw

from core.catalog.base import PHOTO_COLOURS
from core.catalog.builtin import Builtin, write_manifest
from core.catalog.prepare import prepare_catalog
from core.catalog.registry import _open_builtin, open_catalog
from core.catalog.sources import SourceSpec, TableColumns
from core.photo import colour
from core.photo.colour import COLOUR_TERMS, PROTOTYPES, garment_colours
from core.photo.domain import PhotoDomain
from core.photo.query_steps import prepare_query
from core.search.text_search import TextIndex


def garment_on(background, garment, size=(90, 120), stripes=None, seed=0) -> Image.Image:
    """A shirt-like block in the middle of a photo; ``background`` is a colour or "bed" (a red, textured cover),
    ``stripes`` a second colour the garment is striped with."""
    rng = np.random.default_rng(seed)
    w, h = size
    if background == "bed":
        pixels = np.clip(np.array([170, 35, 45]) + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
    else:
        image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    box = (w * 0.2, h * 0.18, w * 0.8, h * 0.85)
    draw.rectangle(box, fill=garment)
    if stripes is not None:
        for y in range(int(box[1]), int(box[3]), 8):
            draw.rectangle((box[0], y, box[2], y + 3), fill=stripes)
    return image


def test_a_red_square_on_white_is_red():
    found = garment_colours(garment_on((255, 255, 255), (200, 20, 30)))
    assert found.names == ("red",)
    assert found.tags == ["Red"] and found.shares[0] > 0.9
    assert np.abs(np.subtract(found.swatches[0], (200, 20, 30))).max() < 12  # the swatch is the garment's colour


def test_on_a_red_bed_a_blue_shirt_is_blue():
    assert garment_colours(garment_on("bed", (30, 70, 190))).names == ("blue",)


def test_a_black_and_white_stripe_is_both():
    found = garment_colours(garment_on((150, 120, 90), (250, 250, 250), stripes=(10, 10, 10)))
    assert set(found.names) == {"black", "white"}


def test_the_skin_of_a_wearer_is_not_the_garment():
    image = garment_on((120, 120, 125), (40, 140, 60))  # a green shirt on a grey wall …
    draw = ImageDraw.Draw(image)
    draw.ellipse((35, 2, 55, 22), fill=(224, 172, 140))  # … under a face
    draw.rectangle((6, 30, 18, 90), fill=(224, 172, 140))  # … between two arms
    draw.rectangle((72, 30, 84, 90), fill=(224, 172, 140))
    assert garment_colours(image).names == ("green",)


@pytest.mark.parametrize("term", COLOUR_TERMS)
def test_every_basic_term_names_its_own_colour(term):
    """A flat garment in each term's first prototype, on a mid-grey floor (white on white would be no garment)."""
    background = (60, 60, 60) if term in ("white", "beige", "yellow") else (235, 235, 235)
    assert garment_colours(garment_on(background, PROTOTYPES[term][0])).names[0] == term


def write_catalogue(root, tags=None) -> SourceSpec:
    """Three photo files and their table: a red shirt on white, a blue shirt on a red bed, a black-and-white stripe."""
    (root / "images").mkdir(parents=True)
    photos = {"red-shirt": garment_on((255, 255, 255), (200, 20, 30)), "blue-shirt": garment_on("bed", (30, 70, 190)),
              "striped-shirt": garment_on((150, 120, 90), (250, 250, 250), stripes=(10, 10, 10))}
    records = []
    for i, (name, photo) in enumerate(photos.items()):
        photo.save(root / "images" / f"{name}.png")
        records.append({"id": name, "image": f"images/{name}.png", "category": "Shirt",
                        "tags": (tags or ["kids|", "", ""])[i]})
    pd.DataFrame(records).to_csv(root / "items.csv", index=False)
    return SourceSpec(path=str(root / "items.csv"))


def test_prepare_names_the_colours_and_makes_them_tags_with_their_source(tmp_path):
    settings = tiny_settings(tmp_path, catalog="shirts", image_size=0)
    prepare_catalog(write_catalogue(tmp_path / "shirts"), settings, name="shirts", photo_size=64)
    catalog = open_catalog(settings)
    named = dict(zip(catalog.items["id"], catalog.items[PHOTO_COLOURS].map(tuple), strict=True))
    assert named["red-shirt"] == ("red",) and named["blue-shirt"] == ("blue",)
    assert set(named["striped-shirt"]) == {"black", "white"}
    assert catalog.item_tags(0) == ["kids", "Red"]  # the source's own tags first, then the photo's colours
    assert {catalog.tag_sources[t] for t in ("Red", "Blue", "Black", "White")} == {colour.TAG_SOURCE}
    assert catalog.tag_sources["kids"] == "tags"
    assert catalog.trained_tags() == ["kids"]  # the tag head learns the source's tags, not a pixel rule
    assert catalog.photo_colours(1).names == ("blue",)  # with swatches, for the pages
    info = json.loads((tmp_path / "artifacts" / "catalogs" / "shirts" / "catalog.json").read_text())
    assert info["colour_version"] == colour.COLOUR_VERSION and "Blue" in info["tags"]


def test_the_colour_tags_reach_the_words_search(tmp_path):
    settings = tiny_settings(tmp_path, catalog="shirts", image_size=0)
    prepare_catalog(write_catalogue(tmp_path / "shirts"), settings, name="shirts", photo_size=64)
    catalog = open_catalog(settings)
    index = TextIndex.of(catalog)
    scores = index.scores("blue")
    assert catalog.items["id"].iloc[int(np.argmax(scores))] == "blue-shirt"
    assert (scores > 0).sum() == 1  # only the blue shirt says blue
    assert index.matched(int(np.argmax(scores)), "blue") == ["blue"]


def test_a_source_that_names_colours_keeps_its_own(tmp_path):
    settings = tiny_settings(tmp_path, catalog="shirts", image_size=0)
    spec = write_catalogue(tmp_path / "shirts", tags=["Crimson|Red", "navy", "Gray"])
    prepare_catalog(spec, settings, name="shirts", photo_size=64)
    catalog = open_catalog(settings)
    assert catalog.item_tags(2) == ["Gray"]  # not "Black", "White" beside the source's word
    assert colour.TAG_SOURCE not in catalog.tag_sources.values()
    assert set(catalog.items[PHOTO_COLOURS].iloc[2]) == {"black", "white"}  # still read, for the pages


def test_a_built_in_copy_named_by_an_older_colour_version_is_prepared_again_under_the_same_key(tmp_path):
    write_catalogue(tmp_path / "builtin" / "tiny")
    write_manifest(tmp_path / "builtin" / "tiny")
    settings = tiny_settings(tmp_path, builtin_dir=tmp_path / "builtin", image_size=0)
    builtin = Builtin("tiny", "Tiny", "tiny", TableColumns())
    first = _open_builtin(settings, builtin)
    path = tmp_path / "artifacts" / "catalogs" / "tiny" / "catalog.json"
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "colour_version": 0, "tags": ["kids"]}))
    again = _open_builtin(settings, builtin)
    assert json.loads(path.read_text())["colour_version"] == colour.COLOUR_VERSION  # prepared again …
    assert again.key == first.key  # … under the key its embeddings and shipped model are found by


def test_an_upload_gets_its_colours_the_same_way_as_a_catalogue_item():
    photo = garment_on("bed", (30, 70, 190), size=(300, 400))
    steps = prepare_query(photo, PhotoDomain(size=64), isolate_garment=False)
    assert steps.colours == garment_colours(photo) and steps.colours.names == ("blue",)
    strip = steps.colours.swatches_image(side=20)
    assert strip.size == (20, 20) and strip.getpixel((10, 10)) == steps.colours.swatches[0]
    cropped = prepare_query(photo, PhotoDomain(size=64), isolate_garment=False, box=(0, 0, 300, 40))
    assert cropped.colours.names == ("red",)  # inside the user's crop: only the bed


def test_the_colour_benchmark_draws_each_photo_with_its_colours(tmp_path):
    from core.bench import benchmark_module

    bench = benchmark_module("colour")
    assert not bench.SERVED and bench.shop_term("Gray") == "grey" and bench.shop_term("Lavender") == "purple"
    settings = tiny_settings(tmp_path, catalog="shirts", image_size=0)
    prepare_catalog(write_catalogue(tmp_path / "shirts"), settings, name="shirts", photo_size=64)
    catalog = open_catalog(settings)
    sheet = Image.open(bench.contact_sheet(catalog, np.arange(3), tmp_path / "sheet.png", columns=2,
                                           truth={0: "red", 1: "blue", 2: "black"}))
    assert sheet.size == (2 * bench.CELL, 2 * (bench.CELL + bench.CAPTION))
    swatch = np.asarray(sheet)[bench.CELL + 2 + 14 + 5, 4 + 5]  # the first photo's first swatch, under its label
    assert np.abs(swatch.astype(int) - (200, 20, 30)).max() < 12
