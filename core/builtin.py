"""The built-in colour catalogues that ship in ``builtin/`` (made by ``scripts/build_catalogues.py``).

Each is a table source prepared like a user's own (``core.prepare``), on first open and again whenever its files
change, into ``<artifacts>/catalogs/<name>/``. Its key is a hash of what ships (the table, the image manifest,
the photo transform), not of the prepared copy, whose paths name the checkout: the same catalogue has the same key
in every clone, so a model trained on it in one is found in another.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from core.artifacts import file_checksum, fingerprint
from core.catalog import Catalog, register_source
from core.config import Settings
from core.sources import SourceSpec, TableColumns

PHOTO_SIZE = 224
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Builtin:
    name: str
    label: str
    folder: str  # under Settings.builtin_dir
    columns: TableColumns = TableColumns()
    tag_columns: tuple[str, ...] = ()


BUILTINS = {
    b.name: b for b in (
        Builtin("garment-photos", "Garment photos (5,096 phone photos, 17 categories)", "garment-photos",
                TableColumns(group="group")),
        Builtin("luma-shop", "Luma shop (440 studio photos with descriptions)", "luma-shop",
                TableColumns(group="group"), tag_columns=("colour", "pattern", "material", "climate", "gender")),
    )
}


def shipped_key(settings: Settings, builtin: Builtin) -> str:
    """What the catalogue is: its table, its images (by the manifest the build script writes) and the transform."""
    folder = Path(settings.builtin_dir) / builtin.folder
    from core.prepare import PREPARE_VERSION

    made_of = {"items": file_checksum(folder / "items.csv"), "images": file_checksum(folder / "images.json"),
               "columns": builtin.columns.__dict__, "photo_size": PHOTO_SIZE, "prepare": PREPARE_VERSION}
    if builtin.tag_columns:
        made_of["tag_columns"] = list(builtin.tag_columns)
    return fingerprint(made_of)


def load_builtin(settings: Settings, builtin: Builtin) -> Catalog:
    from core import prepare
    from core.threads import loader_workers

    folder = Path(settings.builtin_dir) / builtin.folder
    if not (folder / "items.csv").is_file():
        raise FileNotFoundError(f"The built-in catalogue {builtin.name!r} is missing from {folder} (it ships with "
                                "the project: check out the repository again, or rebuild it with "
                                "scripts/build_catalogues.py).")
    key = shipped_key(settings, builtin)
    spec = SourceSpec(path=str((folder / "items.csv").resolve()), layout="table", columns=builtin.columns,
                      tag_columns=builtin.tag_columns)
    try:
        current = prepare.prepared_info(settings, builtin.name).get("shipped_key") == key
    except (OSError, ValueError):
        current = False
    if not current:
        log.info("preparing the built-in catalogue %s from %s", builtin.name, folder)
        prepare.prepare_catalog(spec, settings, name=builtin.name, photo_size=PHOTO_SIZE,
                                workers=loader_workers(settings), builtin=True, extra_info={"shipped_key": key})
    catalog = prepare.load_prepared(settings, builtin.name)
    catalog.key = f"{builtin.name}-{key}"
    return catalog


def _register(builtin: Builtin) -> None:
    register_source(builtin.name, builtin.label)(lambda settings: load_builtin(settings, builtin))


for _builtin in BUILTINS.values():
    _register(_builtin)


def write_manifest(folder: Path) -> Path:
    """``images.json``: every image's checksum, so the key changes when a photo does (the build script calls it)."""
    manifest = {p.relative_to(folder).as_posix(): file_checksum(p) for p in sorted((folder / "images").iterdir())}
    (folder / "images.json").write_text(json.dumps(manifest, indent=0, sort_keys=True) + "\n")
    return folder / "images.json"
