"""Lifted structured loss (Song, Xiang, Jegelka & Savarese 2016), PML's LiftedStructureLoss.

With d the distance (Euclidean on L2-normalised embeddings by default), for every positive pair (i, j)
(same label, i != j, both orders):

    J_ij = log( Σ_(i,k) exp(neg_margin - d_ik) + Σ_(j,l) exp(neg_margin - d_jl) ) + (d_ij - pos_margin)
    loss = mean over positive pairs of relu(J_ij)^2 / 2

where the sums run over the negative pairs anchored at i and at j (the paper's formula with PML's margins; the
halving is PML's, since every pair appears in both orders). A positive pair with no negative pair anchored at
either end has a log-term of 0 (PML's convention). No positive or no negative pair gives 0, and so does, as in
PML (its GenericPairLoss), a mined set of at most one positive and one negative pair (a single triplet, say).

The log-term only depends on the anchors, so it is one masked log-sum-exp per row: O(B^2) time and memory,
where PML builds a (positive pairs x negative pairs) matrix (about 50 M entries at B = 256). Mined `Pairs` enter
as a count matrix (duplicates count twice, as in PML); mined `Triplets` give their (a, p) and (a, n) pairs.
"""

from __future__ import annotations

import torch

from dml_core.distances import LpDistance
from dml_core.losses._checks import check_finite
from dml_core.losses._pairwise import self_pairwise
from dml_core.losses._reduce import masked_logsumexp
from dml_core.losses.base import MetricLoss, at_most_one_pair_each, zero_loss
from dml_core.tuples import Mined, label_masks, to_pairs

__all__ = ["LiftedStructureLoss"]


class LiftedStructureLoss(MetricLoss):
    takes_mined = True

    def __init__(
        self,
        *,
        neg_margin: float = 1.0,  # PML's default: negatives closer than 1 (of at most 2) still contribute
        pos_margin: float = 0.0,  # PML's default: positive pairs are pulled all the way together
    ) -> None:
        super().__init__()
        self.neg_margin = check_finite("lifted_structure", "neg_margin", neg_margin)
        self.pos_margin = check_finite("lifted_structure", "pos_margin", pos_margin)
        self.distance = LpDistance()

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, mined: Mined | None) -> torch.Tensor:
        if mined is None:
            pos, neg = label_masks(labels)
            if not pos.any() or not neg.any():
                return zero_loss(embeddings)
            mat = self_pairwise(self.distance, embeddings)  # (B, B)
            row_lse, has_neg = self._row_logsumexp(mat, neg, None)
            pair_loss = self._pair_losses(mat, row_lse, has_neg, *torch.where(pos))
            return pair_loss.mean()
        pairs = to_pairs(mined, labels)
        a1, p, a2, n = pairs
        if a1.numel() == 0 or a2.numel() == 0 or at_most_one_pair_each(pairs):
            return zero_loss(embeddings)
        mat = self_pairwise(self.distance, embeddings)  # (B, B)
        counts = torch.zeros_like(mat).index_put_((a2, n), torch.ones_like(a2, dtype=mat.dtype), accumulate=True)
        row_lse, has_neg = self._row_logsumexp(mat, counts > 0, counts)
        return self._pair_losses(mat, row_lse, has_neg, a1, p).mean()

    def _row_logsumexp(self, mat: torch.Tensor, neg: torch.Tensor,
                       counts: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) log Σ_k c_ik exp(neg_margin - d_ik) over each row's negative pairs, and whether it has any."""
        remaining = self.distance.margin(self.neg_margin, mat)  # (B, B)
        if counts is not None:  # a negative pair mined twice counts twice
            remaining = remaining + torch.log(counts.clamp_min(1))
        return masked_logsumexp(remaining, neg), neg.any(1)

    def _pair_losses(self, mat: torch.Tensor, row_lse: torch.Tensor, has_neg: torch.Tensor, i: torch.Tensor,
                     j: torch.Tensor) -> torch.Tensor:
        """(P,) relu(J_ij)^2 / 2 for the positive pairs (i, j)."""
        floor = torch.finfo(row_lse.dtype).min  # stays finite: no NaN in logaddexp's backward
        lse_i = torch.where(has_neg[i], row_lse[i], floor)
        lse_j = torch.where(has_neg[j], row_lse[j], floor)
        neg_term = torch.where(has_neg[i] | has_neg[j], torch.logaddexp(lse_i, lse_j), 0)
        joint = neg_term + self.distance.margin(mat[i, j], self.pos_margin)
        return torch.relu(joint) ** 2 / 2
