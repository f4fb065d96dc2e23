"""``python -m core bench cross-domain``: does a photo of one style find its garment in a catalogue of another?

A stakeholder's photo is rarely in the catalogue's style: a phone shot on a bed searched against a shop's studio
photos, or a shop photo of a model searched against phone shots. Each query here is a held-out photo of one built-in
catalogue (its test split: whole groups, so no fine-tuned run has trained on it) searched against the other through
``Workspace.search`` with the dashboard's defaults; its score is the share of its top 10 in a category a person
accepts (``core.catalog.shared_categories``), overall and per query category.

Two directions are what a user of both catalogues meets. A method fitted on both catalogues can learn the pair and
lose everything else, so every model is also judged on styles that no fit has seen:

- ``cut out on white``: the garment photos' held-out photos with the garment separated by the project's own
  isolation and put on white, a packshot (searched against the shop);
- ``cropped to the garment``: the shop's held-out photos cropped to the garment isolation finds on the model
  (searched against the garment photos);
- the smoke photos (``--photos DIR``, labelled in Fashion-MNIST's categories), against both catalogues.

Each target catalogue is searched with its served model and with ImageNet features, side by side. A confusion
count (query category → category of the top hit) comes with every row, for the Model page's heatmap.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.artifacts import atomic_path
from core.bench.photos import read_labels
from core.catalog.base import Catalog
from core.catalog.fashion_mnist import CATEGORIES as FASHION_MNIST_CATEGORIES
from core.catalog.registry import open_catalog
from core.catalog.shared_categories import FASHION_MNIST, GARMENT_PHOTOS, SHOP, accepted
from core.config import Settings
from core.photo.decode import decode_image, read_image_file
from core.photo.isolate import isolate, propose_box
from core.progress import Progress, no_progress
from core.search.serving import served_settings
from core.search.workspace import Workspace

SERVED = False  # it opens the catalogues and models it compares itself
K = 10
DIRECTIONS = ((GARMENT_PHOTOS, SHOP), (SHOP, GARMENT_PHOTOS))
MODELS = ("served", "imagenet")
CUTOUT, CROPPED, AS_TAKEN, SMOKE = "cut out on white", "cropped to the garment", "held-out photos", "smoke photos"
DEFAULT_THIRD_STYLE_LIMIT = 240  # GrabCut costs ~0.3-2.5 s a photo on 2 cores; cached on disk after the first run
RESULTS_NAME = "cross-domain.json"


@dataclass(frozen=True)
class Query:
    photo: Image.Image
    category: str  # in the source catalogue's (or the smoke photos') own categories
    accepted: tuple[str, ...]  # in the target catalogue's categories
    name: str  # the source row's id, or the smoke photo's file name


def held_out_queries(source: Catalog, target: str, limit: int = 0) -> list[tuple[int, str, tuple[str, ...]]]:
    """(row, category, accepted) of the source's held-out rows whose category the target has a counterpart for;
    ``limit`` keeps an evenly spaced subset (0: all)."""
    found = [(int(row), category, acc) for row in source.query_rows()
             if (acc := accepted(source.name, target, category := str(source.items["category"].iat[row])))]
    if limit and len(found) > limit:
        found = [found[i] for i in np.linspace(0, len(found) - 1, limit).round().astype(int)]
    return found


def cut_out_on_white(photo: Image.Image) -> Image.Image:
    """The garment alone on white, cropped to it (a packshot made from a phone photo); the photo itself when
    isolation finds no garment."""
    found = isolate(photo)
    if not found.found:
        return photo
    white = Image.new("RGB", photo.size, (255, 255, 255))
    white.paste(photo, mask=found.mask_image())
    return white.crop(propose_box(found, *photo.size))


def cropped_to_garment(photo: Image.Image) -> Image.Image:
    """The photo cropped to the garment isolation finds (an on-model photo becomes a close-up of the garment)."""
    found = isolate(photo)
    return photo.crop(propose_box(found, *photo.size)) if found.found else photo


STYLE_MAKERS = {CUTOUT: cut_out_on_white, CROPPED: cropped_to_garment}


def styled(photo: Image.Image, style: str, cache: Path | None) -> Image.Image:
    """The photo in a third style, cached as PNG under ``cache`` (isolation is the slow part of this benchmark)."""
    if cache is not None and cache.is_file():
        try:
            return decode_image(read_image_file(cache))
        except (OSError, ValueError):
            pass  # damaged: made again below
    made = STYLE_MAKERS[style](photo)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            made.save(tmp, format="PNG")
    return made


def catalogue_queries(source: Catalog, target: str, style: str, limit: int, cache_root: Path | None,
                      progress: Progress = no_progress) -> list[Query]:
    rows = held_out_queries(source, target, limit)
    queries = []
    for done, (row, category, acc) in enumerate(rows, 1):
        photo = source.image(row)
        if style != AS_TAKEN:
            cache = cache_root / source.key / style.replace(" ", "-") / f"{row}.png" if cache_root else None
            photo = styled(photo, style, cache)
        queries.append(Query(photo, category, acc, str(source.items["id"].iat[row])))
        if done % 20 == 0 or done == len(rows):
            progress(f"Photos of {source.name}, {style}", done, len(rows))
    return queries


def smoke_queries(folder: Path, target: str) -> list[Query]:
    """The labelled photos of ``folder`` (labels in Fashion-MNIST's categories, first one mapped) for ``target``."""
    queries = []
    for photo in read_labels(folder, FASHION_MNIST_CATEGORIES):
        acc = tuple(dict.fromkeys(c for label in photo.accepted for c in accepted(FASHION_MNIST, target, label)))
        if acc:
            image = decode_image(read_image_file(folder / photo.file))
            queries.append(Query(image, photo.accepted[0], acc, photo.file))
    return queries


def score(ws: Workspace, queries: list[Query], k: int = K, progress: Progress = no_progress,
          stage: str = "Searching") -> dict:
    """Top-``k`` share in an accepted category through ``Workspace.search`` (the dashboard's defaults), overall
    (mean over queries), per query category, and the confusion counts query category → top hit's category."""
    shares, by_category, confusion = [], defaultdict(list), defaultdict(Counter)
    for done, query in enumerate(queries, 1):
        hits = ws.search(query.photo, k=k).hits["category"].astype(str).tolist()
        share = float(np.mean([hit in query.accepted for hit in hits])) if hits else 0.0
        shares.append(share)
        by_category[query.category].append(share)
        if hits:
            confusion[query.category][hits[0]] += 1
        if done % 20 == 0 or done == len(queries):
            progress(stage, done, len(queries))
    return {"queries": len(queries), f"top{k}_share": round(float(np.mean(shares)), 3) if shares else None,
            "per_category": {c: {"queries": len(v), "share": round(float(np.mean(v)), 3)}
                             for c, v in sorted(by_category.items())},
            "confusion": {c: dict(counts) for c, counts in sorted(confusion.items())}}


def model_settings(settings: Settings, catalog: str, model: str) -> Settings:
    """``served``: the run asked for (``--run``, e.g. one trained on both catalogues, serves both targets), else
    each target's own served model; ``imagenet``: the backbone's ImageNet features."""
    chosen = settings.replace(catalog=catalog, run="imagenet" if model == "imagenet" else settings.run)
    return served_settings(chosen)


def run_cross_domain(settings: Settings, third_style_limit: int = DEFAULT_THIRD_STYLE_LIMIT,
                     photos: Path | None = None, limit: int = 0, models: tuple[str, ...] = MODELS,
                     progress: Progress = no_progress) -> dict:
    """Every direction, third style and model; ``limit`` caps the held-out queries per direction (0: all)."""
    cache_root = Path(settings.artifacts_dir) / "bench-cross-domain" / "styled"
    sources = {name: open_catalog(settings.replace(catalog=name)) for name in (GARMENT_PHOTOS, SHOP)}
    query_sets: dict[str, dict[str, list[Query]]] = defaultdict(dict)  # target → row name → queries
    for source, target in DIRECTIONS:
        query_sets[target][f"{source} → {target}"] = catalogue_queries(sources[source], target, AS_TAKEN, limit,
                                                                       None, progress)
    query_sets[SHOP][f"{GARMENT_PHOTOS} {CUTOUT} → {SHOP}"] = catalogue_queries(
        sources[GARMENT_PHOTOS], SHOP, CUTOUT, third_style_limit, cache_root, progress)
    query_sets[GARMENT_PHOTOS][f"{SHOP} {CROPPED} → {GARMENT_PHOTOS}"] = catalogue_queries(
        sources[SHOP], GARMENT_PHOTOS, CROPPED, third_style_limit, cache_root, progress)
    if photos is not None:
        for target in (GARMENT_PHOTOS, SHOP):
            query_sets[target][f"{SMOKE} ({photos.name}) → {target}"] = smoke_queries(photos, target)
    rows: dict[str, dict] = defaultdict(dict)
    described = {}
    for target, sets in query_sets.items():
        for model in models:
            ws = Workspace.open(model_settings(settings, target, model), progress)
            described[f"{target} / {model}"] = {"model": ws.embedder.description, "model_key": ws.embedder.key,
                                                "run": ws.settings.run or None}
            for name, queries in sets.items():
                rows[name][model] = score(ws, queries, progress=progress, stage=f"{name} ({model})")
    return {"k": K, "queries_are": "each source catalogue's test split (whole groups: never trained on)",
            "third_styles": [CUTOUT, CROPPED], "rows": dict(rows), "models": described}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--third-style-limit", type=int, default=DEFAULT_THIRD_STYLE_LIMIT,
                        help="held-out photos per third style (isolation is slow; cached after the first run)")
    parser.add_argument("--limit", type=int, default=0, help="held-out queries per direction (0: all)")
    parser.add_argument("--photos", type=Path, default=None,
                        help="a folder of labelled photos (labels.csv in Fashion-MNIST's categories) searched "
                             "against both catalogues too, e.g. ../shared/photos")
    parser.add_argument("--models", default=",".join(MODELS), help="served, imagenet or both (comma-separated)")


def main(args: argparse.Namespace, settings: Settings, progress: Progress) -> dict:
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if not models or set(models) - set(MODELS):
        raise ValueError(f"--models takes {' and/or '.join(MODELS)} (got {args.models!r})")
    results = run_cross_domain(settings, args.third_style_limit, args.photos, args.limit, models, progress)
    saved = Path(settings.artifacts_dir) / "bench-cross-domain" / RESULTS_NAME
    saved.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(saved) as tmp:
        tmp.write_text(json.dumps(results, indent=1))
    print(f"saved for the Model page: {saved}", file=sys.stderr)
    for name, by_model in results["rows"].items():
        figures = "  ".join(f"{m} {r[f'top{K}_share']}" for m, r in by_model.items())
        print(f"{name} ({next(iter(by_model.values()))['queries']} queries): {figures}", file=sys.stderr)
    return results


def saved_results(settings: Settings) -> dict | None:
    """The last run's figures (the Model page shows them); None before the first run or when unreadable."""
    path = Path(settings.artifacts_dir) / "bench-cross-domain" / RESULTS_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
