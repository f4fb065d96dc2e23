"""How an image enters a catalogue's domain, and how domain images become model input.

A catalogue's items were all made one way (Fashion-MNIST: trimmed, fitted to 28 px, negated, gray). A photo a
user uploads lands near the right items only after the same conversion, so each catalogue declares a
``Domain``. The model side (size, normalisation) is declared by the backbone and resolved through timm's data
config, so the embedding, training and query paths all ask these two objects and never repeat the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from core.photo.isolate import Isolation


class Domain(Protocol):
    """A catalogue's image domain: item arrays are ``shape`` uint8; ``convert`` brings a photo into it."""

    name: str
    shape: tuple[int, ...]
    input_size: int  # the model input size a search uses by default (Settings.image_size 0)
    # The shorter side a catalogue photo must be decoded at for ``convert`` (None: as large as an upload's).
    decode_side: int | None
    # Items are garments alone on a plain ground (cut-outs): a photo is like them only once its garment is
    # isolated. Photo catalogues are not: isolating a query only moves it away from them.
    cutout: bool

    def convert(self, photo: Image.Image) -> np.ndarray: ...

    def convert_isolated(self, photo: Image.Image, isolation: Isolation) -> np.ndarray:
        """The same conversion of the garment alone (``core.photo.isolate``, ``isolation.found``), without its
        surroundings."""
        ...

    def is_native(self, photo: Image.Image) -> bool:
        """Already an item of this domain: converted as it is, never isolated."""
        ...


