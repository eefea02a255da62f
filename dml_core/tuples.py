"""Index tuples that miners hand to losses (PML's meaning, as typed NamedTuples)."""

from __future__ import annotations

from typing import NamedTuple, Union

import torch

__all__ = ["Pairs", "Triplets", "Mined", "all_pairs", "all_triplets", "to_pairs", "to_triplets", "label_masks"]


class Pairs(NamedTuple):
    """Positive pairs (a1[i], p[i]) and negative pairs (a2[j], n[j]); int64 index tensors into the batch."""

    a1: torch.Tensor
    p: torch.Tensor
    a2: torch.Tensor
    n: torch.Tensor


class Triplets(NamedTuple):
    """Triplets (a[i], p[i], n[i]): labels[a] == labels[p] != labels[n], a != p."""

    a: torch.Tensor
    p: torch.Tensor
    n: torch.Tensor


Mined = Union[Pairs, Triplets]


def label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) labels -> (positive mask without the diagonal, negative mask), both (B, B) bool."""
    same = labels[:, None] == labels[None, :]
    pos = same.clone()
    pos.fill_diagonal_(False)
    return pos, ~same


def all_pairs(labels: torch.Tensor) -> Pairs:
    pos, neg = label_masks(labels)
    a1, p = torch.where(pos)
    a2, n = torch.where(neg)
    return Pairs(a1, p, a2, n)


def all_triplets(labels: torch.Tensor) -> Triplets:
    """Every (a, p, n) in row-major order of (a, p, n); O(B^3) indices, for references and small batches."""
    pos, neg = label_masks(labels)
    a, p, n = torch.where(pos[:, :, None] & neg[:, None, :])
    return Triplets(a, p, n)


def to_pairs(mined: Mined | None, labels: torch.Tensor) -> Pairs:
    """PML's convert_to_pairs: triplets give their (a, p) and (a, n) pairs; None gives all pairs."""
    if mined is None:
        return all_pairs(labels)
    if isinstance(mined, Triplets):
        return Pairs(mined.a, mined.p, mined.a, mined.n)
    if isinstance(mined, Pairs):
        return mined
    raise TypeError(f"mined must be Pairs, Triplets or None, got {type(mined).__name__}")


def to_triplets(mined: Mined | None, labels: torch.Tensor) -> Triplets:
    """PML's convert_to_triplets: pairs sharing an anchor combine into triplets; None gives all triplets."""
    if mined is None:
        return all_triplets(labels)
    if isinstance(mined, Triplets):
        return mined
    if isinstance(mined, Pairs):
        a1, p, a2, n = mined
        if a1.numel() == 0 or a2.numel() == 0:
            empty = a1.new_empty(0)
            return Triplets(empty, empty, empty)
        match = a1[:, None] == a2[None, :]  # (P, N): positive pair i and negative pair j share their anchor
        i, j = torch.where(match)
        return Triplets(a1[i], p[i], n[j])
    raise TypeError(f"mined must be Pairs, Triplets or None, got {type(mined).__name__}")
