"""Browsing a catalogue: filters on every column it has, so a person can find the item they mean and search with it.

Facets are found, not configured: a text column whose cells hold few distinct values (a shop's colour, gender,
material; ``a|b`` cells count as both) becomes a facet; the tags, the category and a numeric price are facets of
their own, and a words filter reads the name, the description and the brand. The same filter serves the Browse page and
the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.catalog.base import Catalog, is_text_column
from core.catalog.sources import parse_tags

MAX_FACET_VALUES = 60  # more distinct values than this and a column is free text (a name), not a facet
NOT_FACETS = {"id", "path", "label", "category", "tags", "name", "description", "group", "brand"}
WORDS_COLUMNS = ("name", "description", "brand")  # what the words filter reads, where the catalogue has them


@dataclass(frozen=True)
class ItemFilter:
    """Every part is optional; an item passes when it passes all that are given."""

    categories: tuple[str, ...] = ()  # any of these
    tags: tuple[str, ...] = ()  # all of these
    facets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # column -> any of these values
    price: tuple[float, float] | None = None  # inclusive range
    words: str = ""  # every word appears in the name, description or brand (case-insensitive)


def facet_values(catalog: Catalog) -> dict[str, list[str]]:
    """Column → its values, sorted, for each text column that reads as a facet."""
    out: dict[str, list[str]] = {}
    for column in catalog.items.columns:
        if column in NOT_FACETS or column.startswith("box_") or not is_text_column(catalog.items[column]):
            continue
        values: set[str] = set()
        for cell in catalog.items[column].tolist():
            values.update(parse_tags(cell))
            if len(values) > MAX_FACET_VALUES:
                break
        if 1 < len(values) <= MAX_FACET_VALUES:
            out[column] = sorted(values, key=str.lower)
    return out


def tag_values(catalog: Catalog) -> list[str]:
    """The tags items carry, most common first."""
    if "tags" not in catalog.items.columns:
        return []
    counts = pd.Series([t for tags in catalog.items["tags"].tolist() if tags is not None for t in tags]).value_counts()
    return [str(t) for t in counts.index]


FENCE = 3.0  # Tukey's far-out fence: an end is at most this many interquartile ranges beyond the quartiles


def price_range(catalog: Catalog) -> tuple[float, float] | None:
    """The price slider's ends: the lowest and highest prices within Tukey's far-out fences (quartiles ∓ 3 IQR),
    widened to whole units. One price of 1e308 made the slider span -0.0 … 1.797e308 in steps of 0.01, a dot
    nobody could move; percentiles alone do not help a small catalogue, whose 99th is interpolated towards the
    outlier. The items beyond an end are still found with that end (``open_ended``)."""
    if "price" not in catalog.items.columns:
        return None
    prices = pd.to_numeric(catalog.items["price"], errors="coerce")
    prices = prices[np.isfinite(prices)]
    if len(prices) == 0:
        return None
    q1, q3 = prices.quantile([0.25, 0.75]).to_numpy()
    inside = prices[(prices >= q1 - FENCE * (q3 - q1)) & (prices <= q3 + FENCE * (q3 - q1))]
    low, high = inside.min(), inside.max()
    low, high = float(np.floor(low)) + 0.0, float(np.ceil(high))  # + 0.0: never -0.0
    return (low, high) if low < high else None


def open_ended(chosen: tuple[float, float], bounds: tuple[float, float]) -> tuple[float, float] | None:
    """A slider's range as a filter: an end left at the slider's end takes everything beyond it too (the
    outliers ``price_range`` leaves off the slider); None when both are."""
    low = chosen[0] if chosen[0] > bounds[0] else -np.inf
    high = chosen[1] if chosen[1] < bounds[1] else np.inf
    return None if (low, high) == (-np.inf, np.inf) else (low, high)


def filter_rows(catalog: Catalog, wanted: ItemFilter) -> np.ndarray:
    """The rows that pass ``wanted``, in catalogue order."""
    items = catalog.items
    keep = np.ones(len(items), dtype=bool)
    if wanted.categories:
        keep &= items["category"].isin(wanted.categories).to_numpy()
    if wanted.tags and "tags" in items.columns:
        needed = set(wanted.tags)
        keep &= np.array([tags is not None and needed <= set(tags) for tags in items["tags"].tolist()], dtype=bool)
    elif wanted.tags:
        keep[:] = False
    for column, values in wanted.facets.items():
        if values:
            accepted = set(values)
            keep &= np.array([bool(accepted & set(parse_tags(cell))) for cell in items[column].tolist()], dtype=bool)
    if wanted.price is not None and "price" in items.columns:
        prices = pd.to_numeric(items["price"], errors="coerce").to_numpy()
        keep &= (prices >= wanted.price[0]) & (prices <= wanted.price[1])
    words = wanted.words.lower().split()
    if words:
        text = _text_of(items)
        for word in words:
            keep &= text.str.contains(word, regex=False).to_numpy()
    return np.flatnonzero(keep)


def _text_of(items: pd.DataFrame) -> pd.Series:
    columns = [c for c in WORDS_COLUMNS if c in items.columns]
    text = pd.Series([""] * len(items), index=items.index, dtype=object)
    for column in columns:
        text = text + " " + items[column].fillna("").astype(str)
    return text.str.lower()

