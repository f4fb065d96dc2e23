"""Item thumbnails as small JPEG files, for the browser to fetch on its own (the map's hover card).

A page cannot send thousands of images with every rerun; the browser instead asks for the one under the pointer,
from Streamlit's static file server (``static/`` beside the entry script). Files are keyed by the catalogue's key
(what produced them), written atomically, and only the missing ones are made.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.artifacts import atomic_path
from core.catalog.base import Catalog
from core.progress import Progress, no_progress

SIZE = 128


def thumbnails_dir(static_dir: Path, catalog: Catalog) -> Path:
    return Path(static_dir) / "thumbs" / catalog.key


def missing_thumbnails(folder: Path, rows: Sequence[int]) -> list[int]:
    """The rows whose ``folder/<row>.jpg`` is not made yet."""
    return [int(r) for r in rows if not (Path(folder) / f"{int(r)}.jpg").is_file()]


def write_thumbnails(catalog: Catalog, rows: Sequence[int], folder: Path, size: int = SIZE,
                     progress: Progress = no_progress, threads: int = 0) -> None:
    """``folder/<row>.jpg`` for each of ``rows`` (``missing_thumbnails`` says which still need one). Decoding a
    photo and encoding its JPEG release the GIL, so ``threads`` (0: one per core, at most 4) share the work: 5,000
    garment photos took 36 s one at a time on a busy 2-core machine."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [int(r) for r in rows]

    def write(row: int) -> None:
        with atomic_path(folder / f"{row}.jpg") as tmp:
            catalog.thumbnail(row, size).save(tmp, format="JPEG", quality=85)

    with ThreadPoolExecutor(max_workers=threads or min(4, os.cpu_count() or 1)) as pool:
        for done, _ in enumerate(pool.map(write, missing), 1):
            if done % 200 == 0 or done == len(missing):
                progress("Making thumbnails", done, len(missing))
