"""Triplet margin loss (Hoffer & Ailon 2015; Schroff et al., FaceNet 2015), PML's TripletMarginLoss.

For triplets (a, p, n) with labels[a] == labels[p] != labels[n], a != p, and d the distance (Euclidean on
L2-normalised embeddings by default):

    v(a, p, n) = d(a, p) - d(a, n) + margin            (`distance.margin`, so similarities flip the sign)
    loss       = mean of relu(v) over the triplets with v > 0      (PML's AvgNonZeroReducer; 0 if none)

`smooth_loss` replaces relu by softplus; `swap` (Balntas et al. 2016) uses the positive-negative distance instead
of the anchor-negative one when it is smaller. Without mined tuples every triplet of the batch counts (PML's
`triplets_per_anchor="all"`, its default; random sub-sampling belongs to miners here), and they are summed in
anchor chunks with a (B, B) gradient, never a (B, B, B) tensor. Mined `Triplets` are used as given; mined `Pairs`
become the triplets formed by a positive and a negative pair sharing their anchor (PML's convert_to_triplets). A
single mined triplet counts, as in PML's TripletMarginLoss (it returns 0 only for an empty set; the rule of PML's
pair losses, 0 for at most one pair of each kind, is not its).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dml_core.distances import LpDistance
from dml_core.losses._all_triplets import AutogradTerm, Denominator, HingeTerm, TripletTerm, all_triplet_mean
from dml_core.losses._checks import check_at_least, check_bool
from dml_core.losses._pairwise import self_pairwise, signed_distance
from dml_core.losses._reduce import avg_nonzero
from dml_core.losses.base import MetricLoss
from dml_core.tuples import Mined, to_triplets

__all__ = ["TripletMarginLoss"]


class TripletMarginLoss(MetricLoss):
    takes_mined = True

    def __init__(
        self,
        *,
        margin: float = 0.05,  # PML's default; in distance units (L2 on the unit sphere, so at most 2)
        swap: bool = False,  # PML's default: the plain anchor-negative distance
        smooth_loss: bool = False,  # PML's default: the hinge, not its softplus relaxation
    ) -> None:
        super().__init__()
        self.margin = check_at_least("triplet", "margin", margin, 0.0)
        self.swap = check_bool("triplet", "swap", swap)
        self.smooth_loss = check_bool("triplet", "smooth_loss", smooth_loss)
        self.distance = LpDistance()

    def _term(self, ap: torch.Tensor, an: torch.Tensor, pn: torch.Tensor | None) -> torch.Tensor:
        """Per-triplet loss from signed distances (larger = farther)."""
        negative = an if pn is None else torch.minimum(an, pn)
        violation = ap - negative + self.margin
        return F.softplus(violation) if self.smooth_loss else torch.relu(violation)

    def _chunk_term(self) -> TripletTerm:
        if self.swap or self.smooth_loss:
            return AutogradTerm(self._term, uses_pn=self.swap)
        return HingeTerm(self.margin)

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, mined: Mined | None) -> torch.Tensor:
        signed = signed_distance(self.distance, self_pairwise(self.distance, embeddings))  # (B, B)
        if mined is None:
            return all_triplet_mean(signed, labels, self._chunk_term(), Denominator.NONZERO)
        a, p, n = to_triplets(mined, labels)
        pn = signed[p, n] if self.swap else None
        return avg_nonzero(self._term(signed[a, p], signed[a, n], pn))
