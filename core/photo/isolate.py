"""Finding the garment in a real photo before it is converted into the catalogue's domain.

A catalogue of packshots (Fashion-MNIST: one garment, centred, on white) is searched with phone shots of a shirt on
a wooden floor, or of a person wearing it. Converted as they are, the floor or the person fills the query. GrabCut
(OpenCV) separates the garment: it models the colours of foreground and background with Gaussian mixtures and cuts
the image graph between them, starting from what we know about such photos: the border is background, the centre is
probably garment, and skin is probably not garment. A user-drawn box, when given, replaces the border prior. A photo
on a plain backdrop needs no graph cut: whatever differs from the backdrop is the garment.

Everything runs offline on the CPU, in 0.1-0.4 s per photo on 2 cores at the working size (BENCHMARKS.md); no model
weights are involved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

WORKING_SIDE = 320  # GrabCut cost grows with pixels; masks are computed at this size and scaled back
BORDER = 0.04  # share of each side taken as certain background
MIN_AREA, MAX_AREA = 0.03, 0.97  # a plausible garment's share of the photo (or of the user's box)
# A backdrop is plain when this share of the border is within PLAIN_TOLERANCE (RGB distance) of its median colour;
# the tolerance is the Fashion-MNIST recipe's trim tolerance halved, so a white shirt on white still stands out.
PLAIN_SHARE, PLAIN_TOLERANCE = 0.98, 11.0
HOLE_SHARE = 0.05  # holes smaller than this share of the garment are filled, larger ones are part of its shape
SKIN_SHARE = 0.5  # skin covering less of the centre than this is the wearer's; more, and it is the garment's colour


@dataclass(frozen=True)
class Isolation:
    """A garment mask over the whole photo and its bounding box; ``found`` is False when no plausible garment
    was separated and the mask is the whole photo (or box), so the query falls back to the plain conversion."""

    mask: np.ndarray  # bool (H, W)
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in photo pixels
    found: bool

    def mask_image(self) -> Image.Image:
        return Image.fromarray(self.mask.astype(np.uint8) * 255)


def skin(rgb: np.ndarray) -> np.ndarray:
    """Skin-coloured pixels, by the classic YCrCb range (Chai & Ngan 1999), for every skin tone it covers."""
    import cv2

    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    y, cr, cb = ycrcb[..., 0], ycrcb[..., 1], ycrcb[..., 2]
    return (y > 60) & (cr >= 135) & (cr <= 175) & (cb >= 80) & (cb <= 130)


def propose_box(isolation: Isolation, width: int, height: int, margin: float = 0.08) -> tuple[int, int, int, int]:
    """The crop box to offer a user: the garment's box with a margin, as GrabCut's rectangle mode expects."""
    left, top, right, bottom = isolation.box
    dx, dy = round((right - left) * margin), round((bottom - top) * margin)
    return max(0, left - dx), max(0, top - dy), min(width, right + dx), min(height, bottom + dy)


def isolate(photo: Image.Image, box: tuple[int, int, int, int] | None = None, iterations: int = 4) -> Isolation:
    """The garment in ``photo`` (upright RGB), optionally inside a user's ``box`` (left, top, right, bottom).

    Inside a box is probably garment, and the result is limited to it; outside is not made certain background,
    because a box drawn tight around a garment leaves a strap or a hem outside, which would teach GrabCut the
    garment's own colour as background."""
    import cv2

    width, height = photo.size
    full_box = (0, 0, width, height)
    box = _clip_box(box, width, height) if box is not None else full_box
    scale = min(1.0, WORKING_SIDE / max(width, height))
    small = photo.convert("RGB").resize((max(1, round(width * scale)), max(1, round(height * scale))),
                                        Image.Resampling.BILINEAR)
    rgb = np.ascontiguousarray(np.asarray(small))
    h, w = rgb.shape[:2]
    if min(h, w) < 8 or rgb.std() < 2.0:  # too small, or one flat colour (GrabCut's mixtures degenerate: slow)
        return _whole(width, height, box)
    sx1, sy1, sx2, sy2 = (round(box[0] * scale), round(box[1] * scale), round(box[2] * scale), round(box[3] * scale))
    mask = np.full((h, w), cv2.GC_BGD, np.uint8)  # the photo's own border is background
    by, bx = max(1, round(h * BORDER)), max(1, round(w * BORDER))
    inner = (slice(by, h - by), slice(bx, w - bx))
    mask[inner] = cv2.GC_PR_BGD
    in_box = None
    if box == full_box:
        centre = centre_ellipse(h, w, inner)
    else:  # GrabCut's rectangle mode, with the outside only probably background (see above)
        in_box = np.zeros((h, w), bool)
        in_box[sy1:sy2, sx1:sx2] = True
        centre = in_box & (mask == cv2.GC_PR_BGD)
    mask[centre] = cv2.GC_PR_FGD
    skinned = skin(rgb)
    # Skin is a hint, not a rule: a pink or tan garment can be skin-coloured all over. Only where skin is a
    # minority of the centre (arms, neck, a face) is it taken for the wearer.
    wearer = skinned[centre].mean() < SKIN_SHARE
    if wearer:
        mask[skinned & (mask == cv2.GC_PR_FGD)] = cv2.GC_PR_BGD
    backdrop = _plain_backdrop(rgb, mask == cv2.GC_BGD)
    if backdrop is not None:
        # A packshot-like photo (one backdrop colour all around): what differs from the backdrop is the garment,
        # holes included (a ring's opening, a bag's handle), which GrabCut's centre prior would fill in.
        distance = np.linalg.norm(rgb.astype(np.float32) - backdrop, axis=2)
        garment = (distance > PLAIN_TOLERANCE) & (mask != cv2.GC_BGD)
    else:
        try:
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            cv2.grabCut(rgb, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
        except cv2.error:  # a degenerate photo: nothing to separate
            return _whole(width, height, box)
        garment = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    if wearer:
        garment &= ~skinned
    if in_box is not None:
        garment &= in_box
    garment = _clean(garment)
    area = garment.sum() / max(1, (sy2 - sy1) * (sx2 - sx1))
    if not MIN_AREA <= area <= (MAX_AREA if box == full_box else 1.0):  # a user's box may fit the garment exactly
        return _whole(width, height, box)
    full = np.asarray(Image.fromarray(garment.astype(np.uint8) * 255).resize((width, height),
                                                                               Image.Resampling.NEAREST)) > 127
    rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
    return Isolation(full, (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1), True)


def _plain_backdrop(rgb: np.ndarray, certain_background: np.ndarray) -> np.ndarray | None:
    """The backdrop colour when (nearly) all of the certain background is one colour, else None."""
    pixels = rgb[certain_background].astype(np.float32)
    if len(pixels) == 0:
        return None
    colour = np.median(pixels, axis=0)
    close = np.linalg.norm(pixels - colour, axis=1) <= PLAIN_TOLERANCE
    return colour if close.mean() >= PLAIN_SHARE else None


def _clip_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    left, top, right, bottom = (int(round(v)) for v in box)
    left, top = min(max(0, left), width - 1), min(max(0, top), height - 1)
    right, bottom = max(left + 1, min(width, right)), max(top + 1, min(height, bottom))
    return left, top, right, bottom


def _whole(width: int, height: int, box: tuple[int, int, int, int]) -> Isolation:
    mask = np.zeros((height, width), bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    return Isolation(mask, box, False)


def centre_ellipse(h: int, w: int, inner: tuple[slice, slice]) -> np.ndarray:
    """The middle of the region: 50 % of its width, 60 % of its height, where the garment almost always is."""
    y0, y1 = inner[0].start or 0, inner[0].stop or h
    x0, x1 = inner[1].start or 0, inner[1].stop or w
    yy, xx = np.ogrid[:h, :w]  # broadcast, not two full grids (np.mgrid cost 2 ms at 64 px)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    ry, rx = max(1.0, 0.3 * (y1 - y0)), max(1.0, 0.25 * (x1 - x0))
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _clean(garment: np.ndarray) -> np.ndarray:
    """The largest connected part, small gaps closed and holes filled: one garment, one solid silhouette."""
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = cv2.morphologyEx(garment.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return np.zeros_like(garment)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    solid = labels == largest
    # Fill small holes (a print GrabCut took for background), keep large ones: the opening of a ring, the space
    # between a bag's handle and its body, or between a tank top's straps are part of the shape.
    count, holes, stats, _ = cv2.connectedComponentsWithStats((~solid).astype(np.uint8), connectivity=4)
    limit = HOLE_SHARE * solid.sum()
    for label in range(1, count):
        x, y, w, h, area = stats[label]
        touches_border = x == 0 or y == 0 or x + w == solid.shape[1] or y + h == solid.shape[0]
        if not touches_border and area < limit:
            solid |= holes == label
    return solid
