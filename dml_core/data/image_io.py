"""Reading one image file: decoded to RGB with a one-line error naming the file, and resized the way both disk
pipelines (the JPEG path and the decoded cache) see it."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

__all__ = ["read_image", "decode_resized"]


def read_image(path: str) -> Image.Image:
    """The image at `path` as RGB; a one-line ValueError naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image file {path}: {exc}") from exc


def decode_resized(path: str, resize: int) -> np.ndarray:
    """(3, H, W) uint8: the image with its shorter side resized to `resize`.

    The same operations as the evaluation transform's first two steps (PIL -> uint8 tensor, antialiased resize of
    the tensor), so an image read from the decoded cache equals one decoded from its JPEG, pixel for pixel.
    """
    tensor = TF.pil_to_tensor(read_image(path))  # (3, H0, W0) uint8
    resized: torch.Tensor = TF.resize(tensor, [resize], antialias=True)  # (3, H, W), min(H, W) == resize
    return resized.contiguous().numpy()
