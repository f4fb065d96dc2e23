"""A garment's colours named from its own pixels, with the basic colour terms a shopper uses.

The garment photos carry no text, yet every one shows a colour: naming it makes "like this, in blue" and a Browse
filter by colour work on a catalogue of bare photos. The parts come from libraries: CIELAB and CIEDE2000 from
scikit-image name colours (a perceptual distance, so "navy" and "black" part where people part them), the skin
rule and the centre prior from the project's own isolation (``core.photo.isolate``). What is written here is the
glue, sized to run on every photo of a catalogue while it is prepared (2-4 ms a photo, BENCHMARKS.md):

1. the photo at ``SIDE`` pixels, sampled by nearest neighbour (a blend of a black and a white stripe is a grey the
   garment does not have), its exposure restored (``balanced``: a white shirt in a dim room reads grey otherwise).
   GrabCut is not used: at 64 px it separated a garment in only 25-35 % of 200 garment photos, and at its own 320
   px it costs about 0.2 s a photo, 8 minutes for 5,096 photos on 2 cores;
2. a cheap mask with isolation's priors: on a plain backdrop (a studio packshot) whatever differs from it; otherwise
   the centre of the photo, less the colours the top and side borders show (the bed, the floor, the wall: the
   bottom border is left out, because a worn garment or a hanging trouser leg reaches it); skin (isolation's rule,
   and muted: a saturated yellow is not skin) is left out unless almost nothing else is there (a beige or pink
   garment is skin-coloured all over);
3. every kept pixel named by the nearest prototype colour (CIEDE2000), through a table over the RGB cube computed
   once per process, so a photo costs a look-up per pixel, not a colour-difference per pixel and prototype;
4. the names that cover at least ``MIN_SHARE`` of the garment, largest first, up to ``MAX_NAMES``: a striped shirt
   is both of its colours, a shadow on a blue shirt is not a second garment.

Naming pixels against prototypes rather than clustering them first (k-means) gives each name's share directly and
costs no iterations; the prototypes are several per term because photographed garments are darker and greyer than
the survey colours the terms are usually drawn with. They were set against the Luma shop's own colour column, which
someone else labelled (``python -m core bench colour``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from core.photo.isolate import centre_ellipse, skin

# The basic colour terms of the issue, in the order a colour filter lists them.
COLOUR_TERMS = ("black", "white", "grey", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown",
                "beige", "navy")
TAG_SOURCE = "colour from the photo"  # what the Tags page shows beside a colour tag ("Blue · colour from the photo")
# Bumped whenever the naming changes (prototypes, mask, shares): built-in catalogues are then prepared again.
COLOUR_VERSION = 1

# sRGB prototypes per term: the colour as a garment shows it in a photo (lit, shaded, faded), not only its ideal.
PROTOTYPES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "black": ((12, 12, 12), (35, 35, 38), (28, 30, 40)),
    "white": ((250, 250, 250), (228, 228, 230)),
    "grey": ((128, 128, 128), (90, 90, 92), (165, 165, 168), (110, 112, 118)),
    "red": ((200, 25, 35), (150, 25, 35), (225, 60, 60), (115, 20, 30), (245, 105, 100), (235, 75, 85)),
    "orange": ((240, 120, 20), (215, 95, 40), (250, 150, 60)),
    "yellow": ((245, 220, 40), (230, 200, 80), (240, 230, 120)),
    "green": ((30, 150, 50), (40, 90, 45), (120, 180, 80), (85, 107, 47), (30, 60, 40), (60, 160, 100),
              (150, 225, 190), (100, 200, 160)),
    # turquoise and teal are "blue" to a shop (the Luma shop labels every one of its teal garments Blue)
    "blue": ((30, 80, 200), (70, 130, 200), (120, 170, 220), (50, 90, 140), (30, 60, 150), (0, 165, 175),
             (40, 180, 205), (20, 120, 140), (150, 180, 215)),
    "navy": ((20, 28, 65), (35, 45, 90)),
    "purple": ((110, 40, 150), (150, 100, 185), (75, 30, 90), (120, 70, 120), (180, 165, 220), (140, 120, 200)),
    "pink": ((240, 130, 180), (225, 70, 135), (245, 190, 200), (200, 110, 140)),
    "brown": ((110, 70, 40), (75, 50, 35), (150, 100, 60), (120, 90, 70)),
    "beige": ((220, 200, 160), (200, 180, 140), (235, 220, 195)),
}

SIDE = 64  # the longer side the colours are read at
LEVELS = 32  # the naming table's steps per RGB channel (8 values each)
BORDER = 0.04  # share of each side that shows the surroundings
PLAIN_SHARE, PLAIN_TOLERANCE = 0.7, 11.0  # a backdrop is plain when this share of its border is one colour
BACKDROP_DISTANCE = 22.0  # RGB distance from a plain backdrop beyond which a pixel is the garment
MIN_AREA = 0.02  # on a plain backdrop, less than this share of the photo differing from it is no garment
SURROUNDINGS_DELTA = 12.0  # CIELAB distance to a border colour within which a pixel is the surroundings
MIN_KEPT = 0.2  # less than this share of the centre unlike the border: the garment fills the photo, border and all
SKIN_CHROMA = 35.0  # skin is muted (CIELAB chroma below this); a saturated yellow or orange garment is not skin
MIN_NOT_SKIN = 0.15  # skin is left out unless less than this share of the garment would remain
MIN_SHARE, MAX_NAMES = 0.2, 3


@dataclass(frozen=True)
class GarmentColours:
    """The garment's colours, largest share first, each with the share of the garment it covers and the average
    colour of its pixels (the swatch the pages draw)."""

    names: tuple[str, ...]
    shares: tuple[float, ...]
    swatches: tuple[tuple[int, int, int], ...]

    @property
    def tags(self) -> list[str]:
        return [tag_of(name) for name in self.names]

    def describe(self) -> str:
        """"Blue 63 % · Navy 31 %": the colours as words, for a caption beside their swatches."""
        return " · ".join(f"{tag_of(n)} {s:.0%}" for n, s in zip(self.names, self.shares, strict=True))

    def swatches_image(self, side: int = 28) -> Image.Image:
        """One square per colour, in its average pixel colour, side by side: what the pages draw (Streamlit has no
        element for an arbitrary colour, and the project sends no HTML of its own)."""
        gap = side // 4
        strip = Image.new("RGB", (max(1, len(self.swatches)) * (side + gap) - gap, side), (255, 255, 255))
        for i, swatch in enumerate(self.swatches):
            strip.paste(Image.new("RGB", (side, side), swatch), (i * (side + gap), 0))
        return strip


def is_colour_word(word: str) -> bool:
    """A basic colour term in any case, "gray" included: a source that names its items' colours itself."""
    return word.lower() in COLOUR_TERMS or word.lower() == "gray"


