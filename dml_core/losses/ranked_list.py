"""Ranked list loss (Wang, Hua, Kodirov, Hu, Garnier & Robertson, CVPR 2019), PML's RankedListLoss.

With d the distance (Euclidean on L2-normalised embeddings, self-distances 0), for every sample i, the
non-trivial positives P*_i = {j: y_j = y_i, j != i, d_ij > alpha - margin} and non-trivial negatives
N*_i = {k: y_k != y_i, d_ik < alpha}, and weights w_ij = exp(Tp (d_ij - (alpha - margin))), w_ik =
exp(Tn (alpha - d_ik)):

    L_P(i) = Σ_(P*_i) w_ij (d_ij - (alpha - margin)) / (Σ_(P*_i) w_ij + B eps)
    L_N(i) = Σ_(N*_i) w_ik (alpha - d_ik)          / (Σ_(N*_i) w_ik + B eps)
    loss   = mean_i ( (1 - imbalance) L_P(i) + imbalance L_N(i) )

eps = 1e-5 is PML's guard, added once per column of the batch (hence B eps), and entries at distance exactly 0
are left out, both as in PML; the weights stay in the graph (PML does not detach them). Each row's weights are
scaled by exp(-max exponent) before summing (the ratio is unchanged, B eps scaled alike), so large Tn or Tp never
overflow. alpha=None means 1 + margin / 2 (PML's convention). This loss ranks the whole batch: it takes no mined
tuples (PML refuses them too).
"""

from __future__ import annotations

import torch

from dml_core.distances import LpDistance
from dml_core.losses._checks import check_at_least, check_positive, check_unit_interval
from dml_core.losses._pairwise import self_pairwise
from dml_core.losses.base import MetricLoss
from dml_core.tuples import Mined, label_masks

__all__ = ["RankedListLoss"]

_EPS = 1e-5  # PML's guard in each row's weight normaliser (per column of the batch)


class RankedListLoss(MetricLoss):
    def __init__(
        self,
        *,
        margin: float = 0.2,  # required in PML; 0.2 is the official RLL config for CUB (0.4 for SOP)
        Tn: float = 10.0,  # required in PML; 10 is the official configs' negative temperature
        imbalance: float = 0.5,  # PML's default: positives and negatives weigh the same
        alpha: float | None = None,  # PML's default: None = 1 + margin / 2, the negative boundary
        Tp: float = 0.0,  # PML's and the official default: unweighted (mean) positive term
    ) -> None:
        super().__init__()
        self.margin = check_at_least("ranked_list", "margin", margin, 0.0)
        self.Tn = check_at_least("ranked_list", "Tn", Tn, 0.0)
        self.imbalance = check_unit_interval("ranked_list", "imbalance", imbalance)
        self.alpha = 1 + self.margin / 2 if alpha is None else check_positive("ranked_list", "alpha", alpha)
        self.Tp = check_at_least("ranked_list", "Tp", Tp, 0.0)
        self.distance = LpDistance()

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, mined: Mined | None) -> torch.Tensor:
        if mined is not None:
            raise ValueError("ranked_list ranks the whole batch and takes no mined tuples; use miner 'none'")
        mat = self_pairwise(self.distance, embeddings)  # (B, B); the diagonal is never selected below
        pos, neg = label_masks(labels)
        pos_boundary = self.alpha - self.margin
        # PML selects through `P_star > 0` / `N_star > 0`, so entries at distance exactly 0 never count.
        pos_sel = pos & (mat > max(pos_boundary, 0.0))
        neg_sel = neg & (mat < self.alpha) & (mat > 0)
        loss_p = _weighted_mean(mat - pos_boundary, self.Tp, pos_sel)
        loss_n = _weighted_mean(self.alpha - mat, self.Tn, neg_sel)
        return ((1 - self.imbalance) * loss_p + self.imbalance * loss_n).mean()


def _weighted_mean(values: torch.Tensor, temperature: float, selected: torch.Tensor) -> torch.Tensor:
    """(B,) Σ_sel w v / (Σ_sel w + B eps) per row with w = exp(temperature v), computed with the exponents
    shifted by their row max (so nothing overflows); temperature 0 (unweighted) skips the exponentials."""
    guard = values.shape[1] * _EPS
    if temperature == 0:
        return torch.where(selected, values, 0).sum(1) / (selected.sum(1).to(values.dtype) + guard)
    exponents = (temperature * values).masked_fill(~selected, -torch.inf)  # (B, B)
    shift = exponents.detach().amax(1, keepdim=True).clamp_min(0)  # (B, 1); >= 0 so exp(-shift) <= 1
    weights = torch.exp(exponents - shift)  # 0 where not selected
    return (weights * values).sum(1) / (weights.sum(1) + guard * torch.exp(-shift[:, 0]))
