"""Standard train and eval transforms for photographs (CUB, Cars, SOP, image folders), torchvision.transforms.v2.

Both start from the image with its shorter side resized to `eval_resize` (256 for 224 crops), as the reality
check's pipeline does: evaluation centre-crops it, training takes a random resized crop of it and flips. The decoded
cache (`decoded_cache.py`) stores exactly that resized image, so the two ways of reading a data set from disk, the
JPEG decoded per item here and the cache augmented batch-wise on the device (`batch_augment.py`), draw crops from
the same distribution and give the same evaluation pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2

__all__ = ["CROP_RATIO", "IMAGENET_MEAN", "IMAGENET_STD", "ImageOptions", "train_transform", "eval_transform"]

# The statistics every ImageNet-pretrained torchvision trunk was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageOptions:
    """Options of the datasets read from disk (`cub200`, `cars196`, `sop`, `imagefolder`)."""

    image_size: int = 224  # the input size ImageNet-pretrained trunks were trained at
    resize_size: int | None = None  # eval: shorter side before the centre crop; None: image_size * 256 / 224
    min_crop_scale: float = 0.16  # train: smallest crop area fraction (the reality check's RandomResizedCrop)
    # Decode and resize every image once into a memory-mapped file that all trials of a node share, then augment
    # whole batches on the trial's device; False: decode each JPEG on every epoch in DataLoader workers (the node's
    # CPUs then set the pace of every trial on it).
    decoded_cache: bool = True
    cache_dir: str | None = None  # of the decoded cache; None: $DML_STUDY_CACHE, else ~/.cache/dml-study

    def __post_init__(self) -> None:
        for name in ("image_size", "resize_size"):
            value = getattr(self, name)
            if value is None and name == "resize_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 8 <= value <= 4096:
                raise ValueError(f"{name} must be an integer in [8, 4096], got {name}={value!r}")
        if self.resize_size is not None and self.resize_size < self.image_size:
            raise ValueError(f"resize_size must be at least image_size ({self.image_size}), got "
                             f"resize_size={self.resize_size}")
        if not (isinstance(self.min_crop_scale, (int, float)) and 0 < self.min_crop_scale <= 1):
            raise ValueError(f"min_crop_scale must be in (0, 1], got min_crop_scale={self.min_crop_scale!r}")
        if not isinstance(self.decoded_cache, bool):
            raise ValueError(f"decoded_cache must be true or false, got decoded_cache={self.decoded_cache!r}")
        if self.cache_dir is not None and not isinstance(self.cache_dir, str):
            raise ValueError(f"cache_dir must be a path or None, got cache_dir={self.cache_dir!r}")

    @property
    def eval_resize(self) -> int:
        return self.resize_size if self.resize_size is not None else round(self.image_size * 256 / 224)


CROP_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect ratio range (torchvision's default, the reality check's)


def _to_normalised_tensor() -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transform(options: ImageOptions) -> v2.Compose:
    """PIL image -> (3, S, S) float32: resize the shorter side, random resized crop (area >= min_crop_scale),
    horizontal flip, normalise."""
    # Cropping and flipping the uint8 image before the float conversion moves 4x fewer bytes.
    return v2.Compose([v2.ToImage(), v2.Resize(options.eval_resize, antialias=True),
                       v2.RandomResizedCrop(options.image_size, scale=(options.min_crop_scale, 1.0),
                                            ratio=CROP_RATIO, antialias=True),
                       v2.RandomHorizontalFlip(), *_to_normalised_tensor()])


def eval_transform(options: ImageOptions) -> v2.Compose:
    """PIL image -> (3, S, S) float32: resize the shorter side, centre crop, normalise."""
    return v2.Compose([v2.ToImage(), v2.Resize(options.eval_resize, antialias=True),
                       v2.CenterCrop(options.image_size), *_to_normalised_tensor()])
