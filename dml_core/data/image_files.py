"""Datasets of image files on disk, and the checks that give one-line errors for bad layouts.

`files_split` serves them through the decoded cache (`decoded_cache`, `decoded_dataset`: decoded once, augmented
on the device) or, with `decoded_cache=False`, as `ImageFileDataset`s that decode each JPEG when indexed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image

from dml_core.data.base import DatasetSplit, DMLDataset, relabel
from dml_core.data.cache import cache_dir
from dml_core.data.decoded_cache import decoded_images
from dml_core.data.decoded_dataset import DecodedImageDataset
from dml_core.data.image_io import read_image
from dml_core.data.transforms import ImageOptions, eval_transform, train_transform

__all__ = ["ImageFileDataset", "require_root", "require_file", "files_split"]

Transform = Callable[[Image.Image], torch.Tensor]


def require_root(dataset: str, root: str | Path | None, layout: str) -> Path:
    """`root` as a Path; a one-line error naming it and the expected layout when it is missing."""
    if root is None:
        raise ValueError(f"dataset {dataset!r} needs root=<directory> ({layout})")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"dataset {dataset!r}: root directory {path} not found (expected {layout})")
    return path


def require_file(dataset: str, path: Path, layout: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"dataset {dataset!r}: {path} not found (expected {layout})")
    return path


class ImageFileDataset(DMLDataset):
    """Images read from `paths` when indexed, with the train or eval transform. No `get_batch`: the trainer then
    reads it through a DataLoader, whose workers decode in parallel."""

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, classes: Sequence[str], *,
                 train_transform: Transform, eval_transform: Transform, train: bool) -> None:
        if labels.shape != (len(paths),):
            raise ValueError(f"labels must be ({len(paths)},), got {tuple(labels.shape)}")
        self.paths = tuple(paths)
        self.labels, self.classes = relabel(labels, classes)
        self.in_channels = 3
        self.train = train
        self.train_transform = train_transform
        self.eval_transform = eval_transform

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        transform = self.train_transform if self.train else self.eval_transform
        return transform(read_image(self.paths[index])), int(self.labels[index])

    def select(self, indices: torch.Tensor, *, train: bool) -> ImageFileDataset:
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return ImageFileDataset([self.paths[i] for i in indices.tolist()], self.labels[indices], self.classes,
                                train_transform=self.train_transform, eval_transform=self.eval_transform,
                                train=train)


def files_split(dataset: str, paths: Sequence[Path], labels: Sequence[int], classes: Sequence[str],
                is_train: Sequence[bool], options: ImageOptions) -> DatasetSplit:
    """Train and test ImageFileDatasets from parallel lists; `labels` index `classes`.

    Every listed file must exist: a missing one is reported now, with the number missing, rather than by a
    DataLoader worker hours into training. With `options.decoded_cache` every image is decoded now (once per
    node and set of files; later loads map the cache), so an unreadable image is reported now too.
    """
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"dataset {dataset!r}: {len(missing)} listed image file(s) not found, "
                                f"first {missing[0]}")
    all_labels = torch.as_tensor(list(labels), dtype=torch.int64)
    train_mask = torch.as_tensor(list(is_train), dtype=torch.bool)
    if not train_mask.any() or train_mask.all():
        raise ValueError(f"dataset {dataset!r}: needs images in both the train and test classes, got "
                         f"{int(train_mask.sum())} train and {int((~train_mask).sum())} test images")
    if options.decoded_cache:
        images = decoded_images(dataset, paths, options.eval_resize, cache_dir(options.cache_dir))

        def decoded(mask: torch.Tensor, train: bool) -> DMLDataset:
            keep = mask.nonzero().flatten()
            return DecodedImageDataset(images, keep, all_labels[keep], classes, image_size=options.image_size,
                                       min_crop_scale=options.min_crop_scale, train=train)

        return DatasetSplit(dataset, decoded(train_mask, True), decoded(~train_mask, False))
    names = [str(p) for p in paths]
    transforms = {"train_transform": train_transform(options), "eval_transform": eval_transform(options)}

    def part(mask: torch.Tensor, train: bool) -> DMLDataset:
        keep = mask.nonzero().flatten().tolist()
        return ImageFileDataset([names[i] for i in keep], all_labels[keep], classes, train=train, **transforms)

    return DatasetSplit(dataset, part(train_mask, True), part(~train_mask, False))
