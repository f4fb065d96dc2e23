"""Composite images for overviews: one picture instead of hundreds of tiny elements."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.catalog.base import Catalog


def category_montage(catalog: Catalog, per_category: int = 10, cell: int = 56, seed: int = 0) -> Image.Image:
    """A grid with one row per category: its name, then ``per_category`` random items."""
    rng = np.random.default_rng(seed)
    label_width = 120
    rows = [c for c in range(len(catalog.categories)) if (catalog.labels == c).any()]
    sheet = Image.new("RGB", (label_width + per_category * cell, max(1, len(rows)) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=15)
    for r, label in enumerate(rows):
        members = np.flatnonzero(catalog.labels == label)
        picks = rng.choice(members, size=min(per_category, len(members)), replace=False)
        draw.text((6, r * cell + cell // 2), catalog.categories[label], fill=(40, 40, 40), font=font, anchor="lm")
        for c, row in enumerate(sorted(picks)):
            sheet.paste(tile(catalog, int(row), cell), (label_width + c * cell, r * cell))
    return sheet


def item_grid(catalog: Catalog, rows, columns: int = 10, cell: int = 56) -> Image.Image:
    """The given items as one crisp grid image (a selection on the map can hold hundreds)."""
    rows = list(rows)
    n_rows = max(1, -(-len(rows) // columns))
    sheet = Image.new("RGB", (columns * cell, n_rows * cell), "white")
    for i, row in enumerate(rows):
        sheet.paste(tile(catalog, int(row), cell), ((i % columns) * cell, (i // columns) * cell))
    return sheet


def tile(catalog: Catalog, row: int, cell: int) -> Image.Image:
    """An item as an exactly ``cell``-square RGB tile (crisp for small items, letterboxed for photos)."""
    image = catalog.thumbnail(row, cell).convert("RGB")
    return image if image.size == (cell, cell) else image.resize((cell, cell), Image.Resampling.NEAREST)
