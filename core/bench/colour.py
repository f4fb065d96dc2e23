"""``python -m core bench colour``: colours read from the pixels (``core.photo.colour``) against a shop's own labels,
what they cost, and two contact sheets to look at.

- **Agreement with the shop**: the Luma shop labels each of its 440 items with one colour, someone else's judgement
  of the garment; the figure is the share of items whose named colours include it (the shop's "Gray" is "grey",
  "Silver" grey, "Lavender" purple), with the average number of names per item beside it, since naming every colour
  would agree with anything. The misses are drawn on a contact sheet.
- **Cost**: the naming alone per photo (the photo already decoded, as in ``prepare``'s check pass), and the check
  pass over garment photos with and without naming, in worker processes as ``prepare`` runs it.
- **Garment photos**: 48 of them with the pixels that were read (the rest dimmed) and their colours as swatches, and
  how often each colour was named over the prepared catalogue.
- **Words with the photo**: garment photos of the test split searched with the served model, without words and with
  "blue" (or "red", "black") re-ranking the results: the share of the top 10 in that colour.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.catalog.base import PHOTO_COLOURS, Catalog
from core.catalog.prepare import check_images
from core.catalog.registry import open_catalog
from core.config import Settings
from core.photo.colour import garment_colours, garment_pixels, naming_table, small_rgb
from core.progress import Progress, no_progress
from core.threads import loader_workers

SERVED = False  # needs no model: it opens the built-in colour catalogues itself
SHOP, PHOTOS = "luma-shop", "garment-photos"
SHOP_WORDS = {"gray": "grey", "silver": "grey", "lavender": "purple"}  # the shop's colour words as basic terms
CELL, CAPTION = 150, 44


def shop_term(label: str) -> str:
    word = str(label).strip().lower()
    return SHOP_WORDS.get(word, word)


def run_colour_bench(settings: Settings, out: Path, photos: int = 48, timed: int = 500, checked: int = 1000,
                     words: int = 100, progress: Progress = no_progress) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    naming_table()  # once per process, as prepare builds it before its workers start: not in the per-photo figure
    shop = open_catalog(dataclasses.replace(settings, catalog=SHOP))
    garments = open_catalog(dataclasses.replace(settings, catalog=PHOTOS))
    figures = {"shop": shop_agreement(shop, out / "colour-shop-misses.png", progress)}
    rng = np.random.default_rng(settings.seed)
    rows = np.sort(rng.choice(len(garments), size=min(photos, len(garments)), replace=False))
    contact_sheet(garments, rows, out / "colour-garment-photos.png")
    figures["garment_photos"] = {
        "items": len(garments), **naming_cost(garments, timed, settings.seed),
        **check_pass_cost(garments, checked, loader_workers(settings), settings.seed),
        "names_per_item": round(float(garments.items[PHOTO_COLOURS].map(len).mean()), 3),
        "items_per_colour": dict(Counter(t for names in garments.items[PHOTO_COLOURS] for t in names).most_common()),
        "colour_tags": sorted(t for t, source in garments.tag_sources.items() if source.startswith("colour from")),
        "tag_head_vocabulary": garments.trained_tags(),
        "contact_sheet": str(out / "colour-garment-photos.png"),
    }
    if words:
        figures["words_with_the_photo"] = words_rerank(settings, queries=words, progress=progress)
    return figures


def words_rerank(settings: Settings, queries: int = 100, colours: tuple[str, ...] = ("blue", "red", "black"),
                 progress: Progress = no_progress) -> dict:
    """"Like this, in blue": for garment photos of the test split searched with the served model, the share of the
    10 results whose colours include the word, without words and with the word re-ranking them."""
    from core.search.serving import served_settings
    from core.search.workspace import Workspace

    ws = Workspace.open(served_settings(dataclasses.replace(settings, catalog=PHOTOS, run="")), progress)
    named = ws.catalog.items[PHOTO_COLOURS].map(set).to_numpy()
    rows = ws.catalog.query_rows()
    rows = np.sort(np.random.default_rng(settings.seed).choice(rows, size=min(queries, len(rows)), replace=False))
    out = {"model": ws.embedder.key, "queries": len(rows)}
    for word in colours:
        plain, worded = [], []
        for row in rows:
            for shares, words in ((plain, ""), (worded, word)):
                result = ws.search_item(int(row), k=10, words=words)
                shares.append(np.mean([word in named[r] for r in result.hits["row"]]))
        out[word] = {"share_of_top10_without_words": round(float(np.mean(plain)), 3),
                     "share_of_top10_with_the_word": round(float(np.mean(worded)), 3),
                     "share_of_catalogue": round(float(np.mean([word in n for n in named])), 3)}
    return out


def shop_agreement(shop: Catalog, sheet: Path, progress: Progress = no_progress) -> dict:
    """The share of shop items whose colours, named afresh from their photos, include the shop's own colour."""
    truth = [shop_term(c) for c in shop.items["colour"]]
    named, misses, seconds = [], [], 0.0
    for row in range(len(shop)):
        photo = shop.pixels.photo(row)
        started = time.perf_counter()
        found = garment_colours(photo)
        seconds += time.perf_counter() - started
        named.append(found.names)
        if truth[row] not in found.names:
            misses.append(row)
        progress("Naming the shop's colours", row + 1, len(shop))
    hits = np.array([t in names for t, names in zip(truth, named, strict=True)])
    stored = [tuple(names) for names in shop.items[PHOTO_COLOURS]]
    per_colour = {term: round(float(hits[[t == term for t in truth]].mean()), 3)
                  for term in sorted(set(truth), key=lambda t: -truth.count(t))}
    contact_sheet(shop, np.array(misses, dtype=int), sheet, truth={r: truth[r] for r in misses})
    return {
        "items": len(shop), "agreement": round(float(hits.mean()), 4), "goal": 0.85,
        "names_per_item": round(float(np.mean([len(n) for n in named])), 3),
        "first_name_agreement": round(float(np.mean([n[0] == t for t, n in zip(truth, named, strict=True)])), 4),
        "agreement_per_colour": per_colour,
        "misses": len(misses),
        "missed_as": dict(Counter(f"{truth[r]} -> {'+'.join(named[r])}" for r in misses).most_common(12)),
        "naming_ms_per_photo": round(1000 * seconds / len(shop), 2),
        "prepared_equals_fresh": round(float(np.mean([s == n for s, n in zip(stored, named, strict=True)])), 4),
        "contact_sheet": str(sheet),
    }


