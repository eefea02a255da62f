"""A data set read from disk through its decoded cache: uint8 images gathered from the memory-mapped file on the
host, then cropped, flipped and normalised as whole batches on the trial's device (`batch_augment`).

Training batches take a random resized crop of the cached image (shorter side `resize`) and a flip, drawn from the
generator the trainer seeds per epoch; evaluation takes the centre crop, the same pixels as the JPEG path's
evaluation transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dml_core.data.base import DMLDataset, relabel
from dml_core.data.batch_augment import centre_boxes, crop_resize, flip_draws, normaliser, random_resized_boxes
from dml_core.data.decoded_cache import DecodedImages, HostImages
from dml_core.data.transforms import CROP_RATIO, IMAGENET_MEAN, IMAGENET_STD

__all__ = ["DecodedImageDataset", "HostBatch"]


@dataclass(frozen=True)
class HostBatch:
    """The host half of a batch: its images in one (pinned) buffer and its labels."""

    images: HostImages
    labels: torch.Tensor  # (B,) int64


class DecodedImageDataset(DMLDataset):
    """Items `items` (indices into `images`) with `labels` indexing `classes`; a `serving.BatchSource`."""

    def __init__(self, images: DecodedImages, items: torch.Tensor, labels: torch.Tensor, classes: Sequence[str],
                 *, image_size: int, min_crop_scale: float, train: bool) -> None:
        items = torch.as_tensor(items, dtype=torch.int64)
        if labels.shape != items.shape or items.ndim != 1:
            raise ValueError(f"items and labels must both be (N,), got {tuple(items.shape)} and "
                             f"{tuple(labels.shape)}")
        if items.numel() and (int(items.min()) < 0 or int(items.max()) >= len(images)):
            raise ValueError(f"items must index the cache's {len(images)} images")
        self.images = images
        self.items = items
        self.labels, self.classes = relabel(labels, classes)
        self.in_channels = 3
        self.train = train
        self.image_size = image_size
        self.min_crop_scale = min_crop_scale
        # (scale, shift) per device, made once: building them is a copy to the device, which waits for it.
        self._normalisers: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def paths(self) -> tuple[str, ...]:
        """The image file of each item."""
        return tuple(self.images.paths[i] for i in self.items.tolist())

    def host_batch(self, indices: torch.Tensor, *, pin: bool = False) -> HostBatch:
        """(B,) int64 indices -> their images copied from the cache into one host buffer, and their labels."""
        indices = torch.as_tensor(indices, dtype=torch.int64).cpu()
        return HostBatch(self.images.gather(self.items[indices], pin=pin), self.labels[indices])

    def device_batch(self, host: HostBatch, device: torch.device,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, 3, S, S) float32 normalised, labels (B,)) on `device`: the training crops and flips drawn
        from `generator` (torch's default generator when None), or the evaluation centre crops."""
        device = torch.device(device)
        pixels = host.images.pixels.to(device, non_blocking=True)  # (P,) uint8
        shapes = host.images.shapes
        images = [host.images.image(b, pixels) for b in range(shapes.shape[0])]
        if self.train:
            draws = generator if generator is not None else torch.default_generator
            boxes = random_resized_boxes(shapes, draws, scale=(self.min_crop_scale, 1.0), ratio=CROP_RATIO)
            flips = flip_draws(shapes.shape[0], draws)
        else:
            boxes = centre_boxes(shapes, self.image_size)
            flips = torch.zeros(shapes.shape[0], dtype=torch.bool)
        batch = crop_resize(images, boxes, self.image_size)  # (B, 3, S, S) float32 in [0, 255]
        if bool(flips.any()):
            flip = flips.to(device)
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        if device not in self._normalisers:
            self._normalisers[device] = normaliser(IMAGENET_MEAN, IMAGENET_STD, device)
        scale, shift = self._normalisers[device]
        return torch.addcmul(shift, batch, scale), host.labels.to(device, non_blocking=True)

    def get_batch(self, indices: torch.Tensor, *, device: torch.device | str = "cpu",
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        device = torch.device(device)
        return self.device_batch(self.host_batch(indices, pin=device.type == "cuda"), device, generator)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, labels = self.get_batch(torch.tensor([index]))
        return images[0], int(labels[0])

    def select(self, indices: torch.Tensor, *, train: bool) -> DecodedImageDataset:
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return DecodedImageDataset(self.images, self.items[indices], self.labels[indices], self.classes,
                                   image_size=self.image_size, min_crop_scale=self.min_crop_scale, train=train)
