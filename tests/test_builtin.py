"""The built-in colour catalogues: they ship in the repository, open offline, keep groups in one split, have the
same key in every checkout, and are what scripts/build_catalogues.py makes from the source data sets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from core.catalog.registry import catalog_choices, open_catalog
from core.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"


@pytest.mark.parametrize("name, items, categories", [("garment-photos", 5096, 17), ("luma-shop", 440, 9)])
def test_a_builtin_catalogue_opens_from_the_repository(tmp_path, name, items, categories):
    settings = Settings(artifacts_dir=tmp_path / "a", catalog=name)
    catalog = open_catalog(settings)
    assert len(catalog) == items and len(catalog.categories) == categories and catalog.on_disk
    assert all(Path(p).is_relative_to(ROOT / "builtin") for p in catalog.items["path"])
    assert (catalog.items.groupby("group")["split"].nunique() == 1).all()  # a group never spans two splits
    share = (catalog.items["split"] == "test").mean()
    assert 0.12 <= share <= 0.16, share
    assert catalog.domain_batch([0]).shape == (1, 224, 224, 3)
    again = open_catalog(settings.replace(artifacts_dir=tmp_path / "b"))  # another place, another prepare
    assert again.key == catalog.key
    assert name in catalog_choices(settings) and not catalog_choices(settings)[name].startswith(name + " (")


def test_the_default_is_the_garment_photos():
    assert Settings().catalog == "garment-photos"


@pytest.mark.skipif(not (DATASETS / "luma-shop").is_dir(), reason="the source data sets are not beside the project")
def test_the_build_script_makes_what_ships(tmp_path):
    """Run on the shop (the smaller one): the same table and the same image bytes as in builtin/."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_catalogues.py"), "--out", str(tmp_path),
                    "--only", "luma-shop"], check=True, cwd=ROOT, capture_output=True)
    built, shipped = tmp_path / "luma-shop", ROOT / "builtin" / "luma-shop"
    assert (built / "items.csv").read_bytes() == (shipped / "items.csv").read_bytes()
    assert json.loads((built / "images.json").read_text()) == json.loads((shipped / "images.json").read_text())
    assert sorted(p.name for p in built.glob("LICENSE*")) == sorted(p.name for p in shipped.glob("LICENSE*"))


def test_every_builtin_name_is_registered_and_refused_for_a_users_catalogue(tmp_path):
    from core.catalog.builtin import builtin_names
    from core.catalog.prepare import prepare_catalog
    from core.catalog.registry import SOURCES
    from core.catalog.sources import CatalogError, SourceSpec

    assert set(builtin_names()) <= set(SOURCES)
    for name in builtin_names():
        with pytest.raises(CatalogError, match="not a built-in name"):
            prepare_catalog(SourceSpec(path=str(tmp_path)), Settings(artifacts_dir=tmp_path), name=name)


def test_a_damaged_copy_of_a_builtin_catalogue_is_prepared_again_from_what_ships(tmp_path, caplog):
    """Its prepared items table is a copy of what ships in builtin/, so damage there is repaired, not an error."""
    settings = Settings(artifacts_dir=tmp_path, catalog="luma-shop")
    good = open_catalog(settings).items
    table = tmp_path / "catalogs" / "luma-shop" / "items.parquet"
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0x01
    table.write_bytes(bytes(data))
    again = open_catalog(settings)
    assert "does not match its checksum" in caplog.text
    pd.testing.assert_frame_equal(again.items, good)


def test_results_read_like_a_shop(tmp_path):
    luma = open_catalog(Settings(artifacts_dir=tmp_path, catalog="luma-shop"))
    row = int((luma.items["id"] == "24-MB04").to_numpy().argmax())
    assert luma.headline(row) == ("Strive Shoulder Pack", "Bags · Black · 32.00")
    assert luma.item_tags(row) == []  # mined from descriptions: the tag head's targets, not shown as facts
    photos = open_catalog(Settings(artifacts_dir=tmp_path, catalog="garment-photos"))
    kids = int(photos.items["tags"].map(lambda tags: "kids" in tags).to_numpy().argmax())
    title, facts = photos.headline(kids)
    assert title == photos.items["category"][kids] and facts == ""
    shown = photos.item_tags(kids)  # its own tag, then its colours read from the photo, each with its source
    assert shown[0] == "kids" and 1 < len(shown) <= 4
    assert {photos.tag_sources[t] for t in shown[1:]} == {"colour from the photo"}
    assert len(photos.items["id"][kids]) == 8  # a short id, not a 36-character UUID


