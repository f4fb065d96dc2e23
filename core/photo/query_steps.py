"""A photo becomes a query in inspectable steps: original → garment crop → mask → what the model sees.

The app shows each step beside the results, the photo benchmark draws them on its contact sheet, and the search
uses the last one; all three call ``prepare_query``, so what a user sees is what was searched.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

from core.photo.colour import GarmentColours, garment_colours
from core.photo.domain import Domain
from core.photo.isolate import Isolation, isolate, propose_box

Box = tuple[int, int, int, int]
MIN_BOX = 8  # pixels a side: less than this of a photo holds no garment to search with


class QueryError(ValueError):
    """The query cannot be made as asked (a crop box that holds nothing); ``str(err)`` is shown as is."""


def checked_box(box: object, width: int, height: int) -> Box:
    """A user's crop (left, top, right, bottom) as whole pixels inside the photo: clipped to it when it overhangs;
    an empty, inverted or outside box is an error that says so, whichever way the query then goes."""
    numbers = isinstance(box, (tuple, list, np.ndarray)) and len(box) == 4 and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in box)
    if not numbers:  # a string of four digits is not a box
        raise QueryError(f"A crop box is four numbers (left, top, right, bottom), not {box!r}.")
    try:
        left, top, right, bottom = (float(v) for v in box)
    except OverflowError:
        raise QueryError(f"The crop box {box!r} holds a number too large to be a pixel position.") from None
    if not all(math.isfinite(v) for v in (left, top, right, bottom)):
        raise QueryError(f"The crop box {box!r} holds a number that is not finite.")
    if right <= left or bottom <= top:
        raise QueryError(f"The crop box {box!r} is empty or inverted: right must be past left, bottom below top.")
    clipped = (max(0, round(left)), max(0, round(top)), min(width, round(right)), min(height, round(bottom)))
    if clipped[2] - clipped[0] < MIN_BOX or clipped[3] - clipped[1] < MIN_BOX:
        raise QueryError(f"The crop box {box!r} keeps less than {MIN_BOX}×{MIN_BOX} pixels of the {width}×{height} "
                         "photo; draw it around the garment.")
    return clipped


@dataclass
class QuerySteps:
    photo: Image.Image  # upright RGB, as uploaded
    isolation: Isolation | None  # None: isolation off, or the photo is already a catalogue item
    query: np.ndarray  # the domain array the model embeds
    user_box: tuple[int, int, int, int] | None = None  # the user's crop, if any

    @property
    def crop(self) -> Image.Image:
        if self.isolation is not None:
            return self.photo.crop(self.isolation.box)
        return self.photo.crop(self.user_box) if self.user_box is not None else self.photo

    @property
    def cutout(self) -> Image.Image:
        """The garment alone on light gray: what the mask kept, inside its box."""
        if self.isolation is None:
            return self.crop
        backdrop = Image.new("RGB", self.photo.size, (210, 210, 210))
        backdrop.paste(self.photo, mask=self.isolation.mask_image())
        return backdrop.crop(self.isolation.box)

    @cached_property
    def colours(self) -> GarmentColours:
        """The garment's colours, read the way ``prepare`` reads a catalogue item's (``core.photo.colour``): from
        the photo, inside the user's crop if there is one, so an upload's "Blue" is a catalogue item's "Blue"."""
        return garment_colours(self.photo.crop(self.user_box) if self.user_box is not None else self.photo)

    @property
    def query_image(self) -> Image.Image:
        return Image.fromarray(self.query)

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        """The crop to propose (the garment's box with a margin): None when no garment was separated."""
        if self.isolation is None or not self.isolation.found:
            return None
        return propose_box(self.isolation, *self.photo.size)


def prepare_query(photo: Image.Image, domain: Domain, isolate_garment: bool = True,
                  box: tuple[int, int, int, int] | None = None) -> QuerySteps:
    """``box`` (left, top, right, bottom) is a user's crop: the garment is looked for inside it only."""
    box = checked_box(box, *photo.size) if box is not None else None
    if domain.is_native(photo):
        return QuerySteps(photo, None, domain.convert(photo))
    if not isolate_garment:
        cropped = photo.crop(box) if box is not None else photo
        return QuerySteps(photo, None, domain.convert(cropped), user_box=box)
    found = _remembered_isolation(photo, box)
    # No garment separated: the plain recipe, inside the user's box if any (``found.box`` is that box).
    query = domain.convert_isolated(photo, found) if found.found else domain.convert(photo.crop(found.box))
    return QuerySteps(photo, found, query, user_box=box)


_REMEMBERED: OrderedDict[tuple, Isolation] = OrderedDict()
_LOCK = threading.Lock()


def _remembered_isolation(photo: Image.Image, box: tuple[int, int, int, int] | None) -> Isolation:
    """The last few isolations by photo content and box: the app re-runs a page (a slider moved, top K changed)
    with the same photo, and GrabCut would otherwise cost 0.1-0.3 s every time."""
    key = (hashlib.blake2b(photo.tobytes(), digest_size=16).digest(), photo.size, box)
    with _LOCK:
        if key in _REMEMBERED:
            _REMEMBERED.move_to_end(key)
            return _REMEMBERED[key]
    found = isolate(photo, box=box)
    with _LOCK:
        _REMEMBERED[key] = found
        while len(_REMEMBERED) > 16:
            _REMEMBERED.popitem(last=False)
    return found
