"""Turning untrusted bytes into a clean, upright RGB image, or a message a person can act on.

Uploads arrive in every shape: CMYK JPEGs from print workflows, transparent PNG packshots, 16-bit scans,
palette GIFs, phone photos whose pixels are stored sideways with an EXIF rotation flag, and files that are not
images at all. Everything downstream assumes 8-bit RGB, upright, of a sane size, so this module is the one door.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 40 megapixels covers every phone camera; beyond it decoding alone would take seconds and hundreds of MB.
MAX_PIXELS = 40_000_000
MAX_BYTES = 50 * 1024 * 1024
# Every catalogue conversion ends far below this; capping here keeps a 40 MP phone photo from costing seconds and
# a gigabyte of float copies per query.
WORKING_SIZE = 1024
ACCEPTED_TYPES = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")


class ImageDecodeError(ValueError):
    """The upload cannot be used; ``str(err)`` is meant to be shown to the user as is."""


def decode_image(data: bytes, name: str = "upload") -> Image.Image:
    """Decode ``data`` to an upright 8-bit RGB image, raising ImageDecodeError with a readable reason."""
    if not data:
        raise ImageDecodeError(f"{name} is empty (0 bytes). Please choose a JPEG, PNG or WebP photo.")
    if len(data) > MAX_BYTES:
        raise ImageDecodeError(f"{name} is {len(data) / 2**20:.0f} MB; the limit is {MAX_BYTES // 2**20} MB.")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size  # read from the header: nothing is decoded yet
        if width * height > MAX_PIXELS:  # checked before Pillow's own (warning-only) bomb limit matters
            raise ImageDecodeError(
                f"{name} is too large: {width}×{height} pixels ({width * height / 1e6:.0f} MP); images up to "
                f"{MAX_PIXELS / 1e6:.0f} MP are accepted. Please downscale it first."
            )
        image.draft("RGB", (WORKING_SIZE, WORKING_SIZE))  # JPEG: decode at a reduced scale, much faster
        image.load()  # decode now so truncation errors surface here, not in the model
        image = to_rgb(image)
        image.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.LANCZOS)
        return image
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(
            f"{name} is too large to decode safely ({exc}). Images up to {MAX_PIXELS / 1e6:.0f} MP are accepted; "
            "please downscale it first."
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


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB: EXIF rotation applied, transparency flattened on white, deep images rescaled."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _deep_to_l(image)
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


def _deep_to_l(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit grayscale to 8-bit by its real range: Pillow's convert('L') clips instead of scaling."""
    array = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
    return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
