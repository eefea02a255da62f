"""Multi-similarity loss (Wang, Han, Huang, Dong & Scott, CVPR 2019), PML's MultiSimilarityLoss.

With s the cosine similarity, for every sample i with positives P_i (same label, j != i) and negatives N_i:

    L_i  = 1/alpha log(1 + Σ_(j in P_i) exp(-alpha (s_ij - base)))
         + 1/beta  log(1 + Σ_(k in N_i) exp( beta (s_ik - base)))
    loss = mean over all B samples of L_i          (PML's MeanReducer; a sample with no pairs adds 0)

`distance.margin` orders the subtractions, so a distance instead of a similarity flips them. Without mined
tuples all pairs count; mined pairs select the entries of P_i and N_i (set semantics: a pair mined twice counts
once, as PML's pair masks do), so the MS miner followed by this loss is the paper's full method. As in PML (its
GenericPairLoss), a mined set holding at most one positive and at most one negative pair gives 0.
"""

from __future__ import annotations

import torch

from dml_core.distances import CosineSimilarity
from dml_core.losses._checks import check_finite, check_positive
from dml_core.losses._pairwise import self_pairwise
from dml_core.losses.base import MetricLoss, at_most_one_pair_each, zero_loss
from dml_core.tuples import Mined, Pairs, label_masks, to_pairs

__all__ = ["MultiSimilarityLoss"]


class MultiSimilarityLoss(MetricLoss):
    takes_mined = True

    def __init__(
        self,
        *,
        alpha: float = 2.0,  # PML's and the paper's default: soft weighting of the positives
        beta: float = 50.0,  # PML's default (the paper's code uses 40): sharp weighting of hard negatives
        base: float = 0.5,  # PML's default (the paper's lambda): the similarity both terms are measured from
    ) -> None:
        super().__init__()
        self.alpha = check_positive("multi_similarity", "alpha", alpha)
        self.beta = check_positive("multi_similarity", "beta", beta)
        self.base = check_finite("multi_similarity", "base", base)
        self.distance = CosineSimilarity()

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, mined: Mined | None) -> torch.Tensor:
        if mined is None:
            pos, neg = label_masks(labels)
        else:
            pairs = to_pairs(mined, labels)
            if at_most_one_pair_each(pairs):
                return zero_loss(embeddings)
            pos, neg = _pair_masks(pairs, embeddings.shape[0])
        mat = self_pairwise(self.distance, embeddings)  # (B, B)
        # One exponent per entry: a pair is positive or negative, never both.
        exponents = torch.where(pos, self.alpha * self.distance.margin(mat, self.base),
                                self.beta * self.distance.margin(self.base, mat))  # (B, B)
        pos_term, neg_term = _log1p_sum_exp_pair(exponents, pos, neg)  # (B,) each
        return (pos_term / self.alpha + neg_term / self.beta).mean()


def _log1p_sum_exp_pair(x: torch.Tensor, first: torch.Tensor,
                        second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) log(1 + Σ exp(x)) over each row's `first` entries and over its `second` entries (disjoint masks).

    One exponential of the whole matrix serves both sums (the backward pass reuses it), each row part shifted by
    its own max c >= 0 (log(1 + Σ e^x) = c + log(e^-c + Σ e^(x - c))), so nothing overflows; rows with no entry
    give 0 with zero gradient.
    """
    with torch.no_grad():
        shift_first = x.masked_fill(~first, -torch.inf).amax(1).clamp_min(0)  # (B,)
        shift_second = x.masked_fill(~second, -torch.inf).amax(1).clamp_min(0)
        shift = torch.where(first, shift_first[:, None], shift_second[:, None])  # (B, B)
    scaled = torch.exp((x - shift).masked_fill(~(first | second), -torch.inf))  # (B, B); 0 off both masks
    first_sum = torch.where(first, scaled, 0).sum(1)
    second_sum = torch.where(second, scaled, 0).sum(1)
    return (torch.log(torch.exp(-shift_first) + first_sum) + shift_first,
            torch.log(torch.exp(-shift_second) + second_sum) + shift_second)


def _pair_masks(pairs: Pairs, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, B) boolean masks of the mined positive and negative pairs."""
    a1, p, a2, n = pairs
    pos = torch.zeros(size, size, dtype=torch.bool, device=a1.device)
    neg = torch.zeros_like(pos)
    pos[a1, p] = True
    neg[a2, n] = True
    return pos, neg
