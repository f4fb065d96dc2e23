"""Per-step augmentations of a training batch, drawn from the epoch's seeded generator (so a resumed run draws what
an uninterrupted one would have drawn). The style transforms that need garment masks live in ``styles``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, generator: torch.Generator, colour: bool) -> torch.Tensor:
    """Shift (±8 %), scale (±10 %) and horizontal flip, in one affine resample; brightness and contrast jitter
    only for colour catalogues (a grayscale catalogue's intensities mean something: negated darkness)."""
    n = len(x)
    r = torch.rand(n, 6, generator=generator).to(x.device)
    scale = 0.9 + 0.2 * r[:, 0]
    flip = torch.where(r[:, 1] < 0.5, -1.0, 1.0).to(x.device)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1] = flip / scale, 1.0 / scale
    theta[:, 0, 2], theta[:, 1, 2] = 0.16 * (r[:, 2] - 0.5), 0.16 * (r[:, 3] - 0.5)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if colour:
        brightness = (0.8 + 0.4 * r[:, 4]).view(n, 1, 1, 1)
        contrast = (0.8 + 0.4 * r[:, 5]).view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean * brightness
    return x


def photo_augment(x: torch.Tensor, generator: torch.Generator, share: float) -> torch.Tensor:
    """Make ``share`` of the batch look like converted real photos; x is (B, 3, H, W) in [0, 1], background ~0.

    What the query path does to a phone shot, drawn at random per item: gamma from camera exposure (0.6-1.6),
    contrast squeezed or stretched around the garment's mean (0.5-1.3), a light garment flattened and lifted the way
    the isolated conversion lifts it (a blend toward 0.35 + its mean), slight blur from downscaling (σ up to 1 px
    at 28 px), and ragged mask edges (a random border ring of the garment dimmed)."""
    n = len(x)
    r = torch.rand(n, 6, generator=generator).to(x.device)
    chosen = (r[:, 0] < share).view(n, 1, 1, 1)
    garment = x.mean(dim=1, keepdim=True) > 0.03
    area = garment.float().mean(dim=(2, 3), keepdim=True).clamp_min(1e-3)
    mean = (x * garment).mean(dim=(2, 3), keepdim=True) / area
    gamma = torch.exp((r[:, 1] - 0.4) * 0.98).view(n, 1, 1, 1)  # log-uniform, 0.67..1.8 → exposure
    y = x.clamp_min(1e-4) ** gamma
    contrast = (0.5 + 0.8 * r[:, 2]).view(n, 1, 1, 1)
    y = (y - mean) * contrast + mean
    flatten = (r[:, 3] < 0.3).view(n, 1, 1, 1)  # a light garment after the lift: flat, mid-gray, texture kept
    y = torch.where(flatten, 0.35 + 0.4 * (y - mean) + 0.1 * mean, y)
    blur = F.avg_pool2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    y = torch.lerp(y, blur, (r[:, 4] * 0.8).view(n, 1, 1, 1))
    edge = garment & (F.max_pool2d((~garment).float(), 3, stride=1, padding=1) > 0)
    y = torch.where(edge & (r[:, 5] < 0.5).view(n, 1, 1, 1), y * 0.4, y)
    y = torch.where(garment, y.clamp(0, 1), x)
    return torch.where(chosen, y, x)


ERASE_SHARE = 0.25  # of the batch that gets a random rectangle erased (Zhong et al. 2020 use 0.5 on person re-id)


def strong_augment(x: torch.Tensor, generator: torch.Generator, colour: bool) -> torch.Tensor:
    """On top of ``augment``, for ``TrainConfig.strong_augment``: a random-resized crop (39-100 % of the area,
    aspect within ±18 %), saturation and contrast jitter (0.6-1.4 and 0.7-1.3, colour only) and random erasing
    (a quarter of the batch loses a rectangle of 2-15 % of its area to noise). x is normalised (B, 3, H, W).

    A phone photo frames a garment loosely or tightly, in every light, with a hand or a fold over part of it;
    the shop's studio photos do not. What the two styles keep in common (shape, fabric, print) is what the
    network should match on."""
    n, _, h, w = x.shape
    r = torch.rand(n, 10, generator=generator).to(x.device)
    zoom, aspect = 1.0 + 0.6 * r[:, 0], torch.exp((r[:, 1] - 0.5) * 0.33)
    sx, sy = (1.0 / (zoom * aspect.sqrt())).clamp(max=1.0), (aspect.sqrt() / zoom).clamp(max=1.0)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    theta[:, 0, 2], theta[:, 1, 2] = (1 - sx) * (2 * r[:, 2] - 1), (1 - sy) * (2 * r[:, 3] - 1)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), mode="bilinear",
                      padding_mode="border", align_corners=False)
    if colour:
        grey = x.mean(dim=1, keepdim=True)
        x = grey + (x - grey) * (0.6 + 0.8 * r[:, 4]).view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (0.7 + 0.6 * r[:, 5]).view(n, 1, 1, 1) + mean
    area = 0.02 + 0.13 * r[:, 6]
    ratio = torch.exp((r[:, 7] - 0.5) * 2.4)  # 0.3 .. 3.3
    eh = (area * ratio).sqrt().clamp(max=1.0) * h
    ew = (area / ratio).sqrt().clamp(max=1.0) * w
    top, left = r[:, 8] * (h - eh), r[:, 9] * (w - ew)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((ys >= top.view(n, 1, 1)) & (ys < (top + eh).view(n, 1, 1)) & (xs >= left.view(n, 1, 1))
              & (xs < (left + ew).view(n, 1, 1)))
    erased = inside & (torch.rand(n, generator=generator).to(x.device) < ERASE_SHARE).view(n, 1, 1)
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    return torch.where(erased.unsqueeze(1), noise, x)
