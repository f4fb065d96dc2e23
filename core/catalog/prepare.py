"""``prepare``: a user's source becomes a named catalogue the app, the CLI and training can open (this module only
writes; ``core.catalog.prepared_layout`` reads what it wrote, and ``core.catalog.registry`` is the door every
catalogue is opened through).

Preparing reads the source (``core.catalog.sources``), opens every image once to list the unreadable ones and to name
its garment's colours from its pixels (``core.photo.colour``), mines tags from descriptions when the source has no
tags (``core.text.tags``), and writes ``<artifacts>/catalogs/<name>/``:
``items.parquet`` (the usable items), ``problems.csv`` (every entry skipped or repaired, with its row and reason)
and ``catalog.json`` (the source spec, the counts and the tag vocabulary), the last one written last, so a
prepare that is killed leaves no half catalogue behind. Images stay where they are.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core import locks
from core.artifacts import atomic_path, file_checksum
from core.catalog.base import PHOTO_COLOURS
from core.catalog.builtin import builtin_names
from core.catalog.item_files import CheckDataset
from core.catalog.prepared_layout import MAX_PHOTO_SIZE, MIN_PHOTO_SIZE, catalogs_dir, prepared_info, prepared_names
from core.catalog.sources import (
    BOX,
    TABLE_SUFFIXES,
    CatalogError,
    Problem,
    SourceSpec,
    parse_tags,
    read_source,
    resolved_path,
)
from core.catalog.sources import problems_frame as frame_of
from core.config import Settings
from core.locks import die_with_parent
from core.photo import colour
from core.progress import Progress, no_progress
from core.text import tags

MAX_CATEGORIES = np.iinfo(np.int16).max  # labels are stored as int16
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")  # used with fullmatch: "$" would let a newline through
SOURCES_LISTED = 500  # the most candidate sources the dashboard lists under its catalogue folders
SOURCES_SCANNED = 5000  # … and the most folder entries it looks at to find them


@dataclass
class PrepareReport:
    name: str
    items: pd.DataFrame
    problems: pd.DataFrame
    vocabulary: list[str]
    path: Path

    def summary(self) -> dict:
        counts = self.items["category"].value_counts().sort_index()
        return {"catalog": self.name, "items": len(self.items),
                "categories": {str(k): int(v) for k, v in counts.items()},
                "splits": {str(k): int(v) for k, v in self.items["split"].value_counts().sort_index().items()},
                "tags": self.vocabulary, "skipped": int(self.problems["skipped"].sum()) if len(self.problems) else 0,
                "repaired": int((~self.problems["skipped"]).sum()) if len(self.problems) else 0,
                "problems": self.problems.to_dict("records"), "path": str(self.path)}


def default_name(path: str) -> str:
    stem = Path(path).expanduser().resolve().stem.lower()
    return re.sub(r"[^a-z0-9_-]+", "-", stem).strip("-_")[:48] or "catalogue"


def confine(spec: SourceSpec, roots: list[Path]) -> SourceSpec:
    """``spec`` limited to ``roots``: its source must lie under one of them after symlinks are followed, and its
    absolute image paths may point into them only. What a browser user may ask for. The refusal reads the same
    whether or not the path exists, so it cannot be used to probe the server's files."""
    roots = [Path(root).resolve() for root in roots]
    names = ", ".join(str(root) for root in roots)
    resolved = confined(Path(spec.path), roots)
    inside = [resolved_path(Path(r)) for r in spec.allowed_roots]
    if not all(r is not None and any(r.is_relative_to(root) for root in roots) for r in inside):
        raise CatalogError(f"Image folders must lie inside the catalogue folders ({names}).")
    return dataclasses.replace(spec, path=str(resolved), allowed_roots=tuple(str(r) for r in roots))


