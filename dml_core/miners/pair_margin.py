"""Pair-margin mining, PML's `PairMarginMiner`: the pairs a contrastive loss with these margins would penalise.

For a distance d (Euclidean on L2-normalised embeddings by default):
    keep positive (i, j)  if  d_ij > pos_margin
    keep negative (i, k)  if  d_ik < neg_margin
For a similarity both inequalities flip (the margins are then similarity values).
"""

from __future__ import annotations

import torch

from dml_core.distances import Distance, LpDistance
from dml_core.miners.base import Miner, farness, finite_float
from dml_core.tuples import Pairs, label_masks

__all__ = ["PairMarginMiner"]


class PairMarginMiner(Miner):
    """Positive pairs farther than `pos_margin` and negative pairs closer than `neg_margin`."""

    kind = Pairs

    def __init__(self, *, pos_margin: float = 0.2, neg_margin: float = 0.8,
                 distance: Distance | None = None) -> None:
        # Any finite margins are meaningful (a negative pos_margin keeps every positive pair), so only finiteness
        # is checked; PML does not order the two margins either.
        self.pos_margin = finite_float("pair_margin", "pos_margin", pos_margin)
        self.neg_margin = finite_float("pair_margin", "neg_margin", neg_margin)
        self.distance = LpDistance() if distance is None else distance

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Pairs:
        f = farness(self.distance, self.distance.pairwise(embeddings))  # (B, B)
        pos, neg = label_masks(labels)
        a1, p = torch.where(pos & (f > farness(self.distance, self.pos_margin)))
        a2, n = torch.where(neg & (f < farness(self.distance, self.neg_margin)))
        return Pairs(a1, p, a2, n)
