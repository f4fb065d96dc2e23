"""``python -m core bench photos DIR``: how well real photos land in the catalogue, for any folder of photos.

DIR holds photos and a ``labels.csv`` (``file,accepted``; ``accepted`` lists the catalogue categories a person would
accept for the photo, separated by ``|``). For each photo: the share of its 10 nearest items (exact search) whose
category is accepted, and whether the predicted category (head or neighbour vote) is accepted. A contact sheet
(photo, the query the model saw, the top 5 framed green or red) is written beside the JSON.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.catalog.montage import tile
from core.config import Settings
from core.photo.decode import ImageDecodeError, decode_image, read_image_file
from core.progress import Progress
from core.search.workspace import Workspace

LABELS = "labels.csv"
CELL = 112
SERVED = True  # measures the catalogue's served model


class LabelsError(ValueError):
    """labels.csv cannot be used; the message names the line and what is wrong."""


@dataclass(frozen=True)
class LabelledPhoto:
    file: str
    accepted: tuple[str, ...]


def read_labels(folder: Path, categories: list[str]) -> list[LabelledPhoto]:
    folder = Path(folder)
    if not folder.is_dir():
        hint = " (it is a file: name the folder it is in)" if folder.is_file() else ""
        raise LabelsError(f"{folder} is not a folder{hint}.")
    path = folder / LABELS
    if not path.is_file():
        raise LabelsError(f"{folder} has no {LABELS}. It needs a header `file,accepted` and one line per photo, "
                          "e.g. `shirt.jpg,T-shirt/top|Shirt`.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{LABELS} is not UTF-8 text.") from exc
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip() for c in rows[0][:2]] != ["file", "accepted"]:
        found = ",".join(rows[0]) if rows else "nothing"
        raise LabelsError(f"{LABELS}, line 1: the header must be `file,accepted`, found {found!r}.")
    photos, seen = [], set()
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise LabelsError(f"{LABELS}, line {line}: expected `file,accepted`, found {','.join(row)!r}.")
        name = row[0].strip()
        accepted = tuple(c.strip() for c in row[1].split("|") if c.strip())
        unknown = [c for c in accepted if c not in categories]
        if unknown:
            raise LabelsError(f"{LABELS}, line {line}: {', '.join(map(repr, unknown))} is not a category of this "
                              f"catalogue ({', '.join(categories)}).")
        target = (folder / name).resolve()
        if not target.is_relative_to(folder.resolve()):
            raise LabelsError(f"{LABELS}, line {line}: {name!r} is outside the folder.")
        if not target.is_file():
            raise LabelsError(f"{LABELS}, line {line}: there is no photo {name!r} in {folder}.")
        if name in seen:
            raise LabelsError(f"{LABELS}, line {line}: {name!r} is listed twice.")
        seen.add(name)
        photos.append(LabelledPhoto(name, accepted))
    if not photos:
        raise LabelsError(f"{LABELS} lists no photos.")
    return photos


def run_photo_bench(ws: Workspace, folder: Path, isolate: bool | None = None, k: int = 10
                    ) -> tuple[dict, Image.Image]:
    """The two shares with per-photo rows, and the contact sheet."""
    folder = Path(folder)
    photos = read_labels(folder, ws.catalog.categories)
    rows, sheet_rows = [], []
    for item in photos:
        try:
            photo = decode_image(read_image_file(folder / item.file, item.file), name=item.file)
        except ImageDecodeError as exc:
            raise LabelsError(f"{item.file}: {exc}") from exc
        result = ws.search(photo, k=k, exact=True, isolate=isolate)
        accepted = np.isin(result.hits["category"].to_numpy(), item.accepted)
        predicted = result.predicted[0][0] if result.predicted else ""
        rows.append({"file": item.file, "accepted": "|".join(item.accepted), "predicted": predicted,
                     "top10_accepted": round(float(accepted.mean()), 3), "vote_correct": predicted in item.accepted,
                     "garment_found": bool(result.steps.box is not None) if result.steps else False})
        sheet_rows.append((photo, result.query_image, result.hits["row"].to_numpy()[:5], accepted[:5], item.file))
    shares = [r["top10_accepted"] for r in rows]
    figures = {"photos": len(rows), "isolate": ws.isolates if isolate is None else isolate,
               "model": ws.embedder.key, "top10_accepted": round(float(np.mean(shares)), 3),
               "vote_accuracy": round(float(np.mean([r["vote_correct"] for r in rows])), 3), "per_photo": rows}
    return figures, contact_sheet(ws, sheet_rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", nargs="?", type=Path, help="a folder of photos with a labels.csv "
                        "(file,accepted; accepted categories separated by |)")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None, dest="isolate_photo",
                        help="separate the garment first (default: the isolate setting; auto = only for "
                             "fine-tuned models)")


def main(args: argparse.Namespace, settings: Settings, progress: Progress) -> dict:
    """The figures, with the contact sheet written beside the JSON: ``--output``, else a file under the artifacts
    (``args.output`` is set to it, so that the JSON is written there too)."""
    if args.folder is None:
        raise ValueError("bench photos needs a folder: python -m core bench photos DIR (with DIR/labels.csv)")
    workspace = Workspace.open(settings, progress)
    output = args.output or (Path(settings.artifacts_dir) / "bench-photos" /
                             f"{args.folder.resolve().name}-{workspace.embedder.key}" / "photos.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    args.output = output
    results, sheet = run_photo_bench(workspace, args.folder, isolate=args.isolate_photo)
    results["contact_sheet"] = str(output.with_suffix(".png"))
    sheet.save(results["contact_sheet"])
    print(f"contact sheet: {results['contact_sheet']}", file=sys.stderr)
    return results


def contact_sheet(ws: Workspace, rows: list) -> Image.Image:
    """One line per photo: the photo, the query the model saw, the top 5 (green frame: accepted category)."""
    label_height = 16
    sheet = Image.new("RGB", (7 * (CELL + 6), len(rows) * (CELL + label_height + 6)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for r, (photo, query, hits, accepted, name) in enumerate(rows):
        y = r * (CELL + label_height + 6)
        draw.text((3, y), name, fill=(30, 30, 30), font=font)
        y += label_height
        framed = photo.copy()
        framed.thumbnail((CELL, CELL))
        sheet.paste(framed, (3 + (CELL - framed.width) // 2, y + (CELL - framed.height) // 2))
        sheet.paste(query.convert("RGB").resize((CELL, CELL), Image.Resampling.NEAREST), (CELL + 9, y))
        for c, (row, ok) in enumerate(zip(hits, accepted, strict=True)):
            x = (c + 2) * (CELL + 6) + 3
            draw.rectangle([x - 3, y - 3, x + CELL + 2, y + CELL + 2], fill=(40, 160, 60) if ok else (200, 50, 50))
            sheet.paste(tile(ws.catalog, int(row), CELL), (x, y))
    return sheet
