"""M-per-class batch sampling: every batch holds batch_size / m classes with m samples each.

Pair- and triplet-based losses only learn from a batch that has positives, so batches are built class by class,
as in PML's `MPerClassSampler` and the reality check's protocol (batch 32, m = 4). Per batch: batch_size / m distinct
classes drawn uniformly without replacement; from each, m samples drawn without replacement, or with replacement
when the class has fewer than m samples (PML's `safe_random_choice`). All randomness comes from the
`torch.Generator` passed in, drawn lazily batch by batch, so restoring `generator.get_state()` replays the batches
from that point on, also in the middle of an epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

__all__ = ["MPerClassSampler"]


class MPerClassSampler:
    """An iterable of `list[int]` batches of dataset indices, for a DataLoader's `batch_sampler`.

    `len()` is `batches_per_epoch`, by default `len(labels) // batch_size` (at least 1): an epoch then shows about
    as many samples as the dataset holds, though not each one exactly once.
    """

    def __init__(self, labels: torch.Tensor | Sequence[int], m: int, batch_size: int, generator: torch.Generator,
                 *, batches_per_epoch: int | None = None) -> None:
        labels_t = torch.as_tensor(labels)
        if labels_t.ndim != 1 or labels_t.numel() == 0:
            raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {tuple(labels_t.shape)}")
        if labels_t.is_floating_point() or labels_t.is_complex() or labels_t.dtype == torch.bool:
            raise ValueError(f"labels must be integers, got dtype {labels_t.dtype}")
        _check_positive_int("m", m)
        _check_positive_int("batch_size", batch_size)
        if batch_size % m != 0:
            raise ValueError(f"batch_size must be a multiple of m, got {batch_size=}, {m=}")
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {generator=}")
        self.m = m
        self.batch_size = batch_size
        self.classes_per_batch = batch_size // m
        self.generator = generator
        self.members = _class_members(labels_t.cpu())
        if len(self.members) < self.classes_per_batch:
            raise ValueError(f"a batch needs batch_size / m = {self.classes_per_batch} classes but the labels "
                             f"have {len(self.members)} ({batch_size=}, {m=})")
        if batches_per_epoch is None:
            batches_per_epoch = max(1, labels_t.numel() // batch_size)
        _check_positive_int("batches_per_epoch", batches_per_epoch)
        self.batches_per_epoch = batches_per_epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.batches_per_epoch):
            yield self.batch()

    def batch(self) -> list[int]:
        """One batch: classes_per_batch blocks of m indices of one class each."""
        classes = torch.randperm(len(self.members), generator=self.generator)[: self.classes_per_batch]
        return torch.cat([self._draw(self.members[c]) for c in classes.tolist()]).tolist()

    def _draw(self, members: torch.Tensor) -> torch.Tensor:
        """m indices of one class: distinct when the class has at least m, otherwise with replacement."""
        n = members.numel()
        if n >= self.m:
            return members[torch.randperm(n, generator=self.generator)[: self.m]]
        return members[torch.randint(n, (self.m,), generator=self.generator)]


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")


def _class_members(labels: torch.Tensor) -> list[torch.Tensor]:
    """Dataset indices of each class, in ascending label order: the sampler draws class *positions* in this list."""
    order = torch.argsort(labels, stable=True)
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    return list(torch.split(order, counts.tolist()))
