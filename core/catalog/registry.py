"""The one door to every catalogue: ``open_catalog(settings)`` and ``catalog_choices(settings)``.

Built-in catalogues are registered by name (``@register_source``, the way timm registers architectures; the tests
register their synthetic ones the same way); a user's catalogues are the ones ``python -m core prepare`` wrote
(``core.catalog.prepared_layout``). The CLI, the sidebar, training and the tests all open catalogues here, and only
here is a catalogue prepared on demand: a built-in colour catalogue whose shipped files changed, or a prepared one whose
items table no longer matches its checksum and whose source can rebuild it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from core.catalog import fashion_mnist, prepare, prepared_layout, union
from core.catalog.base import Catalog
from core.catalog.builtin import BUILTINS, PHOTO_SIZE, Builtin, builtin_names, shipped_key
from core.catalog.sources import CatalogError, SourceSpec
from core.config import Settings
from core.photo.colour import COLOUR_VERSION
from core.threads import loader_workers

log = logging.getLogger(__name__)
SOURCES: dict[str, Callable[[Settings], Catalog]] = {}
SOURCE_LABELS: dict[str, str] = {}


def register_source(name: str, label: str) -> Callable:
    def decorate(loader: Callable[[Settings], Catalog]) -> Callable[[Settings], Catalog]:
        SOURCES[name] = loader
        SOURCE_LABELS[name] = label
        return loader

    return decorate


def open_catalog(settings: Settings) -> Catalog:
    """``settings.catalog``: a registered source by name, a catalogue prepared with ``python -m core prepare``, or
    several joined by "+" (``core.catalog.union``: catalogues trained together)."""
    if union.is_union(settings.catalog):
        return union.union_of([open_catalog(settings.replace(catalog=name))
                               for name in union.member_names(settings.catalog)])
    if settings.catalog in SOURCES:
        return SOURCES[settings.catalog](settings)
    if settings.catalog in user_catalogs(settings):
        return _load_or_rebuild(settings, settings.catalog, lambda info: _rebuild(settings, settings.catalog, info))
    known = ", ".join([*SOURCES, *user_catalogs(settings)])
    raise ValueError(f"Unknown catalogue {settings.catalog!r}; known: {known}. Prepare your own with "
                     "`python -m core prepare PATH --name NAME`.")


def catalog_choices(settings: Settings) -> dict[str, str]:
    """Name → label of every catalogue that can be opened: the registered ones, then the user's."""
    choices = dict(SOURCE_LABELS)
    for name in user_catalogs(settings):
        try:
            info = prepared_layout.prepared_info(settings, name)
        except (OSError, ValueError):  # damaged: opening it says why; the list must still show the others
            continue
        choices[name] = f"{name} ({info.get('items', 0):,} items, {info.get('layout', 'your')} catalogue)"
    return choices


def user_catalogs(settings: Settings) -> list[str]:
    """The user's prepared catalogues (the built-in ones are prepared in the same folder, and listed as built-in)."""
    return [name for name in prepared_layout.prepared_names(settings)
            if name not in SOURCES and name not in builtin_names()]


def _load_or_rebuild(settings: Settings, name: str, rebuild: Callable[[dict], None]) -> Catalog:
    try:
        return prepared_layout.load_prepared(settings, name)
    except prepared_layout.DamagedItems as damaged:
        log.warning("%s does not match its checksum in catalog.json; preparing %r again from %s", damaged.table,
                    name, damaged.info.get("source", {}).get("path"))
        rebuild(damaged.info)
    return prepared_layout.load_prepared(settings, name)


def _rebuild(settings: Settings, name: str, info: dict) -> None:
    source = info.get("source", {})
    try:
        prepare.prepare_catalog(SourceSpec.from_dict(source), settings, name=name,
                                photo_size=int(info.get("photo_size", 224)), workers=loader_workers(settings))
    except (CatalogError, OSError, TypeError, ValueError) as exc:
        table = prepared_layout.catalogs_dir(settings) / name / "items.parquet"
        raise CatalogError(f"{table} is damaged (it does not match the checksum in catalog.json) and could not be "
                           f"rebuilt from its source {source.get('path')}: {exc}") from exc


def _open_builtin(settings: Settings, builtin: Builtin) -> Catalog:
    """A shipped colour catalogue, prepared again when what ships changed (or its prepared copy is damaged)."""
    folder = builtin.path(settings)
    if not (folder / "items.csv").is_file():
        raise FileNotFoundError(f"The built-in catalogue {builtin.name!r} is missing from {folder} (it ships with "
                                "the project: check out the repository again, or rebuild it with "
                                "scripts/build_catalogues.py).")
    key = shipped_key(settings, builtin)

    def prepare_it(_: dict | None = None) -> None:
        log.info("preparing the built-in catalogue %s from %s", builtin.name, folder)
        prepare.prepare_catalog(builtin.spec(settings), settings, name=builtin.name, photo_size=PHOTO_SIZE,
                                workers=loader_workers(settings), builtin=True, extra_info={"shipped_key": key})

    try:
        info = prepared_layout.prepared_info(settings, builtin.name)
        # The colours read from the photos are not part of the key (they do not change what the model sees, and
        # the shipped models are found by it): a copy prepared by an older colour naming is prepared again.
        current = info.get("shipped_key") == key and info.get("colour_version") == COLOUR_VERSION
    except (OSError, ValueError):
        current = False
    if not current:
        prepare_it()
    catalog = _load_or_rebuild(settings, builtin.name, prepare_it)
    catalog.key = f"{builtin.name}-{key}"
    return catalog


def _register_builtin(builtin: Builtin) -> None:
    register_source(builtin.name, builtin.label)(lambda settings: _open_builtin(settings, builtin))


register_source(fashion_mnist.NAME, fashion_mnist.LABEL)(fashion_mnist.load_catalog)
for _builtin in BUILTINS.values():
    _register_builtin(_builtin)
