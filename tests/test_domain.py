"""The Fashion-MNIST query conversion and the model-input transform."""

from __future__ import annotations

import numpy as np
import torch
from conftest import shape_item, tshirt_photo
from PIL import Image

from core.photo.domain import FashionMnistDomain, ModelInput


def test_packshot_becomes_a_fashion_mnist_item():
    out = FashionMnistDomain().convert(tshirt_photo((480, 640)))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    # Background negated to black, garment bright, as in the catalogue.
    assert out[0, 0] == 0 and out[-1, -1] == 0
    assert out[14, 14] > 150
    # Trimmed and fitted: the garment spans the full width (its longest edge), centred vertically.
    cols = np.flatnonzero(out.max(axis=0) > 30)
    rows = np.flatnonzero(out.max(axis=1) > 30)
    assert cols[0] <= 1 and cols[-1] >= 26
    assert abs((rows[0] + rows[-1]) / 2 - 13.5) <= 1.5


def test_white_margin_does_not_change_the_result():
    photo = tshirt_photo((300, 300))
    padded = Image.new("RGB", (900, 700), (255, 255, 255))
    padded.paste(photo, (420, 50))
    domain = FashionMnistDomain()
    difference = np.abs(domain.convert(photo).astype(int) - domain.convert(padded).astype(int))
    assert difference.mean() < 6


def test_catalogue_like_item_passes_through_unchanged():
    item = shape_item("Disc", np.random.default_rng(1))
    assert item.max() > 100 and item[0, 0] == 0
    out = FashionMnistDomain().convert(Image.fromarray(item).convert("RGB"))
    assert np.array_equal(out, item)


def test_blank_photo_does_not_crash():
    out = FashionMnistDomain().convert(Image.new("RGB", (100, 50), (255, 255, 255)))
    assert out.shape == (28, 28) and out.max() == 0


def test_model_input_gray_and_colour_batches():
    transform = ModelInput(size=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    gray = transform(np.full((2, 28, 28), 255, np.uint8))
    colour = transform(np.zeros((3, 40, 40, 3), np.uint8))
    assert gray.shape == (2, 3, 64, 64) and torch.allclose(gray, torch.ones_like(gray))
    assert colour.shape == (3, 3, 64, 64) and torch.allclose(colour, -torch.ones_like(colour))
