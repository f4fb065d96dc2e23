"""A catalogue: an items table, the item images in the catalogue's domain, and how photos enter that domain.

Sources register themselves by name (``@register_source("fashion-mnist")``), the way timm registers
architectures: the CLI, the sidebar and the tests all go through ``open_catalog(settings)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core import fashion_mnist
from core.artifacts import ArtifactDir, atomic_path, file_checksum, fingerprint, save_npy
from core.config import Settings
from core.domain import Domain, FashionMnistDomain
from core.images import ImageDecodeError
from core.item_images import FileImages

SOURCES: dict[str, Callable[[Settings], "Catalog"]] = {}
# What the catalogue itself uses; any other column of a user's table is shown as it is (Catalog.details).
OWN_COLUMNS = {"id", "path", "label", "category", "split", "group", "tags", "brand", "price", "description"}
SOURCE_LABELS: dict[str, str] = {}


def register_source(name: str, label: str) -> Callable:
    def decorate(loader: Callable[[Settings], "Catalog"]) -> Callable[[Settings], "Catalog"]:
        SOURCES[name] = loader
        SOURCE_LABELS[name] = label
        return loader

    return decorate


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
        out = {name: item[name] for name in (*self.extra_columns(), "brand", "description")
               if name in item.index and isinstance(item[name], str) and item[name]}
        if "price" in item.index and pd.notna(item["price"]):
            out["price"] = f"{float(item['price']):,.2f}"
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
        """The item's own tags (a shop's flags, "kids") as the catalogue gives them; none when they were mined
        from its description (those are the tag head's training targets, not facts about the item)."""
        if "tags" not in self.items.columns or self.tags_mined:
            return []
        value = self.items.iloc[row]["tags"]
        return [str(t) for t in value] if value is not None and not isinstance(value, str) else []

    def extra_columns(self) -> list[str]:
        """Columns a source brought beyond the ones the catalogue itself uses."""
        return [c for c in self.items.columns if c not in OWN_COLUMNS and not c.startswith("box_")]

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


def upscale(image: Image.Image, size: int) -> Image.Image:
    factor = max(1, size // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def open_catalog(settings: Settings) -> Catalog:
    """A built-in source by name, or a catalogue prepared with ``python -m core prepare``."""
    from core import prepare

    if settings.catalog in SOURCES:
        return SOURCES[settings.catalog](settings)
    if settings.catalog in prepare.prepared_names(settings):
        return prepare.load_prepared(settings, settings.catalog)
    known = ", ".join([*SOURCES, *prepare.prepared_names(settings)])
    raise ValueError(f"Unknown catalogue {settings.catalog!r}; known: {known}. Prepare your own with "
                     "`python -m core prepare PATH --name NAME`.")


def catalog_choices(settings: Settings) -> dict[str, str]:
    """Name → label of every catalogue that can be opened: the built-in ones, then the prepared ones."""
    from core import prepare

    choices = dict(SOURCE_LABELS)
    for name in prepare.prepared_names(settings):
        try:
            info = prepare.prepared_info(settings, name)
        except (OSError, ValueError):  # damaged: opening it says why; the list must still show the others
            continue
        choices[name] = f"{name} ({info.get('items', 0):,} items, {info.get('layout', 'your')} catalogue)"
    return choices


def _limit_split(n_items: int, limit: int, share: float) -> int:
    return n_items if limit <= 0 else min(n_items, max(1, round(limit * share)))


@register_source("fashion-mnist", "Fashion-MNIST (70,000 Zalando articles)")
def load_fashion_mnist(settings: Settings) -> Catalog:
    """Parse the IDX files once into ``pixels.npy`` + ``items.parquet``; later opens memory-map those."""
    source_dir = fashion_mnist.find_dir(settings.data_dir)
    domain = FashionMnistDomain()
    files = [source_dir / name for pair in fashion_mnist.FILES.values() for name in pair]
    key = fingerprint(
        {
            "source": "fashion-mnist",
            "files": {f.name: cached_checksum(f, settings.artifacts_dir) for f in files},
            "limit": settings.catalog_limit,
        }
    )
    store = ArtifactDir(Path(settings.artifacts_dir) / f"fashion-mnist-{key}" / "catalog")
    if not (store.verified("pixels.npy") and store.verified("items.parquet")):
        _build_fashion_mnist(source_dir, settings.catalog_limit, store)
    items = pd.read_parquet(store.file("items.parquet"))
    pixels = np.load(store.file("pixels.npy"), mmap_mode="r")
    return Catalog(
        name="fashion-mnist", key=f"fashion-mnist-{key}", items=items, categories=list(fashion_mnist.CATEGORIES),
        domain=domain, pixels=pixels,
    )


def _build_fashion_mnist(source_dir: Path, limit: int, store: ArtifactDir) -> None:
    splits = fashion_mnist.load(source_dir)
    frames, arrays = [], []
    for split, share in (("train", 6 / 7), ("test", 1 / 7)):
        images, labels = splits[split]
        n = _limit_split(len(images), limit, share)
        arrays.append(images[:n])
        frames.append(
            pd.DataFrame(
                {
                    "id": [f"{split}-{i:05d}" for i in range(n)],
                    "label": labels[:n].astype(np.int16),
                    "category": [fashion_mnist.CATEGORIES[c] for c in labels[:n]],
                    "split": split,
                }
            )
        )
    items = pd.concat(frames, ignore_index=True)
    save_npy(store.file("pixels.npy"), np.concatenate(arrays))
    store.record("pixels.npy")
    with atomic_path(store.file("items.parquet")) as tmp:
        items.to_parquet(tmp, index=False)
    store.record("items.parquet", rows=len(items))


def cached_checksum(path: Path, artifacts_dir: Path) -> str:
    """Checksum of a source file, remembered by (path, size, mtime) so warm starts do not re-read 30 MB."""
    stat = path.stat()
    memo = Path(artifacts_dir) / ".checksums" / fingerprint({"p": str(path), "s": stat.st_size, "m": stat.st_mtime_ns})
    if memo.is_file():
        return memo.read_text().strip()
    value = file_checksum(path)
    with atomic_path(memo) as tmp:
        tmp.write_text(value)
    return value


from core import builtin  # noqa: E402, F401 - registers the built-in colour catalogues (it imports this module)
