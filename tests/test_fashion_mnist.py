"""The built-in catalogue, read from the real Debian files (installed by scripts/setup.sh)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from core.catalog import fashion_mnist
from core.catalog.registry import open_catalog
from core.config import Settings


@pytest.fixture(scope="module")
def real_dir():
    try:
        return fashion_mnist.find_dir(Settings().data_dir)
    except fashion_mnist.MissingDataError as exc:
        if __import__("os").environ.get("CI"):
            pytest.fail(f"CI must have the built-in catalogue: {exc}")
        pytest.skip(str(exc))


def test_all_70000_items_with_split_and_category(real_dir, tmp_path):
    catalog = open_catalog(Settings(artifacts_dir=tmp_path, catalog="fashion-mnist"))
    assert len(catalog) == 70_000
    assert catalog.items["split"].value_counts().to_dict() == {"train": 60_000, "test": 10_000}
    assert catalog.categories[0] == "T-shirt/top" and catalog.categories[9] == "Ankle boot"
    assert (catalog.items["category"].value_counts() == 7_000).all()
    assert catalog.pixels.shape == (70_000, 28, 28) and catalog.pixels.dtype == np.uint8
    assert catalog.items["id"].is_unique


def test_a_limit_keeps_both_splits(real_dir, tmp_path):
    catalog = open_catalog(Settings(artifacts_dir=tmp_path, catalog="fashion-mnist", catalog_limit=700))
    assert len(catalog) == 700
    assert catalog.items["split"].value_counts().to_dict() == {"train": 600, "test": 100}


def test_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "none")
    with pytest.raises(fashion_mnist.MissingDataError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.find_dir(tmp_path / "data")


def test_truncated_idx_file_is_refused(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(bytes([0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28]) + b"\0" * 100)
    with pytest.raises(ValueError, match="truncated"):
        fashion_mnist.read_idx(path)
