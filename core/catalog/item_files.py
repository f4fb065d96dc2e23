"""A file catalogue's images, read from disk on demand: nothing the size of the catalogue is ever in memory.

``FileImages`` looks like the in-memory pixel array of the built-in catalogue (``len``, indexing by row, slice or
row list gives uint8 domain arrays), so embedding, training and galleries do not care where items come from.
Each item goes through the same door as an upload (``images.decode_image``: EXIF orientation, RGB, size limits),
then its bounding box, then the catalogue's ``Domain``; an upload and the same file in the catalogue become the
same array.
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.catalog.sources import resolved_path
from core.photo.colour import garment_colours
from core.photo.decode import WORKING_SIZE, ImageDecodeError, decode_image, read_image_file
from core.photo.domain import Domain

# Pillow releases the GIL while decoding and resizing, so a few threads load a batch in parallel without the
# start-up cost of worker processes (those are used for whole-catalogue passes, see core.embedding.sequential_runner).
LOAD_THREADS = 4


def load_photo(path: str, box: tuple[int, int, int, int] | None = None, min_side: int | None = None) -> Image.Image:
    """An item's photo, upright RGB, cropped to its bounding box (given in the file's pixel coordinates).

    ``min_side``: the shorter side the (cropped) photo needs, so a large JPEG is decoded at reduced scale."""
    data = read_image_file(path)
    boxed = box is not None and min(box) >= 0
    header_size = _stored_size(data) if boxed else None
    # "pad": a strip ``prepare`` was told to keep (--keep-odd-shapes) is padded, so it costs what a photo costs
    image = decode_image(data, name=path, draft_to=_draft_side(min_side, header_size, box) if min_side else
                         WORKING_SIZE, odd_shapes="pad")
    return cropped_to_box(image, box, header_size) if boxed else image


def cropped_to_box(image: Image.Image, box: tuple[int, int, int, int], stored_size: tuple[int, int]) -> Image.Image:
    """The decoded ``image`` cropped to ``box``, given in the pixels of the file (``stored_size``): decode_image
    shrinks large photos and decodes JPEGs at reduced scale. A box of less than 2 pixels leaves the image whole."""
    scale = image.width / stored_size[0]
    x1, y1, x2, y2 = (round(v * scale) for v in box)
    x2, y2 = min(x2, image.width), min(y2, image.height)
    return image.crop((x1, y1, x2, y2)) if x2 - x1 >= 2 and y2 - y1 >= 2 else image


def _stored_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as header:  # the header only: nothing is decoded
        return header.size


def _draft_side(min_side: int, size: tuple[int, int] | None, box) -> int:
    """The side to decode at so that the box (or the whole photo), once cropped, still has ``min_side`` pixels."""
    if size is None:
        return min_side
    box_side = min(box[2] - box[0], box[3] - box[1])
    return math.ceil(min_side * min(size) / max(box_side, 1))


@dataclass
class FileImages:
    """Domain arrays of files, decoded when indexed. An image that has become unreadable since ``prepare``
    checked it gives a blank array rather than failing a whole catalogue pass."""

    paths: np.ndarray  # absolute paths (str)
    boxes: np.ndarray | None  # (N, 4) int, -1 where an item has no box
    domain: Domain
    # Folders the files must still lie in when read (links followed): a file swapped for a link out of the
    # catalogue after prepare checked it is not read. None: not checked (generated catalogues in tests).
    roots: tuple[Path, ...] | None = None
    # Decode JPEGs at the reduced scale the domain needs (``Domain.decode_side``) instead of an upload's: 3-6x
    # faster on 12 MP photos, but the vectors move (cosine 0.98-0.995 to a full decode, BENCHMARKS.md), so it is
    # measured by ``bench embed`` and not used for catalogues.
    draft: bool = False

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.domain.shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.domain.shape)

    def photo(self, row: int) -> Image.Image:
        box = tuple(int(v) for v in self.boxes[row]) if self.boxes is not None else None
        path = str(self.paths[row])
        if self.roots is not None:
            where = resolved_path(Path(path))
            if where is None:
                raise ImageDecodeError(f"{path} cannot be resolved (a link loop, or a name the system refuses).")
            if not any(where.is_relative_to(root) for root in self.roots):
                raise ImageDecodeError(f"{path} now links outside its catalogue's folders; it is not read.")
        return load_photo(path, box, self.domain.decode_side if self.draft else None)

    def item(self, row: int) -> np.ndarray:
        try:
            return self.domain.convert(self.photo(row))
        except (ImageDecodeError, OSError):
            return np.zeros(self.domain.shape, np.uint8)

    def __getitem__(self, index: int | slice | np.ndarray | list[int]) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.item(int(index))
        rows = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros((0, *self.domain.shape), np.uint8)
        with ThreadPoolExecutor(min(LOAD_THREADS, len(rows))) as pool:
            return np.stack(list(pool.map(self.item, (int(r) for r in rows))))

    def __array__(self, dtype=None, copy=None):
        raise TypeError("A file catalogue is read in batches (catalog.domain_batch), never all into memory.")


class ItemDataset(torch.utils.data.Dataset):
    """Rows ``start..`` of a FileImages, for a DataLoader whose worker processes decode in parallel."""

    def __init__(self, images: FileImages, start: int = 0):
        self.images, self.start = images, start

    def __len__(self) -> int:
        return len(self.images) - self.start

    def __getitem__(self, i: int) -> np.ndarray:
        return self.images.item(self.start + i)


def check_and_name_colours(path: str, box: tuple[int, int, int, int] | None = None, colours: bool = False,
                           keep_odd_shapes: bool = False) -> tuple[str, tuple[str, ...]]:
    """("" or why the file cannot be used, the garment's colour names). A 1×1 dot or a 20000×20 strip decodes, but
    it is no garment photo, and such items ranked top for most queries: refused too, unless ``keep_odd_shapes``.
    The colours are read from the image the check has just decoded (inside the item's box, if it has one), so
    naming them costs no second decode."""
    name = path.rsplit("/", 1)[-1]
    try:
        data = read_image_file(path, name)
        image = decode_image(data, name=name, odd_shapes="pad" if keep_odd_shapes else "refuse")
    except ImageDecodeError as exc:
        return str(exc).split(" Please ")[0], ()  # the upload advice does not apply to a catalogue file
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})", ()
    if not colours:
        return "", ()
    if box is not None and min(box) >= 0:
        image = cropped_to_box(image, box, _stored_size(data))
    return "", garment_colours(image).names


class CheckDataset(torch.utils.data.Dataset):
    """Each file checked (and, with ``colours``, its garment's colours named) in a DataLoader worker."""

    def __init__(self, paths: list[str], boxes: np.ndarray | None = None, colours: bool = False,
                 keep_odd_shapes: bool = False):
        self.paths, self.boxes, self.colours, self.keep_odd_shapes = paths, boxes, colours, keep_odd_shapes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[str, tuple[str, ...]]:
        box = tuple(int(v) for v in self.boxes[i]) if self.boxes is not None else None
        return check_and_name_colours(self.paths[i], box, self.colours, self.keep_odd_shapes)
