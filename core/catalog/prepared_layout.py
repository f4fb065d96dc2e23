"""A prepared catalogue on disk, read: ``<artifacts>/catalogs/<name>/`` as ``core.catalog.prepare`` wrote it.

``catalog.json`` (the source spec, the counts, the tag vocabulary and the items table's checksum) is checked
field by field, and ``items.parquet`` against that checksum, before a ``Catalog`` is made of them: both are files
a person can edit or a disk can damage, and either would otherwise relabel items without a word.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from core.artifacts import atomic_path, file_checksum, fingerprint
from core.catalog.base import Catalog
from core.catalog.item_files import FileImages
from core.catalog.sources import BOX, CatalogError
from core.config import Settings
from core.photo.domain import PhotoDomain

# Bumped whenever what prepare writes for the same source changes (columns, splits, tags): the built-in
# catalogues, keyed by what ships rather than by the prepared copy, are then prepared again.
PREPARE_VERSION = 2
MIN_PHOTO_SIZE, MAX_PHOTO_SIZE = 16, 1024


def catalogs_dir(settings: Settings) -> Path:
    return Path(settings.artifacts_dir) / "catalogs"


def prepared_names(settings: Settings) -> list[str]:
    """Every prepared catalogue under the artifacts folder, the built-in colour catalogues' copies included (the
    registry, ``core.catalog.registry``, tells them apart)."""
    root = catalogs_dir(settings)
    return sorted(p.parent.name for p in root.glob("*/catalog.json")) if root.is_dir() else []


def prepared_info(settings: Settings, name: str) -> dict:
    """A prepared catalogue's catalog.json, checked: a hand-edited or damaged one is a message naming the file,
    not a KeyError from deep inside the app."""
    path = catalogs_dir(settings) / name / "catalog.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"Catalogue {name!r} is not prepared (no readable {path}). Prepare it with "
                                f"`python -m core prepare PATH --name {name}`.") from exc
    problems = _info_problems(info)
    if problems:
        source = info.get("source") if isinstance(info, dict) else None
        path_given = source.get("path") if isinstance(source, dict) else None
        raise CatalogError(f"{path} is damaged: {'; '.join(problems)}. Prepare the catalogue again: "
                           f"python -m core prepare {path_given if isinstance(path_given, str) else 'SOURCE'} "
                           f"--name {name}")
    return info


def _info_problems(info: object) -> list[str]:
    if not isinstance(info, dict):
        return ["it is not a JSON object"]
    problems = []
    categories = info.get("categories")
    if not isinstance(categories, list) or not categories or not all(isinstance(c, str) for c in categories):
        problems.append("'categories' is missing or not a list of names")
    size = info.get("photo_size", 224)
    if not isinstance(size, int) or isinstance(size, bool) or not MIN_PHOTO_SIZE <= size <= MAX_PHOTO_SIZE:
        problems.append(f"'photo_size' must be a whole number of pixels, {MIN_PHOTO_SIZE} to {MAX_PHOTO_SIZE}")
    items = info.get("items", 0)
    if not isinstance(items, int) or isinstance(items, bool) or items < 0:
        problems.append("'items' must be a count")
    source = info.get("source", {})
    if not isinstance(source, dict) or not isinstance(source.get("path", ""), str):
        problems.append("'source' must be an object with the source's path")
    if not isinstance(info.get("checksums", {}), dict):
        problems.append("'checksums' must be an object")
    return problems


class DamagedItems(CatalogError):
    """A prepared catalogue's items table does not match the checksum its catalog.json recorded (or cannot be
    read). Only its source can rebuild it, which is the registry's call (``core.catalog.registry``), not the
    reader's."""

    def __init__(self, table: Path, info: dict):
        super().__init__(f"{table} is damaged (it does not match the checksum in catalog.json)")
        self.table, self.info = table, info


def load_prepared(settings: Settings, name: str) -> Catalog:
    """The catalogue, after its items table is checked against the checksum catalog.json recorded: a flipped bit
    there would silently relabel items (``DamagedItems``)."""
    info = prepared_info(settings, name)
    folder = catalogs_dir(settings) / name
    table = folder / "items.parquet"
    try:
        actual = file_checksum(table)
    except OSError as exc:
        actual = f"unreadable: {exc}"
    recorded = info.get("checksums", {}).get("items.parquet")
    if recorded is None and not actual.startswith("unreadable"):  # prepared before checksums: vouch for it now
        info = {**info, "checksums": {**info.get("checksums", {}), "items.parquet": actual}}
        try:
            with atomic_path(folder / "catalog.json") as tmp:
                tmp.write_text(json.dumps(info, indent=2))
        except OSError:  # a read-only copy: served as it is, vouched for next time it is writable
            pass
    elif actual != recorded:
        raise DamagedItems(table, info)
    items = pd.read_parquet(table)
    _check_labels(items, list(info["categories"]), folder)
    domain = PhotoDomain(size=int(info.get("photo_size", 224)))
    boxes = items[BOX].to_numpy(np.int64) if set(BOX) <= set(items.columns) else None
    key = fingerprint({"items": actual, "domain": [domain.name, domain.size, domain.crop_pct]})
    return Catalog(name=name, key=f"{name}-{key}", items=items, categories=list(info["categories"]), domain=domain,
                   pixels=FileImages(items["path"].to_numpy(), boxes, domain, roots=source_roots(info)),
                   tags_mined=bool(info.get("tags_mined", False)), tag_sources=dict(info.get("tag_sources") or {}))


def source_roots(info: dict) -> tuple[Path, ...]:
    """Where a prepared catalogue's images may be read from: the source folder (a table's own folder) and the
    folders it allowed, links followed."""
    source = info.get("source", {})
    path = Path(source.get("path", "/"))
    base = path.parent if info.get("layout") == "table" else path
    return tuple(p.resolve() for p in (base, *map(Path, source.get("allowed_roots", ()))))


def _check_labels(items: pd.DataFrame, categories: list[str], folder: Path) -> None:
    """catalog.json's category names and the items' labels must agree: they are two files, and either can be
    edited or damaged without the other (a flipped letter there would rename a category on every result)."""
    labels = items["label"].to_numpy() if "label" in items.columns else np.array([], dtype=int)
    known = np.asarray(categories, dtype=object)
    inside = (labels >= 0) & (labels < len(categories)) if len(labels) else np.array([], dtype=bool)
    if "label" not in items.columns or not inside.all() or (known[labels] != items["category"].to_numpy()).any():
        raise CatalogError(f"{folder / 'catalog.json'} and {folder / 'items.parquet'} disagree on the category "
                           "names; one of them was edited or damaged. Prepare the catalogue again: python -m core "
                           f"prepare SOURCE --name {folder.name}")
