"""Rebuild the built-in colour catalogues in ``builtin/`` from the source data sets (see ../shared/datasets/README).

    .venv/bin/python scripts/build_catalogues.py [--datasets ../shared/datasets] [--out builtin] [--only NAME]

- ``builtin/garment-photos/``: the clothing dataset's 5,096 phone photos that carry one of its 17 garment labels
  (CC0 1.0), grouped by who sent them, so one person's photos of one garment never straddle train and test.
- ``builtin/luma-shop/``: the Luma sample shop's 440 products × colours (OSL-3.0 images, OSL-3.0/AFL-3.0 texts),
  grouped by product, with its name, colour, description, price, gender, material, pattern and climate.

Images are downscaled only as far as the model and the thumbnails allow: the shorter side to 256 px (the 224-px
model input is a centre crop of 256 / 0.875), JPEG quality 82 (16 KB a photo). The output is deterministic (same
bytes from the same sources), so the catalogues' keys, and the runs trained on them, stay put when it is run again.
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from core.catalog.builtin import write_manifest  # noqa: E402 - the project's own code, run as a script

SHORTER_SIDE = 256
QUALITY = 82
NOT_GARMENTS = {"Not sure", "Other", "Skip"}
LUMA_COLUMNS = ["id", "image", "category", "name", "colour", "gender", "description", "price", "material",
                "pattern", "climate", "group"]


def downscaled(source: Path) -> bytes:
    """The photo upright, RGB, shorter side SHORTER_SIDE (never enlarged), as JPEG bytes without metadata."""
    with Image.open(source) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
    scale = SHORTER_SIDE / min(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=QUALITY, optimize=True)
    return buffer.getvalue()


def write_table(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def build_garment_photos(source: Path, out: Path) -> int:
    rows = []
    (out / "images").mkdir(parents=True, exist_ok=True)
    with (source / "images.csv").open(encoding="utf-8") as fh:
        for record in csv.DictReader(fh):
            photo = source / "images" / f"{record['image']}.jpg"
            if record["label"] in NOT_GARMENTS or not photo.is_file():
                continue
            short = record["image"][:8]  # the UUID's first block: unique in this set, and readable
            (out / "images" / f"{short}.jpg").write_bytes(downscaled(photo))
            rows.append({"id": short, "image": f"images/{short}.jpg", "category": record["label"],
                         "group": f"sender-{record['sender_id']}",
                         "tags": "kids" if record["kids"] == "True" else ""})
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "short ids collide: use a longer prefix"
    write_table(out / "items.csv", ["id", "image", "category", "group", "tags"], sorted(rows, key=lambda r: r["id"]))
    shutil.copy(source / "LICENSE", out / "LICENSE")
    return len(rows)


def build_luma_shop(source: Path, out: Path) -> int:
    rows = []
    (out / "images").mkdir(parents=True, exist_ok=True)
    with (source / "items.csv").open(encoding="utf-8") as fh:
        for record in csv.DictReader(fh):
            name = Path(record["image"]).name
            (out / "images" / name).write_bytes(downscaled(source / record["image"]))
            # the shop's texts hold HTML entities ("CoolTech&trade;"): stored as the characters they stand for
            rows.append({**{c: html.unescape(record.get(c, "")) for c in LUMA_COLUMNS}, "image": f"images/{name}",
                         "category": record["article_type"], "group": record["parent_sku"] or record["id"]})
    write_table(out / "items.csv", LUMA_COLUMNS, sorted(rows, key=lambda r: r["id"]))
    for licence in source.glob("LICENSE*"):
        shutil.copy(licence, out / licence.name)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=ROOT / "builtin")
    parser.add_argument("--only", choices=["garment-photos", "luma-shop"], help="build one of the two")
    args = parser.parse_args()
    for name, build, folder in (("garment-photos", build_garment_photos, "clothing-dataset"),
                                ("luma-shop", build_luma_shop, "luma-shop")):
        if args.only and name != args.only:
            continue
        target = args.out / name
        shutil.rmtree(target, ignore_errors=True)
        count = build(args.datasets / folder, target)
        write_manifest(target)
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        print(f"{name}: {count:,} items, {size / 2**20:.1f} MB in {target}")


if __name__ == "__main__":
    main()