def naming_cost(catalog: Catalog, n: int, seed: int) -> dict:
    """Milliseconds to name one photo's colours, the photo already decoded (what ``prepare`` adds to its check)."""
    rows = np.random.default_rng(seed).choice(len(catalog), size=min(n, len(catalog)), replace=False)
    decoded = [catalog.pixels.photo(int(r)) for r in rows]
    started = time.perf_counter()
    for photo in decoded:
        garment_colours(photo)
    per_photo = (time.perf_counter() - started) / len(decoded)
    return {"naming_ms_per_photo": round(1000 * per_photo, 2), "naming_timed_photos": len(decoded),
            "naming_s_whole_catalogue_one_core": round(per_photo * len(catalog), 1)}


def check_pass_cost(catalog: Catalog, n: int, workers: int, seed: int) -> dict:
    """``prepare``'s check pass over ``n`` photos in its worker processes, without and with the colours."""
    rows = np.sort(np.random.default_rng(seed).choice(len(catalog), size=min(n, len(catalog)), replace=False))
    paths = catalog.items["path"].to_numpy()[rows].tolist()
    seconds = {}
    for colours in (False, True):
        started = time.perf_counter()
        check_images(paths, workers, colours=colours)
        seconds[colours] = time.perf_counter() - started
    scale = len(catalog) / len(paths)
    return {"check_photos": len(paths), "check_workers": workers, "check_s": round(seconds[False], 2),
            "check_with_colours_s": round(seconds[True], 2),
            "colours_add_s_whole_catalogue": round((seconds[True] - seconds[False]) * scale, 1)}


def contact_sheet(catalog: Catalog, rows: np.ndarray, path: Path, columns: int = 8,
                  truth: dict[int, str] | None = None) -> Path:
    """Each photo with the pixels the colours were read from (the rest dimmed), and its colours as swatches with
    their shares; ``truth``: the label each photo should have had (drawn above the swatches)."""
    font = ImageFont.load_default(size=11)
    n_rows = max(1, -(-len(rows) // columns))
    sheet = Image.new("RGB", (columns * CELL, n_rows * (CELL + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(rows):
        x, y = (i % columns) * CELL, (i // columns) * (CELL + CAPTION)
        photo = catalog.pixels.photo(int(row))
        rgb = small_rgb(photo, side=CELL)
        mask = garment_pixels(photo)[1]
        shown = Image.fromarray(mask.astype(np.uint8) * 255).resize((rgb.shape[1], rgb.shape[0]),
                                                                   Image.Resampling.NEAREST)
        dimmed = Image.blend(Image.fromarray(rgb), Image.new("RGB", (rgb.shape[1], rgb.shape[0]), "white"), 0.75)
        dimmed.paste(Image.fromarray(rgb), mask=shown)
        sheet.paste(dimmed, (x + (CELL - rgb.shape[1]) // 2, y + (CELL - rgb.shape[0]) // 2))
        found = garment_colours(photo)
        top = y + CELL + 2
        if truth is not None:
            draw.text((x + 4, top), f"shop: {truth[int(row)]}", fill=(170, 0, 0), font=font)
            top += 14
        for j, (name, share, swatch) in enumerate(zip(found.names, found.shares, found.swatches, strict=True)):
            left = x + 4 + j * 49
            draw.rectangle((left, top, left + 10, top + 10), fill=swatch, outline=(90, 90, 90))
            draw.text((left + 13, top - 1), f"{name}", fill=(30, 30, 30), font=font)
            draw.text((left + 13, top + 11), f"{share:.0%}", fill=(110, 110, 110), font=font)
    sheet.save(path)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--photos", type=int, default=48, help="garment photos on the contact sheet")
    parser.add_argument("--timed", type=int, default=500, help="garment photos the naming is timed on")
    parser.add_argument("--checked", type=int, default=1000,
                        help="garment photos prepare's check pass is timed on, without and with the colours")
    parser.add_argument("--words", type=int, default=100,
                        help="garment photos searched with and without a colour word (0: skip; needs the served model)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the contact sheets (default: <artifacts>/bench-colour)")


def main(args: argparse.Namespace, settings: Settings, progress: Progress) -> dict:
    out = args.out or Path(settings.artifacts_dir) / "bench-colour"
    return run_colour_bench(settings, out, photos=args.photos, timed=args.timed, checked=args.checked,
                            words=args.words, progress=progress)

