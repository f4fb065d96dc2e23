"""Faults a real deployment meets (issue 29): a full disk, read-only artifacts, hostile image shapes, absurd values,
and errors that must reach the server log rather than the visitor."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import encoded, tiny_settings, write_photo_records
from PIL import Image

from core.catalog.prepare import prepare_catalog
from core.catalog.sources import SourceSpec
from core.photo.decode import ImageShapeError, decode_image

ROOT = Path(__file__).resolve().parent.parent


def odd_shop(root: Path, **extra_columns) -> Path:
    """A small table catalogue plus a 1×1 dot and a 20000×20 strip (both decodable, neither a garment photo)."""
    records = write_photo_records(root, per_category=2)
    for name, size in {"dot.png": (1, 1), "strip.png": (20000, 20)}.items():
        Image.new("RGB", size, (30, 40, 110)).save(root / "images" / name)
        records.append({"id": name[:-4], "image": f"images/{name}", "category": "Shirt", "colour": "navy",
                        "brand": "Acme", "price": "10", "description": "navy"})
    for column, values in extra_columns.items():
        for record, value in zip(records, values, strict=False):
            record[column] = value
    pd.DataFrame(records).to_csv(root / "products.csv", index=False)
    return root / "products.csv"


# ------------------------------------------------------------------------------- 4. shapes, not only pixels
@pytest.mark.parametrize("size", [(4000, 1), (1, 1), (2000, 60)])
def test_a_query_of_an_extreme_shape_is_refused_with_its_size(size):
    with pytest.raises(ImageShapeError, match=f"{size[0]}×{size[1]} pixels"):
        decode_image(encoded(Image.new("RGB", size, (30, 40, 110))))
    assert decode_image(encoded(Image.new("RGB", (400, 20)))).size == (400, 20)  # 20:1 is still a photo


STRIP_MEMORY = """
import io, resource, sys
from PIL import Image
from core.photo.decode import decode_image
from core.photo.domain import PhotoDomain
buffer = io.BytesIO()
Image.new("RGB", (int(sys.argv[1]), int(sys.argv[2])), (30, 40, 110)).save(buffer, "PNG")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
PhotoDomain(224).convert(decode_image(buffer.getvalue(), odd_shapes="pad"))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_a_kept_strip_costs_what_a_photo_costs_not_hundreds_of_megabytes():
    """Before: a 4000×1 PNG became 262,144×256 pixels in the model's resize, +270 MB a search."""
    def grown(width: int, height: int) -> float:
        return float(subprocess.run([sys.executable, "-c", STRIP_MEMORY, str(width), str(height)], cwd=ROOT,
                                    capture_output=True, text=True, check=True).stdout)

    strip = grown(4000, 1)
    assert strip <= 20, f"+{strip:.1f} MB for a 4000×1 strip"


def test_degenerate_catalogue_images_are_listed_and_left_out_unless_kept(tmp_path):
    source = odd_shop(tmp_path / "shop")
    report = prepare_catalog(SourceSpec(path=str(source)), tiny_settings(tmp_path), name="odd")
    listed = report.problems.set_index("entry")
    assert {"images/dot.png", "images/strip.png"} <= set(listed.index)  # quoted as the table gives them
    assert "1×1 pixels" in listed.loc["images/dot.png", "problem"]
    assert "20000×20" in listed.loc["images/strip.png", "problem"]
    assert not report.items["id"].isin(["dot", "strip"]).any()
    kept = prepare_catalog(SourceSpec(path=str(source)), tiny_settings(tmp_path), name="odd-kept",
                           keep_odd_shapes=True)
    assert kept.items["id"].isin(["dot", "strip"]).sum() == 2 and kept.problems.empty
