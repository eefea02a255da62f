"""Augmentation of whole batches of uint8 images of different sizes, on the device they are on.

The train transform of the disk pipeline (`transforms.train_transform`: random resized crop, horizontal flip,
normalise) applied to a batch at once: the random draws for the whole batch come from one `torch.Generator` in a
fixed number per image (so a draw never depends on an image's size and a seeded epoch replays exactly), the crop
and resize run where the pixels are (the GPU, for a GPU trial), and nothing runs per pixel on the CPU.

The crop follows torchvision's `RandomResizedCrop.get_params`: up to `ATTEMPTS` tries of an area fraction uniform
in `scale` and a log-uniform aspect ratio in `ratio`; the first crop that fits is placed uniformly; when none fits,
the centre crop of the ratio-clamped image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["ATTEMPTS", "random_resized_boxes", "centre_boxes", "flip_draws", "crop_resize", "normaliser"]

ATTEMPTS = 10  # torchvision's number of tries before the centre-crop fallback


def random_resized_boxes(shapes: torch.Tensor, generator: torch.Generator, *, scale: tuple[float, float],
                         ratio: tuple[float, float]) -> torch.Tensor:
    """(B, 2) int64 image (H, W) -> (B, 4) int64 crop boxes (top, left, height, width), drawn from `generator`."""
    if not 0 < scale[0] <= scale[1]:
        raise ValueError(f"scale must be 0 < low <= high, got {scale=}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must be 0 < low <= high, got {ratio=}")
    batch = shapes.shape[0]
    # Every draw for the batch at once, a fixed count per image, float64 as torchvision's Python floats.
    area_u, ratio_u, place_u = (torch.rand(batch, n, generator=generator, dtype=torch.float64)
                                for n in (ATTEMPTS, ATTEMPTS, 2))
    height, width = shapes[:, 0:1].double(), shapes[:, 1:2].double()  # (B, 1)
    target = height * width * (scale[0] + (scale[1] - scale[0]) * area_u)  # (B, A)
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * ratio_u)  # (B, A)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # (B, A)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # the first attempt that fits (0 when none does)
    h_pick, w_pick = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]  # (B,)
    any_fit = fits.any(dim=1)
    fallback = _ratio_clamped_centre(shapes, ratio)  # (B, 4)
    top = torch.floor(place_u[:, 0] * (height[:, 0] - h_pick + 1))
    left = torch.floor(place_u[:, 1] * (width[:, 0] - w_pick + 1))
    drawn = torch.stack([top, left, h_pick, w_pick], dim=1).long()
    return torch.where(any_fit[:, None], drawn, fallback)


def _ratio_clamped_centre(shapes: torch.Tensor, ratio: tuple[float, float]) -> torch.Tensor:
    """torchvision's fallback: the whole image, cut to the nearest aspect ratio in `ratio`, centred."""
    boxes = []
    for height, width in shapes.tolist():
        in_ratio = width / height
        if in_ratio < ratio[0]:
            w, h = width, int(round(width / ratio[0]))
        elif in_ratio > ratio[1]:
            h, w = height, int(round(height * ratio[1]))
        else:
            h, w = height, width
        boxes.append([(height - h) // 2, (width - w) // 2, h, w])
    return torch.tensor(boxes, dtype=torch.int64).reshape(-1, 4)


def centre_boxes(shapes: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 2) image (H, W) -> (B, 4) boxes of the centred size x size crop, placed as torchvision's CenterCrop."""
    if bool((shapes < size).any()):
        raise ValueError(f"images must be at least {size} px on each side for a {size} px centre crop, "
                         f"got min (H, W) {tuple(shapes.min(dim=0).values.tolist())}")
    top = torch.round((shapes[:, 0] - size).double() / 2.0).long()
    left = torch.round((shapes[:, 1] - size).double() / 2.0).long()
    side = torch.full_like(top, size)
    return torch.stack([top, left, side, side], dim=1)


def flip_draws(batch: int, generator: torch.Generator) -> torch.Tensor:
    """(B,) bool: which images to flip horizontally, each with probability 1/2."""
    return torch.rand(batch, generator=generator, dtype=torch.float64) < 0.5


def crop_resize(images: Sequence[torch.Tensor], boxes: torch.Tensor, size: int, *,
                in_uint8: bool | None = None) -> torch.Tensor:
    """Images (3, H_b, W_b) uint8 (one device) and (B, 4) boxes -> (B, 3, size, size) float32 in [0, 255]: each
    crop resized with antialiased bilinear interpolation, as torchvision's `resized_crop`.

    `in_uint8` resizes the uint8 pixels and rounds (torchvision's own uint8 path, its vectorised CPU kernel: 3x
    faster there than in float); else the crop is converted to float first (CUDA has no uint8 kernel). Default:
    uint8 on the CPU, float elsewhere. The two differ by at most one grey level.
    """
    if not images:
        raise ValueError("crop_resize needs at least one image")
    device = images[0].device
    in_uint8 = device.type == "cpu" if in_uint8 is None else in_uint8
    out = torch.empty(len(images), 3, size, size, dtype=torch.float32, device=device)
    for b, (image, (top, left, h, w)) in enumerate(zip(images, boxes.tolist())):
        crop = image[:, top:top + h, left:left + w]  # (3, h, w) uint8 view
        if h == size and w == size:
            out[b] = crop
            continue
        source = crop[None] if in_uint8 else crop[None].float()
        out[b] = F.interpolate(source, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return out


def normaliser(mean: Sequence[float], std: Sequence[float],
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (1, C, 1, 1) on `device`: x in [0, 255] -> (x / 255 - mean) / std as x * scale + shift."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=device).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=device).view(1, -1, 1, 1)
    return scale, shift