def confined(path: Path, roots: list[Path], what: str = "Catalogues are added") -> Path:
    """``path`` with links followed, if it lies under one of ``roots``; else CatalogError, worded the same
    whether or not the path exists. The door for every server path a browser user names."""
    roots = [Path(root).resolve() for root in roots]
    resolved = resolved_path(path) if Path(path).is_absolute() else None
    if resolved is None or not any(resolved.is_relative_to(root) for root in roots):
        raise CatalogError(f"{what} from the catalogue folders only ({', '.join(str(r) for r in roots)}); put "
                           "yours there, or ask the operator to allow its folder (FVS_CATALOG_ROOTS).")
    return resolved


def sources_under(roots: list[Path], limit: int = SOURCES_LISTED, scanned: int = SOURCES_SCANNED) -> list[Path]:
    """What the dashboard offers to add: each catalogue folder's subfolders and tables, and the tables one level
    further down (``shop/products.csv``); hidden entries and links out of the folder are left out. At most
    ``scanned`` entries are looked at in all (a folder of 100,000 photos must not slow every page view)."""
    found: list[Path] = []
    budget = [scanned]

    def entries(folder: Path) -> list[Path]:
        out = []
        try:
            for entry in folder.iterdir():
                if budget[0] <= 0:
                    break
                budget[0] -= 1
                if not entry.name.startswith("."):
                    out.append(entry)
        except OSError:
            pass
        return sorted(out)

    for root in roots:
        root = Path(root).resolve()
        if not root.is_dir():
            continue
        for entry in entries(root):
            target = resolved_path(entry)
            if target is None or not target.is_relative_to(root):
                continue
            if _is_table(target):
                found.append(entry)
            elif target.is_dir():
                found.append(entry)
                found += [inner for inner in entries(entry) if _is_table(inner)
                          and (inner_target := resolved_path(inner)) is not None and inner_target.is_relative_to(root)]
    return sorted(found)[:limit]


def _is_table(path: Path) -> bool:
    return path.suffix.lower() in TABLE_SUFFIXES and path.is_file()


def prepare_catalog(spec: SourceSpec, settings: Settings, name: str = "", photo_size: int = 224,
                    workers: int = 0, progress: Progress = no_progress, strict: bool = False,
                    confine_to: list[Path] | None = None, max_items: int = 0,
                    replace: bool = True, builtin: bool = False, extra_info: dict | None = None,
                    keep_odd_shapes: bool = False) -> PrepareReport:
    """Validate and register a source; re-preparing the same name replaces it (its embeddings are keyed anew).
    ``strict``: any problem is an error and nothing is registered. What the dashboard passes for a browser user:
    ``confine_to`` (see ``confine``), ``max_items`` (larger sources are refused early) and ``replace`` False (a
    name already prepared from another source is refused, not overwritten). ``builtin``: a catalogue that ships
    with the project (core.catalog.builtin) is being prepared under its own name; ``extra_info`` goes into
    catalog.json."""
    if confine_to is not None:
        spec = confine(spec, confine_to)
    name = name or default_name(spec.path)
    if not NAME_PATTERN.fullmatch(name) or (name in builtin_names() and not builtin):
        raise CatalogError(f"Catalogue name {name!r} is not usable: lower-case letters, digits, '-' and '_' "
                           f"(up to 48), and not a built-in name ({', '.join(builtin_names())}).")
    if not MIN_PHOTO_SIZE <= photo_size <= MAX_PHOTO_SIZE:
        raise CatalogError(f"The photo size must be {MIN_PHOTO_SIZE} to {MAX_PHOTO_SIZE} pixels (got {photo_size}).")
    # One prepare of a name at a time, from the check that the name is free to the last file written: two
    # sessions adding the same name must not both succeed with one's catalogue silently gone.
    with locks.exclusive(catalogs_dir(settings) / f".{name}.lock", notify=lambda message: progress(message, 0, 1)):
        if not replace and name in prepared_names(settings):
            previous = prepared_info(settings, name).get("source", {}).get("path")
            if previous != spec.path:
                raise CatalogError(f"A catalogue named {name!r} already exists, prepared from another source; "
                                   "choose another name.")
        return _prepare(spec, settings, name, photo_size, workers, progress, strict, max_items, extra_info,
                        keep_odd_shapes)