@pytest.mark.parametrize("name", ["garment-photos", "luma-shop"])
def test_a_builtin_catalogue_is_served_by_its_shipped_model(tmp_path, name):
    """Offline, from the repository: the shipped run is the one served, and its category head predicts what was
    recorded when it was shipped (check.json, the first 64 test items)."""
    import numpy as np

    from core.embedding.embedder import Embedder
    from core.search.serving import served_settings
    from core.search.workspace import serving_heads

    settings = served_settings(Settings(artifacts_dir=tmp_path, catalog=name))
    shipped = ROOT / "models" / settings.run
    assert settings.run and (shipped / "checkpoint-best.pt").is_file()
    catalog = open_catalog(settings)
    check = json.loads((shipped / "check.json").read_text())
    check = check["members"][name] if "members" in check else check  # a run trained on several catalogues
    assert check["catalog"] == catalog.key  # trained on exactly this catalogue
    rows = [int(np.flatnonzero(catalog.items["id"].to_numpy() == item)[0]) for item in check["ids"]]
    embedder = Embedder.from_settings(settings)
    heads = serving_heads(settings, catalog, embedder)
    probs = heads.category_probs(embedder.features(catalog.domain_batch(rows)))
    assert [catalog.categories[i] for i in probs.argmax(axis=1)] == check["predicted"]
    assert np.allclose(probs.max(axis=1), check["probability"], atol=2e-3)
    figures = json.loads((shipped / "test.json").read_text())
    figures = figures["members"][name] if "members" in figures else figures
    assert figures["catalog"] == name and figures["queries"] == (catalog.items["split"] == "test").sum()
    if name == "luma-shop":  # the shop's own columns reach the tag head, beside the words of its descriptions
        assert {"Blue", "Fleece", "Striped", "Men", "hoodie", "zip"} <= set(embedder.heads.tags)
        assert catalog.tag_sources["Blue"] == "colour" and catalog.tag_sources["zip"] == "description"
        # its tags are decided at the threshold its validation chose, the one its recorded figures used
        assert embedder.heads.tag_threshold == figures["tag_threshold"] != 0.5


def test_imagenet_features_stay_one_flag_away(tmp_path):
    from core.search.serving import served_settings

    assert served_settings(Settings(artifacts_dir=tmp_path, catalog="luma-shop", run="imagenet")).run == ""
    nothing_shipped = Settings(artifacts_dir=tmp_path, catalog="fashion-mnist")
    assert served_settings(nothing_shipped).run == ""


def test_the_mined_vocabulary_is_garment_language():
    from core.text.lexicon import FASHION_WORDS
    from core.text.tags import TagMining, mine_tags

    texts = ["Ideal for cold-weather training, the hoodie promises superior warmth with every wear. Zip pocket.",
             "You'll be fooled by how good this advanced fleece jacket looks beneath a total storm of rain.",
             "Moving through additional miles: a striped cotton tee with a relaxed fit."] * 3
    mined = mine_tags(texts, TagMining())
    assert set(mined.vocabulary) <= FASHION_WORDS
    assert {"hoodie", "fleece", "jacket", "tee", "cotton", "striped", "zip"} <= set(mined.vocabulary)
    assert not {"fooled", "beneath", "moving", "total", "good", "additional", "advanced"} & set(mined.vocabulary)
    everything = mine_tags(texts, TagMining(lexicon=None))  # without the lexicon the noise is back
    assert {"fooled", "advanced"} & set(everything.vocabulary)


def test_tag_f1_with_a_one_tag_vocabulary():
    """The garment photos have one tag ("kids"): scikit-learn would call that binary and refuse the samples F1."""
    import numpy as np

    from core.search.metrics import tag_f1

    assert tag_f1(np.array([[1], [0], [0]]), np.array([[1], [0], [1]])) == pytest.approx(
        {"tag_f1_micro": 2 / 3, "tag_f1_macro": 2 / 3, "tag_f1_samples": 2 / 3})
