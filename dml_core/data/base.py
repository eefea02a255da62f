"""What every dataset shares: the `DMLDataset` interface, the class-disjoint `DatasetSplit`, and its folds.

Labels inside a `DMLDataset` are always contiguous 0..num_classes-1, in the order of the dataset's class list,
so a subset of classes (a test split, a fold) is a dataset of its own that losses with class weights can size from
`num_classes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

__all__ = ["DMLDataset", "DatasetSplit", "relabel", "class_groups"]


def relabel(labels: torch.Tensor, classes: Sequence[str]) -> tuple[torch.Tensor, tuple[str, ...]]:
    """(N,) labels indexing `classes` -> (labels 0..C'-1, the C' classes that have items), order kept.

    A subset of items (a split, a fold) thereby gets contiguous labels of its own.
    """
    if labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"labels must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
        raise ValueError(f"labels must index the {len(classes)} classes, "
                         f"got range {int(labels.min())}..{int(labels.max())}")
    ids, contiguous = torch.unique(labels, sorted=True, return_inverse=True)
    return contiguous.to(torch.int64), tuple(classes[i] for i in ids.tolist())


def class_groups(num_classes: int, k: int) -> list[torch.Tensor]:
    """Labels 0..num_classes-1 cut into k contiguous groups of near-equal size (the reality check's partitions)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"folds need an integer k >= 2, got {k=!r}")
    if k > num_classes:
        raise ValueError(f"cannot cut {num_classes} training classes into {k=} class-disjoint folds")
    return list(torch.arange(num_classes).tensor_split(k))


class DMLDataset(Dataset[tuple[torch.Tensor, int]]):
    """A labelled image set: item i is `(image (C, H, W) float32, label int)`.

    `train` picks the transform: the training one (random augmentation) or the deterministic evaluation one.
    Subclasses that can serve whole batches (in memory, or from the decoded disk cache) are a
    `serving.BatchSource` (`host_batch`, `device_batch`) and offer `get_batch(indices, device=..., generator=...)`;
    the trainer reads any other data set through a DataLoader.
    """

    labels: torch.Tensor  # (N,) int64, contiguous 0..num_classes-1
    classes: tuple[str, ...]  # classes[label]: the class's name in the source data
    in_channels: int
    train: bool

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, indices: torch.Tensor, *, train: bool) -> DMLDataset:
        """The items at `indices` (int64 (M,)), labels remapped to 0..C'-1, with the given transform choice."""
        raise NotImplementedError

    def with_train(self, train: bool) -> DMLDataset:
        """The same items with the training (`True`) or evaluation (`False`) transform."""
        return self.select(torch.arange(len(self)), train=train)

    def select_classes(self, labels: Sequence[int] | torch.Tensor, *, train: bool) -> DMLDataset:
        """Every item whose label is in `labels`."""
        wanted = torch.as_tensor(labels, dtype=torch.int64)
        keep = torch.isin(self.labels, wanted).nonzero().flatten()
        return self.select(keep, train=train)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(items={len(self)}, num_classes={self.num_classes}, "
                f"in_channels={self.in_channels}, train={self.train})")


@dataclass(frozen=True)
class DatasetSplit:
    """Class-disjoint training and test sets of one dataset (the standard DML protocol)."""

    name: str
    train: DMLDataset  # with the training transform
    test: DMLDataset  # with the evaluation transform

    def folds(self, k: int) -> list[tuple[DMLDataset, DMLDataset]]:
        """k class-disjoint (train, val) splits of the training classes: fold i validates on class group i.

        The groups are contiguous runs of training labels (the reality check's protocol), so the folds are
        deterministic; `val` uses the evaluation transform.
        """
        groups = class_groups(self.train.num_classes, k)
        out = []
        for i, val_labels in enumerate(groups):
            train_labels = torch.cat([g for j, g in enumerate(groups) if j != i])
            out.append((self.train.select_classes(train_labels, train=True),
                        self.train.select_classes(val_labels, train=False)))
        return out
