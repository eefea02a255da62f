"""Multi-similarity pair mining (Wang et al., CVPR 2019, Sec. 4.1), PML's `MultiSimilarityMiner`.

With S the similarity (cosine by default) and ε = `epsilon`, for each anchor i:
    keep positive j  if  S_ij − ε < max_{k: y_k ≠ y_i} S_ik   (a positive less similar than the hardest negative + ε)
    keep negative k  if  S_ik + ε > min_{j: y_j = y_i, j ≠ i} S_ij   (a negative more similar than the hardest positive − ε)
For a distance the inequalities flip; in farness units (see `base.farness`) both read
    f_ij + ε > min_neg f_i·   and   f_ik − ε < max_pos f_i·.
"""

from __future__ import annotations

import torch

from dml_core.distances import CosineSimilarity, Distance
from dml_core.miners.base import Miner, farness, finite_float
from dml_core.tuples import Pairs, label_masks

__all__ = ["MultiSimilarityMiner"]


class MultiSimilarityMiner(Miner):
    """Pairs that violate the MS mining margin `epsilon` (similarity units for the default cosine similarity)."""

    kind = Pairs

    def __init__(self, *, epsilon: float = 0.1, distance: Distance | None = None) -> None:
        self.epsilon = finite_float("multi_similarity", "epsilon", epsilon)
        if self.epsilon < 0:
            # A negative epsilon would drop the very pairs the rule is meant to keep (the hardest ones).
            raise ValueError(f"multi_similarity miner: epsilon must be >= 0, got {epsilon=}")
        self.distance = CosineSimilarity() if distance is None else distance

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Pairs:
        f = farness(self.distance, self.distance.pairwise(embeddings))  # (B, B)
        pos, neg = label_masks(labels)
        closest_neg = f.masked_fill(~neg, torch.inf).amin(dim=1, keepdim=True)  # (B, 1), +inf: no negative
        farthest_pos = f.masked_fill(~pos, -torch.inf).amax(dim=1, keepdim=True)  # (B, 1), -inf: no positive
        a1, p = torch.where(pos & (f + self.epsilon > closest_neg))
        a2, n = torch.where(neg & (f - self.epsilon < farthest_pos))
        return Pairs(a1, p, a2, n)
