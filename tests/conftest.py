"""Shared fixtures: a tiny generated catalogue (registered like any other source) and a tiny random backbone,
so most tests run in seconds on 2 cores. Tests that need the real weights or the real catalogue say so."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from core.catalog.base import Catalog
from core.catalog.registry import register_source
from core.config import Settings
from core.photo.domain import FashionMnistDomain

SHAPES = ["Square", "Disc", "Bar", "Ring"]
PER_SHAPE = 16  # 12 train + 4 test each


def shape_photo(kind: str, rng: np.random.Generator, size: int = 112, tone: tuple[int, int, int] | None = None
                ) -> Image.Image:
    """A 'packshot' of a simple garment-like shape: dark on white, jittered in size, aspect and tone."""
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    c, r = size / 2, size * rng.uniform(0.25, 0.4)
    tone = tone or tuple(int(v) for v in rng.integers(0, 110, 3))
    if kind == "Square":
        draw.rectangle([c - r, c - r * rng.uniform(0.7, 1.0), c + r, c + r], fill=tone)
    elif kind == "Disc":
        draw.ellipse([c - r, c - r, c + r, c + r], fill=tone)
    elif kind == "Bar":
        draw.rectangle([c - r / 4, c - r, c + r / 4, c + r], fill=tone)
    else:
        draw.ellipse([c - r, c - r, c + r, c + r], outline=tone, width=max(3, int(r / 4)))
    return image


def shape_item(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A 28×28 catalogue item made the way Fashion-MNIST was: the catalogue conversion of a packshot."""
    return FashionMnistDomain().convert(shape_photo(kind, rng))


def synthetic_photos(seed: int = 0) -> tuple[list[Image.Image], pd.DataFrame]:
    """The shapes with descriptive tags a model can learn: round or angular (from the shape) and, from the tone
    (every other item is near-black, the rest mid-gray), dark or muted."""
    rng = np.random.default_rng(seed)
    photos, rows = [], []
    for label, kind in enumerate(SHAPES):
        for i in range(PER_SHAPE):
            dark = i % 2 == 0
            level = int(rng.integers(0, 30) if dark else rng.integers(90, 120))
            photos.append(shape_photo(kind, rng, tone=(level, level, level)))
            rows.append({"id": f"{kind.lower()}-{i:02d}", "label": label, "category": kind,
                         "split": "train" if i < 12 else "test",
                         "tags": ["round" if kind in ("Disc", "Ring") else "angular", "dark" if dark else "muted"]})
    return photos, pd.DataFrame(rows)


