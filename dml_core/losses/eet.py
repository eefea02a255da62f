"""EET: equidistant and equidistributed triplet loss (after Xu, Zhang, Cheng & Chu, WWW 2020).

The paper shows its constraints as figures; this is the formulation implemented here (re-derived from secondary
write-ups of the paper, choices marked). d is the Euclidean distance between L2-normalised
embeddings; T the batch's triplets (a, p, n) (labels[a] == labels[p] != labels[n], a != p: all of them, or the
mined ones), N = |T|; the batch holds M classes C_1..C_M.

    margin constraint        L_MC = 1/N Σ_T relu(d(a,p) - d(a,n) + margin)
    equidistant constraint   L_EC = 1/N Σ_T |d(a,n) - d(p,n)|
        the two same-class samples are equally far from the negative, which pulls them together without a
        fixed absolute target.
    equidistributed constraint, two parts, over the batch's classes (independent of mining):
        D(C_i, C_j) = min over x in C_i, z in C_j of d(x, z)          (minimum inter-class distance)
        L_D = 1/(M(M-1)) Σ_(i != j) exp(-D(C_i, C_j))                 (minimising it increases every D)
        r(x) = min over z with labels[z] != labels[x] of d(x, z)      (nearest other-class sample of x)
        for each class c: a_c = argmin_(x in C_c) r(x), so r(a_c) = min_j D(C_c, C_j), and n_c its nearest
        other-class sample; choice: "make the minima equal" is read as
        L_E = 1/M Σ_c |r(a_c) - r(n_c)|
        (the write-up's |d(a,n) - d(n,n')| with (a, n) = (a_c, n_c), the closest pair leaving class c, and n' the
        nearest other-class sample to n, averaged over the M classes): class c's minimum distance and that of
        its nearest neighbour class are pulled together.
    total  L = L_MC + equidistant_weight L_EC + equidistributed_weight (L_D + L_E)

L_MC and L_EC are 0 when there is no triplet, L_D and L_E when M < 2 (a batch of one class gives exactly 0). The
all-triplet sums run in anchor chunks with a (B, B) gradient (no (B, B, B) tensor). Mined `Pairs` become the
triplets formed by a positive and a negative pair that share their anchor. A single mined triplet counts, as in
the triplet loss (EET has no PML counterpart; PML's pair losses would give 0 for it).
"""

from __future__ import annotations

import torch

from dml_core.distances import LpDistance
from dml_core.losses._all_triplets import AutogradTerm, Denominator, all_triplet_mean
from dml_core.losses._checks import check_at_least
from dml_core.losses._groups import ClassGroups, class_groups
from dml_core.losses._pairwise import self_pairwise, signed_distance
from dml_core.losses.base import MetricLoss
from dml_core.tuples import Mined, to_triplets

__all__ = ["EETLoss"]


class EETLoss(MetricLoss):
    takes_mined = True

    def __init__(
        self,
        *,
        margin: float = 0.05,  # the triplet loss's PML default, so that eet and triplet share units and scale
        equidistant_weight: float = 1.0,  # the constraints enter unweighted unless a study tunes them
        equidistributed_weight: float = 1.0,  # same reason
    ) -> None:
        super().__init__()
        self.margin = check_at_least("eet", "margin", margin, 0.0)
        self.equidistant_weight = check_at_least("eet", "equidistant_weight", equidistant_weight, 0.0)
        self.equidistributed_weight = check_at_least("eet", "equidistributed_weight", equidistributed_weight, 0.0)
        self.distance = LpDistance()

    def _triplet_term(self, ap: torch.Tensor, an: torch.Tensor, pn: torch.Tensor | None) -> torch.Tensor:
        """relu(d_ap - d_an + margin) + equidistant_weight |d_an - d_pn| per triplet (signed distances)."""
        if pn is None:  # unreachable: the term declares uses_pn, so the chunk engine always passes pn
            raise RuntimeError("eet's triplet term needs the positive-negative distances")
        return torch.relu(ap - an + self.margin) + self.equidistant_weight * (an - pn).abs()

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, mined: Mined | None) -> torch.Tensor:
        signed = signed_distance(self.distance, self_pairwise(self.distance, embeddings))  # (B, B)
        groups = class_groups(labels)
        if mined is None:
            term = AutogradTerm(self._triplet_term, uses_pn=True)
            triplet_part = all_triplet_mean(signed, labels, term, Denominator.ALL)
        else:
            a, p, n = to_triplets(mined, labels)
            values = self._triplet_term(signed[a, p], signed[a, n], signed[p, n])
            triplet_part = values.sum() / max(1, a.numel())
        return triplet_part + self.equidistributed_weight * _equidistributed(signed, groups)


def _equidistributed(dist: torch.Tensor, groups: ClassGroups) -> torch.Tensor:
    """L_D + L_E of the module docstring; a graph-connected 0 when the batch has fewer than two classes."""
    m = groups.num_classes
    if m < 2:
        return dist.sum() * 0.0
    ids = groups.ids
    other = ids[:, None] != ids[None, :]  # (B, B)
    inf = torch.tensor(torch.inf, dtype=dist.dtype, device=dist.device)
    # (B, M): distance from each sample to the closest member of each class; then (M, M) over the rows' classes
    to_class = inf.expand(dist.shape[0], m).scatter_reduce(1, ids.expand_as(dist), dist, "amin")
    between = inf.expand(m, m).scatter_reduce(0, ids[:, None].expand_as(to_class), to_class, "amin")
    off_diagonal = ~torch.eye(m, dtype=torch.bool, device=dist.device)
    spread = torch.exp(-between[off_diagonal]).mean()
    nearest, nearest_idx = dist.masked_fill(~other, torch.inf).min(1)  # (B,) r(x) and its argmin
    members = groups.members  # (M, K)
    per_member = nearest[members.clamp_min(0)].masked_fill(members < 0, torch.inf)  # (M, K)
    closest = members.gather(1, per_member.argmin(1, keepdim=True))[:, 0]  # (M,) a_c
    equalise = (nearest[closest] - nearest[nearest_idx[closest]]).abs().mean()
    return spread + equalise
