"""Turning untrusted bytes into a clean, upright RGB image, or a message a person can act on.

Uploads arrive in every shape: CMYK JPEGs from print workflows, transparent PNG packshots, 16-bit scans,
palette GIFs, phone photos whose pixels are stored sideways with an EXIF rotation flag, and files that are not
images at all. Everything downstream assumes 8-bit RGB, upright, of a sane size, so this module is the one door.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import stat
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 40 megapixels covers every phone camera. Phone photos are JPEGs, which are decoded at a reduced scale (draft), so
# their full-size raster never exists; every other format is decoded at full size, which for a 39 MP palette PNG
# of 5 KB cost 340 MB, hence the lower cap for those (16 MP: a 4928×3264 export).
MAX_PIXELS = 40_000_000
MAX_FULL_DECODE_PIXELS = 16_000_000
MAX_BYTES = 50 * 1024 * 1024
# Decodes of more than this many pixels take a slot: at most LARGE_DECODES at once per process, so eight sessions
# uploading huge PNGs together cost two decodes' memory, not eight.
LARGE_PIXELS = 4_000_000
LARGE_DECODES = 2
_large_slots = threading.BoundedSemaphore(LARGE_DECODES)
# Every catalogue conversion ends far below this; capping here keeps a 40 MP phone photo from costing seconds and
# a gigabyte of float copies per query.
WORKING_SIZE = 1024
# Shape, not only pixel count: a 4000×1 strip is 4,000 pixels, but the model's transform resizes its shorter side
# to 256, which made it 262,144×256 (+270 MB a search). Measured on the shop's photos and phone shots, garments
# stay within 1:4; a query more extreme than MAX_ASPECT or with a side under MIN_SIDE is refused with a message,
# and a catalogue file kept anyway (``prepare --keep-odd-shapes``) is padded on white to MAX_ASPECT. MAX_SIDE
# bounds a decode's row length whatever its pixel count (a 16,000,000×1 PNG).
MAX_ASPECT = 20.0
MIN_SIDE = 16
MAX_SIDE = 20_000
ACCEPTED_TYPES = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
# The formats Pillow may even try: an ICO whose header says 16×16 can hold a 13000×13000 PNG that Image.open decodes
# at once, before any size check. (Pillow reads cameras' multi-picture JPEGs, MPO, as JPEG.)
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


class ImageDecodeError(ValueError):
    """The upload cannot be used; ``str(err)`` is meant to be shown to the user as is."""


class ImageShapeError(ImageDecodeError):
    """The image decodes, but its shape is too extreme to search with (a strip, a dot); ``prepare`` lists such
    catalogue files as problems rather than as unreadable."""


def shape_problem(width: int, height: int, name: str = "The image") -> str:
    """Why an image of this size is not a usable garment photo, or "" when it is (MIN_SIDE, MAX_ASPECT)."""
    short, long = min(width, height), max(width, height)
    if short < MIN_SIDE:
        return (f"{name} is {width}×{height} pixels; a garment photo needs at least {MIN_SIDE} pixels on each "
                "side.")
    if long / short > MAX_ASPECT:
        return (f"{name} is {width}×{height} pixels, a strip of {long / short:.0f}:1; photos up to "
                f"{MAX_ASPECT:.0f}:1 are accepted.")
    return ""


def pad_to_aspect(image: Image.Image, aspect: float = MAX_ASPECT) -> Image.Image:
    """``image`` centred on white so that its sides are within ``aspect``: every later resize of a kept strip
    then costs what a photo of its longer side costs."""
    width, height = image.size
    target = (width, max(height, math.ceil(width / aspect))) if width >= height else \
        (max(width, math.ceil(height / aspect)), height)
    if target == image.size:
        return image
    canvas = Image.new("RGB", target, (255, 255, 255))
    canvas.paste(image.convert("RGB"), ((target[0] - width) // 2, (target[1] - height) // 2))
    return canvas


def read_image_file(path: str | Path, name: str | None = None) -> bytes:
    """The bytes of a file that may be an image, refusing before reading what cannot be one: anything but a
    regular file (``/dev/zero``, a FIFO, a folder) and files over MAX_BYTES (a sparse 3 GB "photo" is rejected by
    its size, not after reading it). Missing or unreadable files raise OSError."""
    name = name or str(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # non-blocking: opening a FIFO must not hang
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageDecodeError(f"{name} is not a regular file (a device, a pipe or a folder); only image files "
                                   "are read.")
        if info.st_size > MAX_BYTES:
            raise ImageDecodeError(_too_big(name, info.st_size))
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(MAX_BYTES + 1)  # the file may grow after the check
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise ImageDecodeError(_too_big(name, len(data)))
    return data


def _too_big(name: str, size: int) -> str:
    return f"{name} is {size / 2**20:.0f} MB; the limit is {MAX_BYTES // 2**20} MB."


def decode_image(data: bytes, name: str = "upload", draft_to: int = WORKING_SIZE, odd_shapes: str = "refuse"
                 ) -> Image.Image:
    """Decode ``data`` to an upright 8-bit RGB image, raising ImageDecodeError with a readable reason.

    ``odd_shapes``: "refuse" (queries, and ``prepare``'s check) raises ImageShapeError for a strip or a dot
    (``shape_problem``); "pad" (a catalogue file that ``prepare`` kept) pads it to MAX_ASPECT instead.

    A JPEG is decoded at the smallest of 1/1, 1/2, 1/4, 1/8 scale whose sides are at least ``draft_to``. Uploads
    and catalogue passes keep ``WORKING_SIZE``. A smaller ``draft_to`` decodes a 12 MP photo about 6x faster but
    moves its vectors (cosine 0.98 to a full decode, BENCHMARKS.md "Faster CPU embedding"), so only the benchmark
    asks for one."""
    if not data:
        raise ImageDecodeError(f"{name} is empty (0 bytes). Please choose a JPEG, PNG or WebP photo.")
    if len(data) > MAX_BYTES:
        raise ImageDecodeError(_too_big(name, len(data)))
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        width, height = image.size  # read from the header: nothing is decoded yet
        reduced = image.format == "JPEG"  # draft() below decodes it at 1/2, 1/4 or 1/8 scale
        if odd_shapes == "refuse" and (problem := shape_problem(width, height, name)):
            raise ImageShapeError(problem)  # from the header: a strip is refused before it is decoded
        if max(width, height) > MAX_SIDE:
            raise ImageDecodeError(f"{name} is {width}×{height} pixels; images up to {MAX_SIDE:,} pixels on "
                                   "their longer side are accepted. Please downscale it first.")
        limit = MAX_PIXELS if reduced else MAX_FULL_DECODE_PIXELS
        if width * height > limit:  # checked before Pillow's own (warning-only) bomb limit matters
            kind = "JPEG photos" if reduced else f"{image.format or 'such'} images"
            raise ImageDecodeError(
                f"{name} is too large: {width}×{height} pixels ({width * height / 1e6:.0f} MP); {kind} up to "
                f"{limit / 1e6:.0f} MP are accepted. Please downscale it first."
            )
        side = min(draft_to, WORKING_SIZE)
        image.draft("RGB", (side, side))
        large = image.size[0] * image.size[1] > LARGE_PIXELS  # the size it will be decoded at
        with _large_slots if large else contextlib.nullcontext():
            image.load()  # decode now so truncation errors surface here, not in the model
            if image.mode in ("P", "1") and max(image.size) > 2 * WORKING_SIZE:
                # shrink while it is one byte a pixel: converting a 16 MP palette image first costs 4x more
                image.thumbnail((2 * WORKING_SIZE, 2 * WORKING_SIZE), Image.Resampling.NEAREST)
            image = to_rgb(image)
            image.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.LANCZOS)
        return pad_to_aspect(image)  # a no-op unless a strip got this far (odd_shapes "pad")
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(
            f"{name} is too large to decode safely. JPEG photos up to {MAX_PIXELS / 1e6:.0f} MP and other images "
            f"up to {MAX_FULL_DECODE_PIXELS / 1e6:.0f} MP are accepted; please downscale it first."
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"{name} is not an image file (or not a format we can read). Please upload a JPEG, PNG or WebP photo."
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Truncated or corrupt streams raise OSError ("image file is truncated", "broken data stream").
        raise ImageDecodeError(f"{name} looks damaged or incomplete and could not be decoded ({exc}).") from exc
    except Exception as exc:  # noqa: BLE001 - malformed metadata (EXIF…) can fail in any Pillow plugin
        raise ImageDecodeError(f"{name} could not be read ({type(exc).__name__}: {exc}).") from exc


_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB: EXIF rotation applied, transparency flattened on white, deep images rescaled."""
    if image.mode in DEEP_MODES:
        # made 8-bit first and rotated after: rotating a 32-bit image first copies four bytes a pixel
        orientation = image.getexif().get(0x0112, 1)
        image = _deep_to_l(image)
        image = image.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else image
    else:
        image = ImageOps.exif_transpose(image)
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if image.mode in ("LA", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        # Packshots with an alpha channel have a transparent background; a shop shows them on white.
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def _deep_to_l(image: Image.Image, band: int = 256) -> Image.Image:
    """16-bit / 32-bit grayscale to 8-bit by its real range: Pillow's convert('L') clips instead of scaling. A band
    of rows at a time, so a 16 MP 32-bit image costs its 8-bit copy and a few MB, not several float copies."""
    top = 65535.0 if image.mode.startswith("I;16") else max(float(image.getextrema()[1]), 1.0)
    width, height = image.size
    out = Image.new("L", image.size)
    for y in range(0, height, band):
        rows = np.asarray(image.crop((0, y, width, min(height, y + band))), dtype=np.float32)
        rows = np.clip(np.nan_to_num(rows) * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
        out.paste(Image.fromarray(rows, mode="L"), (0, y))
    return out
