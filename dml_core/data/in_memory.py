"""A dataset held as one uint8 tensor, with a vectorised `get_batch` instead of per-item decoding.

On 2 CPU cores a DataLoader's per-item `__getitem__` + collate costs more than a small CNN's forward pass; indexing
one (N, C, H, W) uint8 tensor and converting the batch to float at once costs almost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dml_core.data.base import DMLDataset, relabel
from dml_core.data.batch_augment import normaliser

__all__ = ["InMemoryDataset"]


class InMemoryDataset(DMLDataset):
    """Images (N, C, H, W) uint8, served as float32 `(x / 255 - mean) / std` per channel.

    The augmentation of in-memory data is rendered into the images when they are generated, so the training and
    evaluation transforms coincide; `train` is kept only so the dataset honours the common interface.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], *,
                 mean: Sequence[float], std: Sequence[float], train: bool = True) -> None:
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be ({images.shape[0]},), got {tuple(labels.shape)}")
        if len(mean) != images.shape[1] or len(std) != images.shape[1] or min(std) <= 0:
            raise ValueError(f"mean and std need one value per channel ({images.shape[1]}), std > 0; "
                             f"got {mean=}, {std=}")
        self.images = images
        self.labels, self.classes = relabel(labels, classes)
        self._device_labels = self.labels.to(images.device)
        self.in_channels = int(images.shape[1])
        self.train = train
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # Folded into one multiply-add per pixel: x * scale + shift.
        self._scale, self._shift = normaliser(self.mean, self.std, images.device)

    def host_batch(self, indices: torch.Tensor, *, pin: bool = False) -> torch.Tensor:
        """Nothing to do on the host: the images are already one tensor, so the batch is its indices."""
        return torch.as_tensor(indices, dtype=torch.int64)

    def device_batch(self, host: torch.Tensor, device: torch.device | None = None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) int64 indices -> (images (B, C, H, W) float32, labels (B,) int64) on `device` (default: the images'
        device). `generator` is unused: in-memory images carry their augmentation already."""
        indices = host.to(self.images.device)
        images = self.images[indices].float()  # (B, C, H, W)
        images = torch.addcmul(self._shift, images, self._scale)
        labels = self._device_labels[indices]
        if device is not None:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        return images, labels

    def get_batch(self, indices: torch.Tensor, *, device: torch.device | str | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) int64 indices -> (images (B, C, H, W) float32, labels (B,) int64), on the images' device or
        `device`."""
        return self.device_batch(self.host_batch(indices), None if device is None else torch.device(device))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, labels = self.get_batch(torch.tensor([index]))
        return images[0], int(labels[0])

    def select(self, indices: torch.Tensor, *, train: bool) -> InMemoryDataset:
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return InMemoryDataset(self.images[indices.to(self.images.device)], self.labels[indices], self.classes,
                               mean=self.mean, std=self.std, train=train)

    def to(self, device: torch.device | str) -> InMemoryDataset:
        """The same dataset with its images on `device` (a GPU run then batches without host transfers)."""
        return InMemoryDataset(self.images.to(device), self.labels, self.classes, mean=self.mean, std=self.std,
                               train=self.train)
