"""``python -m core bench hostile``: peak memory and time of the CLI and the app's search path under the inputs that
used to exhaust memory (issue 13), each in a process of its own so its peak is its own (measured by a small
launcher: see ``LAUNCHER``).

- ``search /dev/zero`` with the CLI (it grew to 23.5 GB before sizes were checked first);
- a table catalogue with a sparse 3 GB ``big.jpg`` prepared with the CLI (3.6 GB before its rejection);
- a 5 KB palette PNG of 39 MP, and eight concurrent searches with a 15.6 MP one through ``Workspace.search``, the
  call each app session makes (340 MB a decode, 2.8 GB for eight, before);
- a Parquet table of 30 million rows in 400 KB added the way the Home page adds it (2.3 GB before its refusal);
- a 15.6 MP 32-bit TIFF with an EXIF rotation (550 MB a decode before).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from core.config import Settings
from core.progress import Progress

ROOT = Path(__file__).resolve().parents[2]  # the repository: the measured commands run from there
SERVED = False  # makes catalogues of its own


def palette_png(path: Path, width: int, height: int) -> Path:
    image = Image.new("P", (width, height), 0)
    image.putpalette([255, 255, 255, 20, 30, 120] + [0, 0, 0] * 254)
    image.paste(1, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    image.save(path, optimize=True)
    return path


def parquet_bomb(path: Path, rows: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": pa.array(["a.jpg"] * rows)}), path, compression="zstd")
    return path


def deep_tiff(path: Path, width: int, height: int) -> Path:
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 2**20, (height, width), dtype=np.int32)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways
    Image.fromarray(pixels, mode="I").save(path, compression="tiff_deflate", exif=exif)
    return path


# A forked child's peak RSS starts at its parent's RSS (Linux keeps the high-water mark across exec), and this
# process holds the fixtures: each command runs under a small launcher, and the launcher reports its child's peak.
LAUNCHER = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
print(json.dumps({"exit": done.returncode, "peak_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "output": done.stdout}))
"""


def measured(argv: list[str], env: dict[str, str] | None = None) -> dict:
    """Exit status, seconds, peak resident memory (MB) of one process, and the last line it printed."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=True)
    report = json.loads(done.stdout)
    lines = [line for line in report["output"].strip().splitlines() if line.strip()]
    return {"exit": report["exit"], "seconds": round(time.perf_counter() - started, 2),
            "peak_mb": round(report["peak_kb"] / 1024, 1), "said": lines[-1][:200] if lines else ""}


BASELINE = "import core.search.workspace, core.photo.decode; print('imported')"
PAGE_PREPARE = """
import sys
from pathlib import Path
from core.config import Settings
from core.catalog.prepare import prepare_catalog
from core.catalog.sources import CatalogError, SourceSpec
settings = Settings.from_env(artifacts_dir=Path(sys.argv[2]))
try:
    prepare_catalog(SourceSpec(path=sys.argv[1]), settings, confine_to=[Path(sys.argv[1]).parent],
                    max_items=settings.page_max_items, replace=False)
except CatalogError as exc:
    print(f"refused: {exc}")
"""
DECODE = """
import sys
from core.photo.decode import decode_image, read_image_file
print(decode_image(read_image_file(sys.argv[1])).size)
"""
CONCURRENT_SEARCHES = """
import sys
from concurrent.futures import ThreadPoolExecutor
import resource
from core.config import Settings
from core.search.workspace import Workspace
ws = Workspace.open(Settings.from_env())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
data = open(sys.argv[1], "rb").read()
with ThreadPoolExecutor(8) as pool:
    results = list(pool.map(lambda _: ws.search(data, isolate=False), range(8)))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"8 searches: {len(results[0].hits)} hits each; peak {before:.0f} MB after opening, {after:.0f} MB after")
"""


def run_hostile_bench(settings: Settings) -> dict:
    python = sys.executable
    env = {"FVS_CATALOG": settings.catalog, "FVS_ARTIFACTS_DIR": str(settings.artifacts_dir),
           "FVS_DATA_DIR": str(settings.data_dir), "FVS_CATALOG_LIMIT": str(settings.catalog_limit)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "shop" / "images").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (96, 96), (30 * i, 40, 120)).save(folder / "shop" / "images" / f"ok-{i}.jpg")
        with (folder / "shop" / "images" / "big.jpg").open("wb") as fh:
            fh.truncate(3 << 30)
        (folder / "shop" / "products.csv").write_text(
            "image,category\n" + "".join(f"images/ok-{i}.jpg,Shirt\n" for i in range(3)) + "images/big.jpg,Shirt\n")
        huge, large = palette_png(folder / "huge.png", 7900, 4950), palette_png(folder / "large.png", 4000, 3900)
        bomb = parquet_bomb(folder / "rows" / "bomb.parquet", 30_000_000)
        deep = deep_tiff(folder / "deep.tif", 4000, 3900)
        results = {
            "python_and_core_imported": measured([python, "-c", BASELINE]),
            "cli_search_dev_zero": measured([python, "-m", "core", "search", "/dev/zero"], env),
            "cli_prepare_sparse_3gb_jpg": measured([python, "-m", "core", "prepare",
                                                    str(folder / "shop" / "products.csv"), "--name", "hostile",
                                                    "--data-only", "--artifacts-dir", str(folder / "artifacts")]),
            "cli_search_39mp_palette_png": measured([python, "-m", "core", "search", str(huge)], env),
            "app_8_concurrent_searches_15mp_png": measured([python, "-c", CONCURRENT_SEARCHES, str(large)], env),
            "page_prepare_parquet_30m_rows": measured([python, "-c", PAGE_PREPARE, str(bomb),
                                                       str(folder / "artifacts")]),
            "decode_15mp_32bit_tiff_rotated": measured([python, "-c", DECODE, str(deep)]),
        }
        results["files"] = {path.name + "_bytes": path.stat().st_size for path in (huge, large, bomb, deep)}
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options of its own: the shared ones say which catalogue the measured searches use."""


def main(args: argparse.Namespace, settings: Settings, progress: Progress) -> dict:
    return run_hostile_bench(settings)
