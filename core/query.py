"""A photo becomes a query in inspectable steps: original → garment crop → mask → what the model sees.

The app shows each step beside the results, the photo benchmark draws them on its contact sheet, and the search
uses the last one; all three call ``prepare_query``, so what a user sees is what was searched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from core.domain import Domain
from core.isolate import Isolation, isolate


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

    @property
    def query_image(self) -> Image.Image:
        return Image.fromarray(self.query)

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        """The garment's box, to propose as the crop: None when no garment was separated."""
        return self.isolation.box if self.isolation is not None and self.isolation.found else None


def prepare_query(photo: Image.Image, domain: Domain, isolate_garment: bool = True,
                  box: tuple[int, int, int, int] | None = None) -> QuerySteps:
    """``box`` (left, top, right, bottom) is a user's crop: the garment is looked for inside it only."""
    if domain.is_native(photo):
        return QuerySteps(photo, None, domain.convert(photo))
    if not isolate_garment:
        cropped = photo.crop(box) if box is not None else photo
        return QuerySteps(photo, None, domain.convert(cropped), user_box=box)
    found = isolate(photo, box=box)
    return QuerySteps(photo, found, domain.convert_isolated(photo, found), user_box=box)
