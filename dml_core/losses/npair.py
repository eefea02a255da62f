"""Multi-class N-pair loss (Sohn, NeurIPS 2016), PML's NPairsLoss.

One (anchor, positive) pair per class: for every label with at least two samples, the anchor is its first
sample and the positive its second (in batch order; PML's choice through `np.unique(..., return_index=True)`).
With f_i the anchors and f_i+ the positives of the N selected classes, and s the dot product of L2-normalised
embeddings (PML's default `DotProductSimilarity()` normalises: BaseDistance's normalize_embeddings=True):

    loss = 1/N Σ_i -log( exp(s(f_i, f_i+)) / Σ_j exp(s(f_i, f_j+)) )      (softmax cross-entropy; 0 if N = 0)

The paper's L2 penalty on the embeddings is not part of PML's NPairsLoss and not here: this loss has no
hyperparameters. Mined `Pairs` or `Triplets` supply the candidate positive pairs instead of all of them (the
first mined pair of each anchor label is kept, as in PML). A single pair gives 0 by the formula (a softmax over one
logit), as in PML.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dml_core.distances import DotProductSimilarity
from dml_core.losses.base import MetricLoss, zero_loss
from dml_core.tuples import Mined, to_pairs

__all__ = ["NPairsLoss"]


class NPairsLoss(MetricLoss):
    takes_mined = True

    def __init__(self) -> None:
        super().__init__()
        self.distance = DotProductSimilarity(normalize_embeddings=True)  # PML's default distance

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, mined: Mined | None) -> torch.Tensor:
        anchors, positives = _first_pairs(labels) if mined is None else _first_mined_pairs(mined, labels)
        if anchors.numel() == 0:
            return zero_loss(embeddings)
        sim = self.distance.pairwise(embeddings[anchors], embeddings[positives])  # (N, N)
        logits = sim if self.distance.is_inverted else -sim
        return F.cross_entropy(logits, torch.arange(anchors.numel(), device=logits.device))


def _first_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first two samples of every class that has two."""
    sorted_labels, order = torch.sort(labels, stable=True)  # (B,) classes grouped, batch order inside a class
    starts = _group_starts(sorted_labels)
    # A class has a second sample when the position after its first one holds the same label.
    starts = starts[starts + 1 < labels.numel()]
    starts = starts[sorted_labels[starts + 1] == sorted_labels[starts]]
    return order[starts], order[starts + 1]


def _first_mined_pairs(mined: Mined, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first mined positive pair of every anchor label, in mining order."""
    a1, p, _, _ = to_pairs(mined, labels)
    sorted_labels, order = torch.sort(labels[a1], stable=True)
    first = order[_group_starts(sorted_labels)]  # index into a1 of each label's first occurrence
    return a1[first], p[first]


def _group_starts(sorted_labels: torch.Tensor) -> torch.Tensor:
    """Positions where a new label begins in a sorted label vector."""
    new = torch.ones_like(sorted_labels, dtype=torch.bool)
    new[1:] = sorted_labels[1:] != sorted_labels[:-1]
    return new.nonzero()[:, 0]
