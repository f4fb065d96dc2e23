"""The catalogues that ship with the project: what they are, not how they are opened (``core.catalog.registry`` does
that, and ``core.catalog.prepare`` refuses their names for a user's catalogue).

Fashion-MNIST comes from a Debian package (``core.catalog.fashion_mnist``). The colour catalogues ship in ``builtin/``
(made by ``scripts/build_catalogues.py``); each is a table source, prepared like a user's own on first open and
again whenever its files change, into ``<artifacts>/catalogs/<name>/``. Its key is a hash of what ships (the
table, the image manifest, the photo transform), not of the prepared copy, whose paths name the checkout: the same
catalogue has the same key in every clone, so a model trained on it in one is found in another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.artifacts import file_checksum, fingerprint
from core.catalog import fashion_mnist
from core.catalog.prepared_layout import PREPARE_VERSION
from core.catalog.sources import SourceSpec, TableColumns
from core.config import Settings

PHOTO_SIZE = 224


@dataclass(frozen=True)
class Builtin:
    name: str
    label: str
    folder: str  # under Settings.builtin_dir
    columns: TableColumns = TableColumns()
    tag_columns: tuple[str, ...] = ()

    def path(self, settings: Settings) -> Path:
        return Path(settings.builtin_dir) / self.folder

    def spec(self, settings: Settings) -> SourceSpec:
        """How its table is read, as a user's table would be."""
        return SourceSpec(path=str((self.path(settings) / "items.csv").resolve()), layout="table",
                          columns=self.columns, tag_columns=self.tag_columns)


BUILTINS = {
    b.name: b for b in (
        Builtin("garment-photos", "Garment photos (5,096 phone photos, 17 categories)", "garment-photos",
                TableColumns(group="group")),
        Builtin("luma-shop", "Luma shop (440 studio photos with descriptions)", "luma-shop",
                TableColumns(group="group"), tag_columns=("colour", "pattern", "material", "climate", "gender")),
    )
}


def builtin_names() -> list[str]:
    """Every built-in catalogue's name: Fashion-MNIST, then the colour ones."""
    return [fashion_mnist.NAME, *BUILTINS]


def shipped_key(settings: Settings, builtin: Builtin) -> str:
    """What the catalogue is: its table, its images (by the manifest the build script writes) and the transform."""
    folder = builtin.path(settings)
    made_of = {"items": file_checksum(folder / "items.csv"), "images": file_checksum(folder / "images.json"),
               "columns": builtin.columns.__dict__, "photo_size": PHOTO_SIZE, "prepare": PREPARE_VERSION}
    if builtin.tag_columns:
        made_of["tag_columns"] = list(builtin.tag_columns)
    return fingerprint(made_of)


def write_manifest(folder: Path) -> Path:
    """``images.json``: every image's checksum, so the key changes when a photo does (the build script calls it)."""
    manifest = {p.relative_to(folder).as_posix(): file_checksum(p) for p in sorted((folder / "images").iterdir())}
    (folder / "images.json").write_text(json.dumps(manifest, indent=0, sort_keys=True) + "\n")
    return folder / "images.json"
