"""Several catalogues as one, for training one network on every photo style they hold.

A union catalogue (``garment-photos+luma-shop``; ``train --catalog garment-photos --catalog luma-shop``) is its
members' items one after the other, labelled with the shared classes of ``core.catalog.shared_categories`` (a
garment photo's "T-Shirt" and the shop's "Tees" are one class, "tee"; a category without a counterpart is a class of
its own, named with its catalogue), so the existing trainer and heads learn one space for both styles. Each item
keeps where it came from (``member``, ``member_category``): a run trained on the union serves each member catalogue
with its embedding layer (``core.search.workspace``).

Splits stay honest across catalogues: every member keeps its own test split, and a group (one garment, or one
sender's photos) that is held out in any member is held out in all of them, so no photo of a test garment is
trained on through another catalogue.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.artifacts import fingerprint
from core.catalog.base import Catalog
from core.catalog.item_files import FileImages
from core.catalog.shared_categories import SHARED_CLASS, shared_class

SEPARATOR = "+"
UNION_VERSION = 1  # part of the key: a change to how members are joined gives new runs, never stale ones


def member_names(name: str) -> list[str]:
    """The member catalogues of a union's name ("a+b" → ["a", "b"]); [name] for a single catalogue."""
    return [part for part in name.split(SEPARATOR) if part] if SEPARATOR in name else [name]


def is_union(name: str) -> bool:
    return len(member_names(name)) > 1


def union_of(members: list[Catalog]) -> Catalog:
    """One catalogue of ``members`` (each opened by the registry), labelled with the shared classes."""
    if len(members) < 2:
        raise ValueError("A union needs at least two catalogues.")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"A catalogue is named twice in {SEPARATOR.join(names)}.")
    domain = members[0].domain
    for member in members[1:]:
        if member.domain != domain:
            raise ValueError(f"{member.name!r} has another image domain ({member.domain}) than {names[0]!r} "
                             f"({domain}); only catalogues of one domain train together.")
        if member.on_disk != members[0].on_disk:
            raise ValueError("Only catalogues of files (or only in-memory ones) train together.")
    categories: list[str] = []
    for member in members:
        for category in member.categories:
            shared = shared_class(member.name, category)
            if shared not in categories:
                categories.append(shared)
    items = pd.concat([_member_items(m) for m in members], ignore_index=True)
    items["label"] = items["category"].map({c: i for i, c in enumerate(categories)}).astype(np.int64)
    items["split"] = held_out_everywhere(items)
    key = fingerprint({"members": [m.key for m in members], "version": UNION_VERSION,
                       "shared": {n: SHARED_CLASS.get(n, {}) for n in names}})
    return Catalog(name=SEPARATOR.join(names), key=f"{SEPARATOR.join(names)}-{key}", items=items,
                   categories=categories, domain=domain, pixels=_joined_pixels(members),
                   tags_mined=any(m.tags_mined for m in members),
                   tag_sources={k: v for m in members for k, v in m.tag_sources.items()},
                   members={m.name: m.key for m in members})


def _member_items(member: Catalog) -> pd.DataFrame:
    items = member.items.copy()
    items["member"] = member.name
    items["member_category"] = items["category"].astype(str)
    items["member_row"] = np.arange(len(items))
    items["id"] = member.name + ":" + items["id"].astype(str)  # ids are unique per catalogue, not across them
    items["category"] = [shared_class(member.name, c) for c in items["member_category"]]
    if "group" not in items.columns:  # an item without a group is its own group
        items["group"] = items["id"]
    if "split" not in items.columns:
        items["split"] = "train"
    return items


def held_out_everywhere(items: pd.DataFrame) -> np.ndarray:
    """Each item's split in the union: its own, except that a group held out (test) in any member is test in all,
    so a garment photographed in two styles is never trained on in one and tested on in the other."""
    split = items["split"].astype(str).to_numpy().copy()
    groups = items["group"].astype(str).to_numpy()
    held_out = set(groups[split == "test"])
    split[np.isin(groups, list(held_out)) & (split != "test")] = "test"
    return split


def _joined_pixels(members: list[Catalog]) -> np.ndarray | FileImages:
    if not members[0].on_disk:
        return np.concatenate([np.asarray(m.pixels) for m in members])
    files = [m.pixels for m in members]
    boxes = None
    if any(f.boxes is not None for f in files):
        boxes = np.concatenate([f.boxes if f.boxes is not None else np.full((len(f), 4), -1) for f in files])
    roots = None if any(f.roots is None for f in files) else tuple(r for f in files for r in f.roots)
    return FileImages(np.concatenate([np.asarray(f.paths) for f in files]), boxes, files[0].domain, roots,
                      files[0].draft)
