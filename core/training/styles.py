"""Augmentations that turn one photo style into another: a phone photo's garment cut out onto a plain backdrop (a
packshot), an on-model photo cropped to the garment (a close-up).

A stakeholder searches a shop's studio photos with a phone shot on a bed, or the phone shots with a shop photo of a
model. Training on both catalogues teaches the network the two styles it is shown; these augmentations show it the
styles in between, built with the project's own isolation (``core.photo.isolate``, the same GrabCut the Search page
runs on an upload). GrabCut costs a tenth of a second or more per photo, far too slow per training step, so every
training photo's garment mask is computed once per catalogue and cached on disk in blocks (an interrupted pass
resumes at its last block); the per-step work is two resamples of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core.artifacts import ArtifactDir, atomic_path
from core.catalog.base import Catalog
from core.config import Settings
from core.photo.domain import Domain
from core.photo.isolate import isolate
from core.progress import Progress, no_progress

ISOLATION_SIDE = 200  # GrabCut's cost grows with pixels: 0.08 s a photo at 200 px, 0.24 s on a 224 px crop (2 cores)
MASK_SIDE = 112  # masks are stored at half the domain's 224 px and scaled up per batch (soft edges, 8x less disk)
BLOCK_ROWS = 256  # rows per cached block: the resume granularity of the mask pass
MASKS_VERSION = 1  # bump when the isolation, ISOLATION_SIDE or the mask layout changes, so old caches are not reused
PLAIN_BACKDROPS = ((1.0, 1.0, 1.0), (0.96, 0.96, 0.96), (0.9, 0.9, 0.88), (0.82, 0.84, 0.86))
WHITE_SHARE = 0.6  # of the cut-outs put on pure white, the shop's backdrop; the rest on a light plain colour


@dataclass(frozen=True)
class GarmentMasks:
    """Each catalogue row's garment mask at ``MASK_SIDE`` px in the domain image's frame (uint8 0/255), and whether
    isolation found a garment there (rows not computed, and photos without a plausible garment, are False)."""

    masks: np.ndarray  # (N, MASK_SIDE, MASK_SIDE) uint8
    found: np.ndarray  # (N,) bool

    def batch(self, rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The masks of ``rows`` as float (B, 1, S, S) in [0, 1], and their found flags (B,)."""
        masks = torch.from_numpy(np.asarray(self.masks[rows], dtype=np.float32) / 255.0).unsqueeze(1)
        return masks.to(device), torch.from_numpy(np.asarray(self.found[rows])).to(device)


