"""What a user takes away: a set of catalogue items (a map selection, a filtered browse, search results) as a table
with every metadata column the catalogue has, ready for a CSV download.

Server-side columns stay behind: an item's image path names the server's files (a browser user never sees them,
core.catalog.prepare), and ``label``/``box_*`` are the catalogue's own bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.catalog.base import Catalog

HIDDEN = {"path", "label"}  # plus every box_* column


def items_table(catalog: Catalog, rows: Sequence[int] | np.ndarray, scores: Sequence[float] | None = None,
                **extra: Sequence) -> pd.DataFrame:
    """One line per row, in the given order: ``row``, ``id``, ``category``, ``score`` (when given), the ``extra``
    columns (e.g. the words that matched), then every other column; tag lists are joined with ``|``."""
    rows = np.asarray(rows, dtype=np.int64)
    items = catalog.items.iloc[rows].reset_index(drop=True)
    table = pd.DataFrame({"row": rows, "id": items["id"].astype(str), "category": items["category"].astype(str)})
    if scores is not None:
        table["score"] = np.round(np.asarray(scores, dtype=float), 4)
    for name, values in extra.items():
        table[name] = [_cell(v) for v in values]
    for column in items.columns:
        if column in table.columns or column in HIDDEN or column.startswith("box_"):
            continue
        table[column] = [_cell(v) for v in items[column].tolist()]
    return table


def csv_bytes(table: pd.DataFrame) -> bytes:
    """UTF-8 with a byte-order mark, so a spreadsheet opened by double-click reads accents right."""
    return table.to_csv(index=False).encode("utf-8-sig")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as a formula


def _cell(value: object) -> object:
    """Tag lists joined; text that a spreadsheet would run as a formula (catalogue text is untrusted) quoted."""
    if isinstance(value, (list, tuple, np.ndarray)):
        value = "|".join(str(v) for v in value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
