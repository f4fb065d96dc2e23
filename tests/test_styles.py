"""Style augmentation (core/training/styles.py): a garment cut out onto a plain backdrop or framed by its box, from
masks the project's isolation finds once per catalogue and caches on disk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import COLOURS, garment_file_photo, tiny_settings
from PIL import Image

from core.catalog.base import Catalog
from core.catalog.registry import register_source
from core.config import TrainConfig
from core.photo.domain import PhotoDomain
from core.training import styles
from core.training.styles import PLAIN_BACKDROPS, garment_masks, style_augment

SIDE = 64


def on_a_bed(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A red garment, twice as tall as wide, on a green, noisy background (a phone shot on a bed), and its mask."""
    rng = np.random.default_rng(seed)
    x = torch.zeros(3, SIDE, SIDE)
    x[1] = torch.from_numpy(rng.uniform(0.4, 0.7, (SIDE, SIDE)).astype(np.float32))
    x[:, 16:48, 24:40] = torch.tensor([0.9, 0.05, 0.05]).view(3, 1, 1)
    mask = torch.zeros(1, 1, SIDE, SIDE)
    mask[..., 16:48, 24:40] = 1.0
    return x, torch.nn.functional.interpolate(mask, size=(styles.MASK_SIDE,) * 2, mode="nearest")[0]


def red_share(x: torch.Tensor) -> torch.Tensor:
    return ((x[:, 0] > 0.7) & (x[:, 1] < 0.2)).float().mean(dim=(1, 2))


def test_chosen_photos_become_packshots_or_close_ups_of_the_garment():
    x, mask = on_a_bed()
    batch, masks = x.expand(32, -1, -1, -1).clone(), mask.expand(32, -1, -1, -1).clone()
    out = style_augment(batch, masks, torch.ones(32, dtype=torch.bool), torch.Generator().manual_seed(0), 1.0)
    # framed by the garment's box made square plus at most 20 %: the garment fills a third to a half of every
    # frame (an eighth before)
    assert float(red_share(batch).max()) < 0.13
    assert float(red_share(out).min()) > 0.3
    bed = (out[:, 0] < 0.3) & (out[:, 1] > 0.35)
    packshots = ~bed.flatten(1).any(dim=1)
    assert 8 <= int(packshots.sum()) <= 24  # both styles are drawn
    backdrops = torch.tensor(PLAIN_BACKDROPS)
    for photo in out[packshots]:
        around = photo.flatten(1)[:, photo[1].argmax()]  # the least red pixel: the backdrop, unblended
        assert torch.isclose(backdrops, around, atol=0.01).all(dim=1).any(), around  # a plain backdrop colour


def test_unchosen_photos_and_photos_without_a_garment_are_left_as_they_are():
    x, mask = on_a_bed()
    batch, masks = x.expand(8, -1, -1, -1).clone(), mask.expand(8, -1, -1, -1).clone()
    found = torch.tensor([True, False] * 4)
    out = style_augment(batch, masks, found, torch.Generator().manual_seed(0), 1.0)
    assert torch.equal(out[~found], batch[~found])
    assert not torch.equal(out[found], batch[found])
    assert torch.equal(style_augment(batch, masks, found, torch.Generator().manual_seed(0), 0.0), batch)
    with pytest.raises(ValueError, match="style_augment must be in"):
        TrainConfig(style_augment=2.0)
    assert "style_augment" not in TrainConfig().identity()  # runs trained before it keep their ids


def colour_catalogue(size: int = SIDE) -> Catalog:
    rng = np.random.default_rng(0)
    domain = PhotoDomain(size=size)
    rows, pixels = [], []
    for category in ("Shirt", "Skirt", "Scarf"):
        for i in range(8):
            colour = list(COLOURS)[i % len(COLOURS)]
            photo = Image.new("RGB", (144, 144), (255, 255, 255))  # a packshot with room around the garment
            photo.paste(garment_file_photo(category, colour, rng), (24, 24))
            pixels.append(domain.convert(photo))
            rows.append({"id": f"{category}-{i}", "category": category, "split": "test" if i >= 6 else "train",
                         "label": ["Shirt", "Skirt", "Scarf"].index(category), "colour": colour})
    return Catalog("colour-shapes", "colour-shapes-k1", pd.DataFrame(rows), ["Shirt", "Skirt", "Scarf"], domain,
                   np.stack(pixels))


def test_masks_are_found_once_per_catalogue_and_read_back_from_disk(tmp_path, monkeypatch):
    settings = tiny_settings(tmp_path)
    catalog = colour_catalogue()
    train = np.flatnonzero(catalog.items["split"].to_numpy() == "train")
    first = garment_masks(settings, catalog, train)
    assert first.found[train].all() and not first.found[np.setdiff1d(np.arange(len(catalog)), train)].any()
    garment = catalog.domain_batch(train[:1])[0].astype(int).sum(axis=2) < 600  # not white
    small = torch.nn.functional.interpolate(torch.from_numpy(garment[None, None].astype(np.float32)),
                                            size=(styles.MASK_SIDE,) * 2)[0, 0].numpy() > 0.5
    assert ((first.masks[train[0]] > 127) == small).mean() > 0.95  # the mask is the garment

    def no_isolation(*args, **kwargs):
        raise AssertionError("isolation ran again")

    monkeypatch.setattr(styles, "isolate", no_isolation)
    again = garment_masks(settings, catalog, train)
    assert np.array_equal(again.masks, first.masks) and np.array_equal(again.found, first.found)
    block = next(styles.masks_folder(settings, catalog).glob("block-*.npz"))
    block.write_bytes(b"damaged")
    monkeypatch.undo()
    assert np.array_equal(garment_masks(settings, catalog, train).masks, first.masks)  # a damaged block is redone


@register_source("colour-shapes", "Colour shapes on white (tests)")
def load_colour_shapes(settings) -> Catalog:
    return colour_catalogue()


def test_a_run_with_style_augmentation_trains_on_the_styled_photos(tmp_path):
    from test_train import _trainer

    settings = tiny_settings(tmp_path, catalog="colour-shapes", backbone="test_efficientnet")
    config = TrainConfig(epochs=1, batch_size=8, image_size=32, embedding_dim=16, freeze="full", style_augment=1.0)
    trainer = _trainer(settings, config)
    assert trainer.masks is not None and trainer.masks.found[trainer.splits.train].all()
    rows = trainer.splits.train[:8]
    plain = trainer.inputs(rows)
    styled = trainer.inputs(rows, torch.Generator().manual_seed(0))
    assert not torch.allclose(plain, styled)
    trainer.fit()
    assert trainer.history[0]["train_loss"] > 0


def test_a_styled_run_interrupted_mid_epoch_resumes_to_the_same_weights(tmp_path):
    """The masks come from disk and every style draw from the epoch's seeded generator, so a kill and a resume end
    where an uninterrupted run ends."""
    from test_train import assert_an_interrupted_run_resumes_to_the_same_weights

    config = TrainConfig(epochs=2, batch_size=4, image_size=32, embedding_dim=16, freeze="full", style_augment=0.5)
    assert_an_interrupted_run_resumes_to_the_same_weights(
        tiny_settings(tmp_path / "straight", catalog="colour-shapes"),
        tiny_settings(tmp_path / "resumed", catalog="colour-shapes"), config)