def photo_mask(photo: Image.Image, domain: Domain) -> tuple[np.ndarray, bool]:
    """The garment mask of one catalogue photo, framed as ``domain`` frames the photo, at ``MASK_SIDE``.

    Isolation runs on the whole photo, not on the domain's centre crop: its prior is that the photo's border is
    background, and a centre crop cuts through the garment (measured on 16 union photos: 7 garments found in the
    crops). The photo is shrunk to ``ISOLATION_SIDE`` first, which the mask at 112 px does not miss."""
    small = photo.convert("RGB")
    small.thumbnail((ISOLATION_SIDE, ISOLATION_SIDE), Image.Resampling.BILINEAR)
    found = isolate(small)
    if not found.found:
        return np.zeros((MASK_SIDE, MASK_SIDE), np.uint8), False
    framed = domain.convert(found.mask_image().convert("RGB"))[..., 0]
    mask = Image.fromarray(framed).resize((MASK_SIDE, MASK_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(mask, dtype=np.uint8), True


def masks_folder(settings: Settings, catalog: Catalog) -> Path:
    return Path(settings.artifacts_dir) / "style-masks" / f"{catalog.key}-v{MASKS_VERSION}-{MASK_SIDE}px"


def garment_masks(settings: Settings, catalog: Catalog, rows: np.ndarray,
                  progress: Progress = no_progress) -> GarmentMasks:
    """The masks of ``rows`` (the training rows: nothing else is augmented), computed block by block and cached
    under the artifacts folder, keyed by the catalogue's content key; a block already on disk (checksum verified)
    is read, not computed again."""
    store = ArtifactDir(masks_folder(settings, catalog))
    store.path.mkdir(parents=True, exist_ok=True)
    masks = np.zeros((len(catalog), MASK_SIDE, MASK_SIDE), np.uint8)
    found = np.zeros(len(catalog), bool)
    wanted = np.zeros(len(catalog), bool)
    wanted[rows] = True
    blocks = range(0, len(catalog), BLOCK_ROWS)
    for number, start in enumerate(blocks, 1):
        block = np.arange(start, min(start + BLOCK_ROWS, len(catalog)))
        block = block[wanted[block]]
        if len(block) == 0:
            continue
        name = f"block-{start:07d}.npz"
        if not store.verified(name):
            made = [photo_mask(catalog.image(int(row)), catalog.domain) for row in block]
            with atomic_path(store.file(name)) as tmp, tmp.open("wb") as fh:
                np.savez(fh, rows=block, masks=np.stack([m for m, _ in made]),
                         found=np.array([f for _, f in made], bool))
            store.record(name, rows=len(block))
        with np.load(store.file(name)) as saved:
            masks[saved["rows"]], found[saved["rows"]] = saved["masks"], saved["found"]
        progress("Finding the garment in each training photo (once per catalogue)", number, len(blocks))
    return GarmentMasks(masks, found)


def style_augment(x: torch.Tensor, masks: torch.Tensor, found: torch.Tensor, generator: torch.Generator,
                  share: float) -> torch.Tensor:
    """Turn ``share`` of the batch into another photo style; x is (B, 3, H, W) in [0, 1], masks (B, 1, S, S).

    Of the chosen photos with a garment, half become a packshot: the garment cut out onto white or a light plain
    colour and framed by its box, the way a shop shoots it (a phone photo on a bed looks like a shop item); the
    other half are cropped to the garment's box with its surroundings kept (an on-model shop photo becomes a
    close-up of the garment, as a phone shot frames it). The margin around the box is drawn at random (2-20 %)."""
    n, _, h, w = x.shape
    r = torch.rand(n, 5, generator=generator).to(x.device)
    chosen = (r[:, 0] < share) & found
    if not bool(chosen.any()):
        return x
    alpha = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    backdrops = torch.tensor(PLAIN_BACKDROPS, device=x.device)
    coloured = 1 + (r[:, 3] * (len(PLAIN_BACKDROPS) - 1)).long().clamp(max=len(PLAIN_BACKDROPS) - 2)
    pick = torch.where(r[:, 2] < WHITE_SHARE, 0, coloured)
    backdrop = backdrops[pick].view(n, 3, 1, 1)
    cut_out = (r[:, 1] < 0.5).view(n, 1, 1, 1)
    y = torch.where(cut_out, alpha * x + (1 - alpha) * backdrop, x)
    theta = _box_frames(masks, 0.02 + 0.18 * r[:, 4])
    grid = F.affine_grid(theta, list(y.shape), align_corners=False)
    framed = F.grid_sample(y, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.where(chosen.view(n, 1, 1, 1), framed, x)


def _box_frames(masks: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Affine frames (B, 2, 3) that zoom onto each mask's bounding box made square, plus ``margin`` of its side,
    kept inside the image where it fits (so a crop repeats no border); an empty mask frames the whole image."""
    present = masks[:, 0] > 0.5
    s = masks.shape[-1]
    coords = (torch.arange(s, device=masks.device, dtype=torch.float32) + 0.5) / s * 2 - 1  # pixel centres in [-1, 1]
    rows, cols = present.any(dim=2), present.any(dim=1)
    big = torch.tensor(2.0, device=masks.device)
    x0 = torch.where(cols, coords, big).amin(dim=1)
    x1 = torch.where(cols, coords, -big).amax(dim=1)
    y0 = torch.where(rows, coords, big).amin(dim=1)
    y1 = torch.where(rows, coords, -big).amax(dim=1)
    empty = ~present.flatten(1).any(dim=1)
    half = ((torch.maximum(x1 - x0, y1 - y0) / 2 + 1 / s) * (1 + margin)).clamp(max=1.0)
    cx = ((x0 + x1) / 2).clamp(-1 + half, 1 - half)
    cy = ((y0 + y1) / 2).clamp(-1 + half, 1 - half)
    half, cx, cy = torch.where(empty, 1.0, half), torch.where(empty, 0.0, cx), torch.where(empty, 0.0, cy)
    theta = torch.zeros(len(masks), 2, 3, device=masks.device)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = half, half, cx, cy
    return theta
