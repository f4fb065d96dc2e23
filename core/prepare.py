"""``prepare``: a user's source becomes a named catalogue the app, the CLI and training can open.

Preparing reads the source (``core.sources``), opens every image once to list the unreadable ones, mines tags
from descriptions when the source has no tags (``core.tags``), and writes ``<artifacts>/catalogs/<name>/``:
``items.parquet`` (the usable items), ``problems.csv`` (every entry skipped or repaired, with its row and reason)
and ``catalog.json`` (the source spec, the counts and the tag vocabulary), the last one written last, so a
prepare that is killed leaves no half catalogue behind. Images stay where they are.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core import tags
from core.artifacts import atomic_path, fingerprint
from core.catalog import Catalog, cached_checksum
from core.config import Settings
from core.domain import PhotoDomain
from core.embed import Progress, no_progress
from core.item_images import CheckDataset, FileImages
from core.sources import BOX, CatalogError, Problem, SourceSpec, read_source
from core.sources import problems_frame as frame_of

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")


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


def catalogs_dir(settings: Settings) -> Path:
    return Path(settings.artifacts_dir) / "catalogs"


def default_name(path: str) -> str:
    stem = Path(path).expanduser().resolve().stem.lower()
    return re.sub(r"[^a-z0-9_-]+", "-", stem).strip("-_")[:48] or "catalogue"


def prepare_catalog(spec: SourceSpec, settings: Settings, name: str = "", photo_size: int = 224,
                    workers: int = 0, progress: Progress = no_progress, strict: bool = False) -> PrepareReport:
    """Validate and register a source; re-preparing the same name replaces it (its embeddings are keyed anew).
    ``strict``: any problem is an error and nothing is registered."""
    name = name or default_name(spec.path)
    if not NAME_PATTERN.match(name) or name in _builtin_names():
        raise CatalogError(f"Catalogue name {name!r} is not usable: lower-case letters, digits, '-' and '_' "
                           f"(up to 48), and not a built-in name ({', '.join(_builtin_names())}).")
    source = read_source(spec)
    items, problems = source.items, list(source.problems)
    unreadable = check_images(items["path"].tolist(), workers, progress)
    for row, reason in unreadable.items():
        problems.append(Problem(str(items.iloc[row]["where"]), items.iloc[row]["path"], reason))
    items = items.drop(index=items.index[list(unreadable)]).reset_index(drop=True).drop(columns="where")
    if strict and problems:
        raise CatalogError(f"{len(problems)} entries had problems, and strict checking is on; nothing was "
                           f"registered. {_first(problems)}{' …' if len(problems) > 5 else ''}")
    if items.empty:
        listed = _first(problems)
        raise CatalogError(f"{spec.path} has no usable image "
                           f"({len(problems)} problems{': ' + listed if listed else ''}).")
    vocabulary: list[str] = []
    if "tags" in items.columns:
        vocabulary = tags.vocabulary(items)
    elif "description" in items.columns and items["description"].str.strip().ne("").any():
        progress("Mining tags from descriptions", 0, 1)
        mined = tags.mine_tags(items["description"].tolist(), tags.TagMining())
        items["tags"], vocabulary = mined.item_tags, mined.vocabulary
        progress("Mining tags from descriptions", 1, 1)
    categories = sorted(items["category"].unique())
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
            "categories": categories, "items": len(items), "tags": vocabulary, "problems": len(problems),
            "prepared": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with atomic_path(target / "catalog.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2))
    return report


def _first(problems: list[Problem], n: int = 5) -> str:
    return "; ".join(f"{p.where}: {p.problem}" for p in problems[:n])


def check_images(paths: list[str], workers: int, progress: Progress = no_progress) -> dict[int, str]:
    """Decode every image once, in worker processes: {row: reason} for those that cannot be used."""
    loader = torch.utils.data.DataLoader(CheckDataset(paths), batch_size=64, num_workers=workers,
                                         collate_fn=list)
    bad: dict[int, str] = {}
    done = 0
    progress("Checking images", 0, len(paths))
    for batch in loader:
        bad.update({done + i: reason for i, reason in enumerate(batch) if reason})
        done += len(batch)
        progress("Checking images", done, len(paths))
    return bad


def prepared_names(settings: Settings) -> list[str]:
    root = catalogs_dir(settings)
    return sorted(p.parent.name for p in root.glob("*/catalog.json")) if root.is_dir() else []


def prepared_info(settings: Settings, name: str) -> dict:
    path = catalogs_dir(settings) / name / "catalog.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"Catalogue {name!r} is not prepared (no readable {path}). Prepare it with "
                                f"`python -m core prepare PATH --name {name}`.") from exc


def load_prepared(settings: Settings, name: str) -> Catalog:
    info = prepared_info(settings, name)
    folder = catalogs_dir(settings) / name
    items = pd.read_parquet(folder / "items.parquet")
    domain = PhotoDomain(size=int(info.get("photo_size", 224)))
    boxes = items[BOX].to_numpy(np.int64) if set(BOX) <= set(items.columns) else None
    key = fingerprint({"items": cached_checksum(folder / "items.parquet", settings.artifacts_dir),
                       "domain": [domain.name, domain.size, domain.crop_pct]})
    return Catalog(name=name, key=f"{name}-{key}", items=items, categories=list(info["categories"]), domain=domain,
                   pixels=FileImages(items["path"].to_numpy(), boxes, domain))


def _builtin_names() -> list[str]:
    from core.catalog import SOURCES

    return list(SOURCES)