def synthetic_arrays(seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    photos, items = synthetic_photos(seed)
    domain = FashionMnistDomain()
    return np.stack([domain.convert(photo) for photo in photos]), items


@register_source("synthetic", "Synthetic shapes (tests)")
def load_synthetic(settings: Settings) -> Catalog:
    pixels, items = synthetic_arrays()
    key = "synthetic-" + hashlib.blake2b(pixels.tobytes(), digest_size=6).hexdigest()
    return Catalog(name="synthetic", key=key, items=items, categories=list(SHAPES), domain=FashionMnistDomain(),
                   pixels=pixels)


@register_source("synthetic-untagged", "Synthetic shapes without tags (tests)")
def load_synthetic_untagged(settings: Settings) -> Catalog:
    catalog = load_synthetic(settings)
    catalog.items = catalog.items.drop(columns="tags")
    catalog.key = catalog.key.replace("synthetic-", "synthetic-untagged-")
    return catalog


@register_source("synthetic-one-tag", "Synthetic shapes with one tag (tests)")
def load_synthetic_one_tag(settings: Settings) -> Catalog:
    """A vocabulary of one tag ("round"): the case that broke the Tags page's per-tag report (issue 25)."""
    catalog = load_synthetic(settings)
    catalog.items["tags"] = [[t for t in tags if t == "round"] for tags in catalog.items["tags"]]
    catalog.key = catalog.key.replace("synthetic-", "synthetic-one-tag-")
    return catalog


def tiny_settings(tmp: Path, **changes) -> Settings:
    values = dict(data_dir=tmp / "data", artifacts_dir=tmp / "artifacts", catalog="synthetic",
                  backbone="test_efficientnet", image_size=32, pca_dim=16, pca_min_fit_items=0, n_trees=4, search_k=200,
                  batch_size=16)
    return Settings(**{**values, **changes})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(tmp_path)


APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")
TIMEOUT = 120


@pytest.fixture
def app(tmp_path_factory, monkeypatch):
    """The dashboard in AppTest on the synthetic catalogue (the tiny index is built once per test session)."""
    from streamlit.testing.v1 import AppTest

    root = tmp_path_factory.getbasetemp() / "app-artifacts"
    for name, value in {"CATALOG": "synthetic", "BACKBONE": "test_efficientnet", "IMAGE_SIZE": "32",
                        "PCA_DIM": "16", "PCA_MIN_FIT_ITEMS": "0", "N_TREES": "4", "SEARCH_K": "200",
                        "ARTIFACTS_DIR": str(root), "DATA_DIR": str(root / "data"),
                        "STATIC_DIR": str(root / "static")}.items():
        monkeypatch.setenv(f"FVS_{name}", value)
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


BUILTIN_ENV = ("CATALOG", "BACKBONE", "IMAGE_SIZE", "PCA_DIM", "RUN", "N_TREES", "SEARCH_K", "CATALOG_LIMIT",
               "DATA_DIR")


@pytest.fixture(scope="session", autouse=True)
def thumbnails_outside_the_checkout(tmp_path_factory):
    """Maps are made by ``prepare`` and by the app's background thread, with their hover thumbnails: in tests those
    go to a temporary folder, never into the checkout's static/ (the browser test, which needs them served, gives
    its server the default back)."""
    import os

    if "FVS_STATIC_DIR" in os.environ:
        yield
        return
    os.environ["FVS_STATIC_DIR"] = str(tmp_path_factory.mktemp("static"))
    yield
    os.environ.pop("FVS_STATIC_DIR", None)


@pytest.fixture(scope="session")
def builtin_artifacts(tmp_path_factory) -> Path:
    """One artifacts folder for every test on the real built-in catalogues, prepared once per test session as
    ``python -m core prepare`` does on a fresh clone (the default catalogue with its shipped model: embeddings,
    index, the default map and its thumbnails); what a test opens besides is built there on first use and shared
    with the tests after it. Its thumbnails go to ``static/`` inside it, not into the checkout."""
    import os

    from core.search.serving import served_settings
    from core.search.workspace import Workspace

    root = tmp_path_factory.mktemp("builtin-artifacts")
    # the defaults a fresh clone has: none of the FVS_* a developer may have exported
    environ = {k: v for k, v in os.environ.items() if k.removeprefix("FVS_") not in BUILTIN_ENV}
    settings = served_settings(Settings.from_env(environ, artifacts_dir=root, static_dir=root / "static"))
    Workspace.open(settings).prepare_map()
    return root


@pytest.fixture
def builtin_env(builtin_artifacts, monkeypatch) -> Path:
    """The environment of a fresh clone, with ``builtin_artifacts`` as its artifacts and static folders."""
    for name in BUILTIN_ENV:
        monkeypatch.delenv(f"FVS_{name}", raising=False)
    monkeypatch.setenv("FVS_ARTIFACTS_DIR", str(builtin_artifacts))
    monkeypatch.setenv("FVS_STATIC_DIR", str(builtin_artifacts / "static"))
    return builtin_artifacts


@pytest.fixture(scope="session")
def shared_workspace(tmp_path_factory):
    from core.search.workspace import Workspace

    return Workspace.open(tiny_settings(tmp_path_factory.mktemp("ws")))


def encoded(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def tshirt_photo(size: tuple[int, int] = (480, 640), colour=(30, 40, 110)) -> Image.Image:
    """A T-shirt silhouette on a white background: what a packshot looks like."""
    w, h = size
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    s = min(w, h) / 100
    body = [(30, 25), (42, 18), (58, 18), (70, 25), (88, 40), (78, 50), (70, 44), (70, 88), (30, 88), (30, 44),
            (22, 50), (12, 40)]
    ox, oy = (w - 100 * s) / 2, (h - 100 * s) / 2
    draw.polygon([(ox + x * s, oy + y * s) for x, y in body], fill=colour)
    return image


# ------------------------------------------------------------------ generated user catalogues (files on disk)
GARMENTS = {"Shirt": "Square", "Skirt": "Disc", "Scarf": "Bar"}
COLOURS = {"red": (200, 40, 40), "navy": (30, 40, 120), "green": (40, 150, 60)}


def garment_file_photo(category: str, colour: str, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """A colour packshot: a category shape in a named colour on white, jittered like real shots."""
    tone = tuple(int(np.clip(v + rng.integers(-15, 16), 0, 255)) for v in COLOURS[colour])
    return shape_photo(GARMENTS[category], rng, size=size, tone=tone)


def write_photo_records(root: Path, per_category: int = 4, seed: int = 0, folder: str = "images") -> list[dict]:
    """JPEG files under ``root/folder`` and one record per file: relative path, category, colour, description."""
    rng = np.random.default_rng(seed)
    (root / folder).mkdir(parents=True, exist_ok=True)
    records = []
    for category in GARMENTS:
        for i in range(per_category):
            colour = list(COLOURS)[i % len(COLOURS)]
            relative = f"{folder}/{category.lower()}-{i:02d}.jpg"
            garment_file_photo(category, colour, rng).save(root / relative, quality=92)
            records.append({"id": f"{category.lower()}-{i:02d}", "image": relative, "category": category,
                            "colour": colour, "brand": "Acme" if i % 2 else "Zed", "price": f"{10 + i}.50",
                            "description": f"Soft {colour} cotton {category.lower()} with a relaxed fit"})
    return records


def write_folder_catalogue(root: Path, per_category: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for category in GARMENTS:
        (root / category).mkdir(parents=True, exist_ok=True)
        for i in range(per_category):
            garment_file_photo(category, list(COLOURS)[i % 3], rng).save(root / category / f"{i:02d}.jpg")
    return root