@dataclass(frozen=True)
class FashionMnistDomain:
    """The recipe Zalando used to make Fashion-MNIST from packshots (Xiao et al. 2017, section 2).

    trim edges close to the corner colour (5 % of the RGB range) → fit the longest edge to 28 → sharpen →
    centre on a 28×28 canvas → negate → 8-bit gray. We negate *relative to the background colour* (distance from
    it in RGB): on a white background that is exactly 255 − gray, and an image that is already Fashion-MNIST-like
    (black background) is left as it is instead of being inverted.
    """

    name: str = "fashion-mnist"
    cutout: bool = True
    size: int = 28
    trim_tolerance: float = 0.05
    # 28-px items upsampled to 64 keep CPU extraction fast (~850 images/s on 2 cores) while giving the ImageNet
    # features enough spatial resolution.
    input_size: int = 64
    decode_side: None = None  # the trim finds the garment's edges on the full-resolution photo

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.size, self.size)

    # A garment's median intensity after negation is lifted to at least this (of 255): a white shirt on a white
    # bed would otherwise become an almost black, empty query. Its own texture and seams are kept on top.
    light_garment_floor: float = 80.0

    def is_native(self, photo: Image.Image) -> bool:
        if photo.size != (self.size, self.size):
            return False
        pixels = np.asarray(photo.convert("RGB"), dtype=np.float32)
        return np.ptp(pixels, axis=2).max() == 0 and _corner_colour(pixels).max() < 13

    def convert(self, photo: Image.Image) -> np.ndarray:
        rgb = photo.convert("RGB")
        pixels = np.asarray(rgb, dtype=np.float32)
        if self.is_native(rgb):
            return pixels[..., 0].astype(np.uint8)  # already a catalogue item: gray, 28 px, black background
        background = _corner_colour(pixels)
        crop = rgb.crop(_content_box(pixels, background, self.trim_tolerance))
        small = crop.resize(self._fitted_size(crop.size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        small = small.filter(ImageFilter.UnsharpMask(radius=1, percent=80, threshold=0))
        distance = np.linalg.norm(np.asarray(small, dtype=np.float32) - background, axis=2) / np.sqrt(3.0)
        return self._centred(np.clip(distance + 0.5, 0, 255).astype(np.uint8))

    def convert_isolated(self, photo: Image.Image, isolation: Isolation) -> np.ndarray:
        """The recipe on the garment alone: cropped to its box, its darkness against white as intensity (what
        negating a packshot gives), light garments lifted to stay visible, everything else black."""
        crop = photo.convert("L").crop(isolation.box)
        left, top, right, bottom = isolation.box
        mask = isolation.mask[top:bottom, left:right]
        darkness = 255.0 - np.asarray(crop, dtype=np.float32)
        lift = max(0.0, self.light_garment_floor - float(np.median(darkness[mask])))
        return self._fit(np.where(mask, np.minimum(darkness + lift, 255.0), 0.0))

    def _fit(self, intensity: np.ndarray) -> np.ndarray:
        """Intensity (H, W) in 0..255 → fitted to the longest edge, sharpened, centred on the black canvas."""
        image = Image.fromarray(np.clip(intensity + 0.5, 0, 255).astype(np.uint8))
        small = image.resize(self._fitted_size(image.size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        return self._centred(np.asarray(small.filter(ImageFilter.UnsharpMask(radius=1, percent=80, threshold=0))))

    def _fitted_size(self, size: tuple[int, int]) -> tuple[int, int]:
        scale = self.size / max(size)
        return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))

    def _centred(self, small: np.ndarray) -> np.ndarray:
        canvas = np.zeros(self.shape, dtype=np.uint8)
        top, left = (self.size - small.shape[0]) // 2, (self.size - small.shape[1]) // 2
        canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
        return canvas


@dataclass(frozen=True)
class PhotoDomain:
    """Colour photos, for catalogues of product images: the backbone's own evaluation transform (timm's: resize
    the shorter side to ``size / crop_pct``, centre-crop ``size``), applied alike to catalogue items and uploads.

    Photos arrive upright and RGB (``images.decode_image`` applies EXIF orientation and flattens alpha), so an
    upload and the same file in the catalogue become the same array.
    """

    size: int = 224
    crop_pct: float = 0.875
    name: str = "photo"
    cutout: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.size, self.size, 3)

    @property
    def input_size(self) -> int:
        return self.size

    @property
    def decode_side(self) -> int:
        """The shorter side ``convert`` resizes to: a catalogue photo need not be decoded any larger."""
        return math.ceil(self.size / self.crop_pct)

    def is_native(self, photo: Image.Image) -> bool:
        return False

    def convert_isolated(self, photo: Image.Image, isolation: Isolation) -> np.ndarray:
        """The garment cut out onto white, as a packshot would show it, then the usual transform."""
        white = Image.new("RGB", photo.size, (255, 255, 255))
        white.paste(photo.convert("RGB"), mask=isolation.mask_image())
        return self.convert(white.crop(isolation.box))

    def convert(self, photo: Image.Image) -> np.ndarray:
        rgb = photo.convert("RGB")
        scale = self.size / self.crop_pct / min(rgb.size)
        resized = rgb.resize((max(self.size, round(rgb.width * scale)), max(self.size, round(rgb.height * scale))),
                             Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (resized.width - self.size) // 2, (resized.height - self.size) // 2
        return np.asarray(resized.crop((left, top, left + self.size, top + self.size)), dtype=np.uint8)


def _corner_colour(pixels: np.ndarray) -> np.ndarray:
    """The background colour, as the median of the four corner pixels (robust to one odd corner)."""
    corners = np.stack([pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]])
    return np.median(corners, axis=0)


def _content_box(pixels: np.ndarray, background: np.ndarray, tolerance: float) -> tuple[int, int, int, int]:
    far = np.linalg.norm(pixels - background, axis=2) > tolerance * 255.0 * np.sqrt(3.0)
    rows, cols = np.flatnonzero(far.any(axis=1)), np.flatnonzero(far.any(axis=0))
    if rows.size == 0:  # a blank image: nothing to trim to
        return (0, 0, pixels.shape[1], pixels.shape[0])
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


@dataclass(frozen=True)
class ModelInput:
    """Batch transform from domain arrays to normalised model tensors; built from timm's resolved data config."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_data_config(cls, config: dict) -> "ModelInput":
        return cls(size=int(config["input_size"][-1]), mean=tuple(config["mean"]), std=tuple(config["std"]))

    def __call__(self, batch: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W) or (B, H, W, 3) → float (B, 3, size, size)."""
        return self.tensor(torch.from_numpy(np.array(batch, dtype=np.uint8, copy=True)))  # mmap slices: read-only

    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        """The same for a uint8 tensor, on whatever device it is (training keeps the catalogue on the GPU)."""
        return self.normalise(self.resized(x))

    def resized(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W[, 3]) → float (B, 3, size, size) in [0, 1]: where intensity augmentations apply."""
        x = x.unsqueeze(1).expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        x = x.float().div_(255.0)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return x

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std
