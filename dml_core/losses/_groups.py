"""Class structure of a batch: contiguous class ids and a padded member table, built with 1-D ops only."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["ClassGroups", "class_groups"]


class ClassGroups(NamedTuple):
    """`ids` (B,): class of each sample, 0..M-1 in sorted label order; `counts` (M,);
    `members` (M, K): each class's sample indices in increasing order, padded with -1 (K = largest class)."""

    ids: torch.Tensor
    counts: torch.Tensor
    members: torch.Tensor

    @property
    def num_classes(self) -> int:
        return int(self.counts.numel())

    def positives(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K) candidate positives of every anchor (its class's members) and the (B, K) mask of real ones
        (not padding, not the anchor itself)."""
        idx = self.members[self.ids]  # (B, K)
        anchors = torch.arange(self.ids.numel(), device=idx.device)[:, None]
        return idx, (idx >= 0) & (idx != anchors)


def class_groups(labels: torch.Tensor) -> ClassGroups:
    _, ids, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    order = torch.argsort(ids, stable=True)  # (B,) grouped by class, index order kept inside a class
    starts = counts.cumsum(0) - counts  # (M,) first position of each class in `order`
    rank = torch.arange(ids.numel(), device=ids.device) - starts[ids[order]]
    width = int(counts.max()) if counts.numel() else 0
    members = torch.full((counts.numel(), width), -1, dtype=torch.long, device=ids.device)
    members[ids[order], rank] = order
    return ClassGroups(ids, counts, members)
