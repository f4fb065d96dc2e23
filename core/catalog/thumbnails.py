"""Item thumbnails as small JPEG files, for the browser to fetch on its own (the map's hover card).

A page cannot send thousands of images with every rerun; the browser instead asks for the one under the pointer,
from Streamlit's static file server (``static/`` beside the entry script). Files are keyed by the catalogue's key
(what produced them), written atomically, and only the missing ones are made.
"""

from __future__ import annotations

from collections.abc import Sequence
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
                     progress: Progress = no_progress) -> None:
    """``folder/<row>.jpg`` for each of ``rows`` (``missing_thumbnails`` says which still need one)."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [int(r) for r in rows]
    for done, row in enumerate(missing, 1):
        with atomic_path(folder / f"{row}.jpg") as tmp:
            catalog.thumbnail(row, size).save(tmp, format="JPEG", quality=85)
        if done % 200 == 0 or done == len(missing):
            progress("Making thumbnails", done, len(missing))
