"""Batch-hard triplet mining (Hermans, Beyer, Leibe 2017), PML's `BatchHardMiner`.

For each anchor a with at least one positive and one negative, one triplet:
    p = argmax_{j: y_j = y_a, j ≠ a} d(a, j)   (the farthest positive)
    n = argmin_{k: y_k ≠ y_a} d(a, k)          (the closest negative)
with "far" and "close" in the distance's sense (Euclidean on L2-normalised embeddings by default).
"""

from __future__ import annotations

import torch

from dml_core.distances import Distance, LpDistance
from dml_core.miners.base import Miner, farness
from dml_core.tuples import Triplets, label_masks

__all__ = ["BatchHardMiner"]


class BatchHardMiner(Miner):
    """The hardest positive and the hardest negative of every anchor: at most B triplets."""

    kind = Triplets

    def __init__(self, *, distance: Distance | None = None) -> None:
        self.distance = LpDistance() if distance is None else distance

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        f = farness(self.distance, self.distance.pairwise(embeddings))  # (B, B)
        pos, neg = label_masks(labels)
        p = f.masked_fill(~pos, -torch.inf).argmax(dim=1)  # (B,)
        n = f.masked_fill(~neg, torch.inf).argmin(dim=1)  # (B,)
        (a,) = torch.where(pos.any(dim=1) & neg.any(dim=1))
        return Triplets(a, p[a], n[a])
