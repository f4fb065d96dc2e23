"""A catalogue: an items table, the item images in the catalogue's domain, and how photos enter that domain.

What a catalogue is, whatever its source; ``core.catalog.registry`` is where one is found and opened by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from PIL import Image

from core.catalog.item_files import FileImages
from core.catalog.sources import compact_number, shown_text
from core.photo.colour import TAG_SOURCE, GarmentColours, garment_colours
from core.photo.decode import ImageDecodeError
from core.photo.domain import Domain
from core.text import tags

# Each item's colours as read from its photo by prepare (core.photo.colour): a list of basic colour terms.
PHOTO_COLOURS = "photo_colours"
# What the catalogue itself uses; any other column of a user's table is shown as it is (Catalog.details).
OWN_COLUMNS = {"id", "path", "label", "category", "split", "group", "tags", "brand", "price", "description",
               PHOTO_COLOURS, "member", "member_category", "member_row"}


@dataclass
class Catalog:
    """Items (``id``, ``category``, ``label``, ``split`` and any extra columns) and their domain images."""

    name: str
    key: str  # fingerprint of the source files and settings that made it
    items: pd.DataFrame
    categories: list[str]
    domain: Domain
    pixels: np.ndarray | FileImages  # uint8 (N, *domain.shape): memory-mapped, or files read on demand
    tags_mined: bool = False  # the items' tags were mined from descriptions, not given by the source
    tag_sources: dict[str, str] = field(default_factory=dict)  # tag -> "description", "tags" or its column
    # A union of catalogues trained together (core.catalog.union): member name -> its key; empty for one catalogue
    members: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> np.ndarray:
        return self.items["label"].to_numpy()

    def domain_batch(self, indices: np.ndarray | list[int] | slice) -> np.ndarray:
        return np.asarray(self.pixels[indices])

    @property
    def on_disk(self) -> bool:
        """Items are files read on demand (a user's catalogue), not an array that fits in memory."""
        return isinstance(self.pixels, FileImages)

    def image(self, index: int) -> Image.Image:
        """The item as a person should see it: the original photo for file catalogues (a blank tile if the file
        has gone since it was prepared), the domain image otherwise."""
        if self.on_disk:
            try:
                return self.pixels.photo(index)
            except (ImageDecodeError, OSError):
                return Image.new("RGB", (64, 64), (235, 235, 235))
        return Image.fromarray(np.asarray(self.pixels[index]))

    def thumbnail(self, index: int, size: int = 168) -> Image.Image:
        """A square tile: small items upscaled by an integer factor with nearest-neighbour (28-px items stay
        crisp), photos fitted and padded with white (a tall dress keeps its hem)."""
        image = self.image(index)
        if max(image.size) <= size:
            return upscale(image, size)
        image = image.convert("RGB")
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        tile = Image.new("RGB", (size, size), (255, 255, 255))
        tile.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
        return tile

    def details(self, row: int) -> dict[str, str]:
        """What a shop shows beside an item, where the catalogue has it: brand, price, description, and the
        source's own extra columns (colour, material, …) by name."""
        item = self.items.iloc[row]
        extras = self.extra_columns()  # a seller's own columns: a number in them is shown compactly
        out = {name: shown_text(item[name]) if name in extras else item[name]
               for name in (*extras, "brand", "description")
               if name in item.index and isinstance(item[name], str) and item[name]}
        if "price" in item.index and pd.notna(item["price"]):
            out["price"] = compact_number(item["price"])  # 1e308 as 1.0e308, never 411 digits
        return out

    def headline(self, row: int) -> tuple[str, str]:
        """What a shop prints under a product photo: its name (or, without one, its category) and one line of
        category, colour, brand and price, where the catalogue has them. The full record is ``details``."""
        details, category = self.details(row), str(self.items.iloc[row]["category"])
        name = details.get("name", "")
        facts = [category] if name else []
        facts += [details[key] for key in ("colour", "color", "brand", "price") if key in details]
        return name or category, " · ".join(facts)

    def item_tags(self, row: int) -> list[str]:
        """The item's own tags (a shop's flags, "kids", its colours read from its photo) as the catalogue gives
        them; of tags mined from its description, none (those are the tag head's training targets, not facts about
        the item)."""
        if "tags" not in self.items.columns:
            return []
        value = self.items.iloc[row]["tags"]
        own = [str(t) for t in value] if value is not None and not isinstance(value, str) else []
        return [t for t in own if self.tag_sources.get(t) == TAG_SOURCE] if self.tags_mined else own

    def photo_colours(self, row: int) -> GarmentColours | None:
        """The item's colours read from its photo, with their swatches (named again from the photo: the same
        function ``prepare`` stored the names of, a few milliseconds); None for a catalogue prepared without them
        (Fashion-MNIST, a catalogue prepared before colours were read)."""
        if PHOTO_COLOURS not in self.items.columns:
            return None
        return garment_colours(self.image(row))

    def trained_tags(self) -> list[str]:
        """The tags a tag head learns: every tag but the colours read from the photos. Those are computed from the
        pixels wherever they are needed (an upload gets them the same way), so a head would only learn to copy a
        rule; leaving them out also keeps the vocabulary, and with it the checkpoints, of the runs trained before
        colours were read."""
        return [t for t in tags.vocabulary(self.items) if self.tag_sources.get(t) != TAG_SOURCE]

    def extra_columns(self) -> list[str]:
        """Columns a source brought beyond the ones the catalogue itself uses."""
        return [c for c in self.items.columns if c not in OWN_COLUMNS and not c.startswith("box_")]

    def fit_rows(self) -> np.ndarray:
        """Rows a projection of the catalogue's vectors is fitted on: the train split, or every item without one."""
        train = np.flatnonzero(self.items["split"].to_numpy() == "train")
        return train if len(train) else np.arange(len(self))

    def query_rows(self) -> np.ndarray:
        """Rows to evaluate with: the test split, or every item when the catalogue has none."""
        test = np.flatnonzero(self.items["split"].to_numpy() == "test")
        return test if len(test) else np.arange(len(self))

    def summary(self) -> pd.DataFrame:
        """Items per category and split, the catalogue at a glance."""
        table = pd.crosstab(self.items["category"], self.items["split"])
        table = table.reindex([c for c in self.categories if c in table.index])
        table["total"] = table.sum(axis=1)
        return table


def is_text_column(values: pd.Series) -> bool:
    """A column of words (a shop's colour, material, name), judged by its dtype or, for plain objects, by its first
    50 non-empty cells: what the Browse page's facets and the words search both read."""
    if pd.api.types.is_string_dtype(values):
        return True
    sample = values.dropna().head(50)
    return len(sample) > 0 and all(isinstance(v, str) for v in sample)


def upscale(image: Image.Image, size: int) -> Image.Image:
    factor = max(1, size // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