def tag_of(term: str) -> str:
    """The tag a colour term becomes: "Blue", as shops write their colours."""
    return term.capitalize()


@lru_cache(maxsize=1)
def naming_table() -> np.ndarray:
    """uint8 (LEVELS³,): the colour term (index into COLOUR_TERMS) of each cell of the RGB cube, by the nearest
    prototype in CIEDE2000 (about 0.5 s, once per process; ``prepare`` builds it before its worker processes start,
    so they inherit it)."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    owners = np.array([COLOUR_TERMS.index(term) for term, colours in PROTOTYPES.items() for _ in colours])
    prototypes = rgb2lab(np.array([c for colours in PROTOTYPES.values() for c in colours], np.float64)[None] / 255)[0]
    centres = (np.arange(LEVELS) + 0.5) * (256 / LEVELS) / 255
    cube = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1).reshape(-1, 3)
    lab = rgb2lab(cube[None])[0]
    distances = np.stack([deltaE_ciede2000(lab, np.broadcast_to(p, lab.shape)) for p in prototypes], axis=1)
    return owners[distances.argmin(axis=1)].astype(np.uint8)


def name_pixels(pixels: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB → (N,) index into COLOUR_TERMS."""
    cells = (pixels.astype(np.int32) * LEVELS) // 256
    return naming_table()[(cells[:, 0] * LEVELS + cells[:, 1]) * LEVELS + cells[:, 2]]


def small_rgb(photo: Image.Image, side: int = SIDE) -> np.ndarray:
    """The photo as uint8 RGB with its longer side ``side`` (never enlarged)."""
    image = photo.convert("RGB")
    if max(image.size) > side:
        image = image.copy()
        image.thumbnail((side, side), Image.Resampling.NEAREST)
    return np.ascontiguousarray(np.asarray(image))