def _prepare(spec: SourceSpec, settings: Settings, name: str, photo_size: int, workers: int, progress: Progress,
             strict: bool, max_items: int, extra_info: dict | None, keep_odd_shapes: bool = False) -> PrepareReport:
    source = read_source(spec, max_items=max_items)
    items, problems = source.items, list(source.problems)
    boxes = items[BOX].to_numpy(np.int64) if set(BOX) <= set(items.columns) else None
    unreadable, colours = check_images(items["path"].tolist(), workers, progress, keep_odd_shapes, boxes=boxes,
                                       colours=True)
    for row, reason in unreadable.items():
        problems.append(Problem(str(items.iloc[row]["where"]), as_given(items.iloc[row]["path"], spec), reason))
    items[PHOTO_COLOURS] = [list(names) for names in colours]
    items = items.drop(index=items.index[list(unreadable)]).reset_index(drop=True).drop(columns="where")
    if strict and problems:
        raise CatalogError(f"{len(problems)} entries had problems, and strict checking is on; nothing was "
                           f"registered. {_first(problems)}{' …' if len(problems) > 5 else ''}")
    if items.empty:
        listed = _first(problems)
        raise CatalogError(f"{spec.path} has no usable image "
                           f"({len(problems)} problems{': ' + listed if listed else ''}).")
    vocabulary: list[str] = []
    tags_mined = False
    if "tags" in items.columns:
        vocabulary = tags.vocabulary(items)
    elif "description" in items.columns and items["description"].str.strip().ne("").any():
        progress("Mining tags from descriptions", 0, 1)
        mined = tags.mine_tags(items["description"].tolist(), tags.TagMining())
        items["tags"], vocabulary = mined.item_tags, mined.vocabulary
        tags_mined = True
        progress("Mining tags from descriptions", 1, 1)
    tag_sources = {tag: "description" if tags_mined else "tags" for tag in vocabulary}
    if spec.tag_columns:
        vocabulary, tag_sources = _add_column_tags(items, spec.tag_columns, vocabulary, tag_sources)
    vocabulary, tag_sources = _add_photo_colour_tags(items, vocabulary, tag_sources)
    categories = sorted(items["category"].unique())
    if len(categories) > MAX_CATEGORIES:
        raise CatalogError(f"{spec.path} has {len(categories):,} categories; a catalogue may have up to "
                           f"{MAX_CATEGORIES:,}. Is the category column the right one?")
    items.insert(2, "label", items["category"].map({c: i for i, c in enumerate(categories)}).astype(np.int16))
    target = catalogs_dir(settings) / name
    target.mkdir(parents=True, exist_ok=True)
    (target / "catalog.json").unlink(missing_ok=True)  # the catalogue is incomplete until catalog.json is back
    with atomic_path(target / "items.parquet") as tmp:
        items.to_parquet(tmp, index=False)
    problems_frame = frame_of(problems)
    with atomic_path(target / "problems.csv") as tmp:
        problems_frame.to_csv(tmp, index=False)
    report = PrepareReport(name, items, problems_frame, vocabulary, target)
    info = {"name": name, "layout": source.layout, "source": spec.as_dict(), "photo_size": photo_size,
            "categories": categories, "items": len(items), "tags": vocabulary, "tags_mined": tags_mined,
            "tag_sources": tag_sources, "colour_version": colour.COLOUR_VERSION,
            "problems": len(problems),
            "prepared": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "checksums": {"items.parquet": file_checksum(target / "items.parquet")}, **(extra_info or {})}
    with atomic_path(target / "catalog.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2))
    return report


MIN_TAG_ITEMS = 5  # a column value becomes a tag when at least this many items have it (else nothing to learn)


def _add_column_tags(items: pd.DataFrame, columns: tuple[str, ...], vocabulary: list[str],
                     sources: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The values of ``columns`` join each item's tags; a mined or given tag that equals one of them (ignoring
    case: "black" from a description, "Black" from the colour column) gives way to the column's."""
    missing = [c for c in columns if c not in items.columns]
    if missing:
        raise CatalogError(f"Tag column {', '.join(map(repr, missing))} is not in the table.")
    from_columns = [[] for _ in range(len(items))]
    column_of: dict[str, str] = {}
    for column in columns:
        for row, cell in enumerate(items[column].tolist()):
            for value in parse_tags(cell):
                from_columns[row].append(value)
                column_of.setdefault(value, column)
    support = Counter(value for values in from_columns for value in set(values))
    kept = {value for value, n in support.items() if n >= MIN_TAG_ITEMS}
    folded = {value.lower() for value in kept}
    given = items["tags"].tolist() if "tags" in items.columns else [[] for _ in range(len(items))]
    items["tags"] = [list(dict.fromkeys([*(t for t in mine if t.lower() not in folded),
                                         *(v for v in values if v in kept)]))
                     for mine, values in zip(given, from_columns, strict=True)]
    vocabulary = sorted({*(t for t in vocabulary if t.lower() not in folded), *kept})
    return vocabulary, {t: column_of[t] if t in kept else sources.get(t, "tags") for t in vocabulary}


def _add_photo_colour_tags(items: pd.DataFrame, vocabulary: list[str],
                           sources: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Each item's colours read from its photo (``PHOTO_COLOURS``) join its tags ("Blue · colour from the photo"),
    unless the source already names colours among its tags (a shop's colour column, colours mined from its
    descriptions): the source's own word is kept as the truth, and two tags named "Blue" from two sources would
    make a filter and the tag head's targets ambiguous. The photo's colours stay in their column either way."""
    if any(colour.is_colour_word(tag) for tag in vocabulary):
        return vocabulary, sources
    given = items["tags"].tolist() if "tags" in items.columns else [[] for _ in range(len(items))]
    named = [[colour.tag_of(term) for term in terms] for terms in items[PHOTO_COLOURS]]
    items["tags"] = [list(dict.fromkeys([*(mine if mine is not None else []), *extra]))
                     for mine, extra in zip(given, named, strict=True)]
    added = sorted({tag for tags_of_item in named for tag in tags_of_item} - set(vocabulary))
    return sorted({*vocabulary, *added}), {**sources, **{tag: colour.TAG_SOURCE for tag in added}}


def _first(problems: list[Problem], n: int = 5) -> str:
    return "; ".join(f"{p.where}: {p.problem}" for p in problems[:n])


def as_given(path: str, spec: SourceSpec) -> str:
    """An item's image path as its catalogue names it (relative to the table's or the folder's place), not the
    server's absolute path: what a problem quotes, like a price problem quotes its cell."""
    source = Path(spec.path)
    base = source.parent if source.suffix.lower() in TABLE_SUFFIXES else source
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:  # an absolute path under an allowed root: given absolute
        return path


def check_images(paths: list[str], workers: int, progress: Progress = no_progress, keep_odd_shapes: bool = False,
                 boxes: np.ndarray | None = None, colours: bool = False
                 ) -> tuple[dict[int, str], list[tuple[str, ...]]]:
    """Decode every image once, in worker processes: ({row: reason} for those that cannot be used, each image's
    garment colours, named from the decoded pixels when ``colours``; none for an unusable one)."""
    if colours:
        colour.naming_table()  # built once here, inherited by the forked workers instead of once in each
    loader = torch.utils.data.DataLoader(CheckDataset(paths, boxes, colours, keep_odd_shapes), batch_size=64,
                                         num_workers=workers, collate_fn=list, worker_init_fn=die_with_parent)
    bad: dict[int, str] = {}
    named: list[tuple[str, ...]] = []
    done = 0
    stage = "Checking images and naming their colours" if colours else "Checking images"
    progress(stage, 0, len(paths))
    for batch in loader:
        bad.update({done + i: reason for i, (reason, _) in enumerate(batch) if reason})
        named += [names for _, names in batch]
        done += len(batch)
        progress(stage, done, len(paths))
    return bad, named
