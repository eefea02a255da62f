"""Contrastive loss (Hadsell, Chopra & LeCun 2006), PML's ContrastiveLoss.

With d the distance (Euclidean on L2-normalised embeddings by default) over positive pairs (same label, i != j)
and negative pairs (different labels), both ordered:

    loss = AvgNonZero_pos( relu(d_ij - pos_margin) ) + AvgNonZero_neg( relu(neg_margin - d_ij) )

AvgNonZero is the mean over the pairs with a positive loss (PML's AvgNonZeroReducer, one per sub-loss; 0 if
none). `distance.margin` orders the subtractions, so a similarity flips them. Without mined tuples all pairs
count; mined `Pairs` are used as given (duplicates count twice), mined `Triplets` give their (a, p) and (a, n)
pairs (PML's convert_to_pairs). As in PML (its GenericPairLoss), a mined set holding at most one positive and at
most one negative pair (a single triplet, say) gives 0.
"""

from __future__ import annotations

import torch

from dml_core.distances import LpDistance
from dml_core.losses._checks import check_finite
from dml_core.losses._pairwise import self_pairwise
from dml_core.losses._reduce import avg_nonzero
from dml_core.losses.base import MetricLoss, at_most_one_pair_each, zero_loss
from dml_core.tuples import Mined, label_masks, to_pairs

__all__ = ["ContrastiveLoss"]


class ContrastiveLoss(MetricLoss):
    takes_mined = True

    def __init__(
        self,
        *,
        pos_margin: float = 0.0,  # PML's default: positive pairs are pulled all the way together
        neg_margin: float = 1.0,  # PML's default: negatives pushed past 1 (unit-sphere distances reach 2)
    ) -> None:
        super().__init__()
        self.pos_margin = check_finite("contrastive", "pos_margin", pos_margin)
        self.neg_margin = check_finite("contrastive", "neg_margin", neg_margin)
        self.distance = LpDistance()

    def _pos_violations(self, dist: torch.Tensor) -> torch.Tensor:
        return self.distance.margin(dist, self.pos_margin)  # the loss is its relu; avg_nonzero drops the rest

    def _neg_violations(self, dist: torch.Tensor) -> torch.Tensor:
        return self.distance.margin(self.neg_margin, dist)

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, mined: Mined | None) -> torch.Tensor:
        if mined is None:
            mat = self_pairwise(self.distance, embeddings)  # (B, B)
            pos, neg = label_masks(labels)
            return avg_nonzero(self._pos_violations(mat), pos) + avg_nonzero(self._neg_violations(mat), neg)
        pairs = to_pairs(mined, labels)
        if at_most_one_pair_each(pairs):
            return zero_loss(embeddings)
        a1, p, a2, n = pairs
        mat = self_pairwise(self.distance, embeddings)  # (B, B)
        return avg_nonzero(self._pos_violations(mat[a1, p])) + avg_nonzero(self._neg_violations(mat[a2, n]))
