"""The built-in colour catalogues: they ship in the repository, open offline, keep groups in one split, have the
same key in every checkout, and are what scripts/build_catalogues.py makes from the source data sets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.catalog import catalog_choices, open_catalog
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


def test_results_read_like_a_shop(tmp_path):
    luma = open_catalog(Settings(artifacts_dir=tmp_path, catalog="luma-shop"))
    row = int((luma.items["id"] == "24-MB04").to_numpy().argmax())
    assert luma.headline(row) == ("Strive Shoulder Pack", "Bags · Black · 32.00")
    assert luma.item_tags(row) == []  # mined from descriptions: the tag head's targets, not shown as facts
    photos = open_catalog(Settings(artifacts_dir=tmp_path, catalog="garment-photos"))
    kids = int(photos.items["tags"].map(len).to_numpy().argmax())
    title, facts = photos.headline(kids)
    assert title == photos.items["category"][kids] and facts == "" and photos.item_tags(kids) == ["kids"]
    assert len(photos.items["id"][kids]) == 8  # a short id, not a 36-character UUID