def garment_mask(rgb: np.ndarray) -> np.ndarray:
    """bool (H, W): the pixels taken for the garment (see the module's docstring, step 2)."""
    from skimage.color import rgb2lab

    h, w = rgb.shape[:2]
    by, bx = max(1, round(h * BORDER)), max(1, round(w * BORDER))
    border = np.ones((h, w), bool)
    border[by:, bx : w - bx] = False  # top, left and right: the bottom is often the garment itself
    lab = rgb2lab(rgb).astype(np.float32)
    skinned = skin(rgb) & (np.hypot(lab[..., 1], lab[..., 2]) < SKIN_CHROMA)
    around = rgb[border].astype(np.float32)
    backdrop = np.median(around, axis=0)
    if (np.linalg.norm(around - backdrop, axis=1) <= PLAIN_TOLERANCE).mean() >= PLAIN_SHARE:
        garment = (np.linalg.norm(rgb.astype(np.float32) - backdrop, axis=2) > BACKDROP_DISTANCE) & ~border
        if garment.mean() > MIN_AREA:
            return _without_skin(garment, skinned)
    centre = centre_ellipse(h, w, (slice(by, h - by), slice(bx, w - bx)))
    centre = _without_skin(centre, skinned)
    from scipy.spatial import cKDTree

    nearest, _ = cKDTree(lab[border]).query(lab[centre], k=1, distance_upper_bound=SURROUNDINGS_DELTA + 1)
    unlike = nearest > SURROUNDINGS_DELTA  # inf where no border colour lies within the bound
    if not unlike.size or unlike.mean() < MIN_KEPT:  # no centre at all (a sliver of an image): keep what there is
        return centre
    garment = np.zeros((h, w), bool)
    garment[centre] = unlike
    return garment



def _without_skin(region: np.ndarray, skinned: np.ndarray) -> np.ndarray:
    rest = region & ~skinned
    return rest if rest.sum() >= MIN_NOT_SKIN * region.sum() else region


def balanced(rgb: np.ndarray) -> np.ndarray:
    """The photo with its white point restored ("white patch"): each channel scaled so that its brightest pixels
    (the ``WHITE_PERCENTILE``) reach white, by at most ``MAX_GAIN``. An indoor phone photo is dim and tinted
    (a white shirt reads grey or beige); a studio photo, whose backdrop is already white, is left as it is."""
    pixels = rgb.reshape(-1, 3)
    k = min(len(pixels) - 1, int(len(pixels) * WHITE_PERCENTILE / 100))
    top = np.partition(pixels, k, axis=0)[k].astype(np.float32)  # np.percentile costs 1.5 ms more at 64 px
    gain = np.clip(WHITE / max(float(top.max()), 1.0), 1.0, MAX_GAIN)
    return np.clip(rgb * gain, 0, 255).astype(np.uint8)


WHITE_PERCENTILE, WHITE, MAX_GAIN = 99.0, 245.0, 1.5


def garment_pixels(photo: Image.Image | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the photo at ``SIDE`` pixels with its white point restored, the mask of the garment in it): what the
    colours are read from, and what the benchmark's contact sheet shows."""
    rgb = small_rgb(photo) if isinstance(photo, Image.Image) else np.ascontiguousarray(photo[..., :3], np.uint8)
    rgb = balanced(rgb)
    return rgb, garment_mask(rgb)


def garment_colours(photo: Image.Image | np.ndarray) -> GarmentColours:
    """The colours of the garment in ``photo`` (upright RGB, or a uint8 array), named from its own pixels."""
    rgb, mask = garment_pixels(photo)
    pixels = rgb[mask] if mask.any() else rgb.reshape(-1, 3)
    names = name_pixels(pixels)
    counts = np.bincount(names, minlength=len(COLOUR_TERMS))
    shares = counts / max(1, len(names))
    order = [int(i) for i in np.argsort(-shares, kind="stable")]
    chosen = [i for i in order[:MAX_NAMES] if shares[i] >= MIN_SHARE] or order[:1]
    swatches = tuple(tuple(int(v) for v in pixels[names == i].mean(axis=0).round()) for i in chosen)
    return GarmentColours(tuple(COLOUR_TERMS[i] for i in chosen), tuple(round(float(shares[i]), 3) for i in chosen),
                          swatches)
