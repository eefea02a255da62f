"""Distance-weighted sampling (Wu, Manmatha, Smola, Krähenbühl, ICCV 2017, Sec. 4), PML's `DistanceWeightedMiner`.

On the unit hypersphere in R^n (n = embedding dimension) the distance d between two uniformly random points has
density
    q(d) ∝ d^(n−2) · (1 − d²/4)^((n−3)/2),
so sampling negatives uniformly yields almost only d ≈ √2. The miner samples each negative k of anchor a with
probability
    P(k | a) ∝ 1 / q(max(d_ak, cutoff))   if y_k ≠ y_a and d_ak < nonzero_loss_cutoff, else 0,
clipping at `cutoff` to bound the variance (near-duplicates would otherwise dominate) and ignoring negatives that a
margin loss would not penalise anyway. Like PML, every anchor a whose class has c_a ≥ 2 members in the batch and
that has some negative of non-zero weight gets c_a triplets (a, p, n): p uniform among its c_a − 1 positives, n drawn
from P(· | a), both with replacement. Distances are Euclidean on L2-normalised embeddings (the formula needs them).

Memory is O(B²): one weight matrix and a (B, max c_a) draw, never one row per triplet.
"""

from __future__ import annotations

import torch

from dml_core.distances import LpDistance
from dml_core.miners.base import Miner, empty_triplets, finite_float
from dml_core.tuples import Triplets

__all__ = ["DistanceWeightedMiner"]


class DistanceWeightedMiner(Miner):
    """Triplets whose negatives are drawn with weight 1/q(d); randomness comes only from `generator`."""

    kind = Triplets

    def __init__(self, *, cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4,
                 generator: torch.Generator | None = None) -> None:
        self.cutoff = finite_float("distance_weighted", "cutoff", cutoff)
        self.nonzero_loss_cutoff = finite_float("distance_weighted", "nonzero_loss_cutoff", nonzero_loss_cutoff)
        if not 0 < self.cutoff < 2:
            # Distances between unit vectors lie in [0, 2]; q vanishes at 0 and at 2, so 1/q needs d in (0, 2).
            raise ValueError(f"distance_weighted miner: cutoff must be in (0, 2), got {cutoff=}")
        if self.nonzero_loss_cutoff <= self.cutoff:
            # Every weight would be zero: nothing could ever be sampled.
            raise ValueError(f"distance_weighted miner: nonzero_loss_cutoff must exceed cutoff, got "
                             f"{nonzero_loss_cutoff=}, {cutoff=}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"distance_weighted miner: generator must be a torch.Generator, got {generator=}")
        self.generator = generator
        self.distance = LpDistance()

    def probabilities(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, D), (B,) -> (B, B) P(k | a): each row sums to 1, or is all 0 when anchor a has nothing to sample."""
        dim = embeddings.shape[1]
        d = self.distance.pairwise(embeddings).clamp_min(self.cutoff)  # (B, B)
        log_q = (dim - 2) * d.log() + ((dim - 3) / 2) * torch.log1p(-0.25 * d * d)  # log q(d) + const
        log_w = -log_q
        # Non-finite log weights (d ≥ 2 from rounding) get weight 0, as in PML.
        valid = (labels[:, None] != labels[None, :]) & (d < self.nonzero_loss_cutoff) & log_w.isfinite()
        log_w = log_w.masked_fill(~valid, -torch.inf)
        has_any = valid.any(dim=1, keepdim=True)  # (B, 1)
        # Normalising per row (not by PML's global maximum) keeps small weights from underflowing in float32.
        probs = torch.softmax(log_w.masked_fill(~has_any, 0.0), dim=1)
        return probs * has_any

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        device = embeddings.device
        probs = self.probabilities(embeddings, labels)  # (B, B)
        same = labels[:, None] == labels[None, :]  # (B, B)
        class_size = same.sum(dim=1)  # (B,)
        (anchors,) = torch.where((class_size >= 2) & (probs.sum(dim=1) > 0))
        if anchors.numel() == 0:
            return empty_triplets(device)
        per_anchor = class_size[anchors]  # (A,) triplets per anchor, PML's count
        draws = int(per_anchor.max())
        negatives, picks = self._draw(probs[anchors], per_anchor - 1, draws)  # (A, K), (A, K)
        pos = same[anchors]
        pos[torch.arange(anchors.numel(), device=device), anchors] = False
        pos_idx = pos.to(torch.uint8).argsort(dim=1, descending=True, stable=True)  # (A, B) positives first
        positives = pos_idx.gather(1, picks)  # (A, K)
        used = torch.arange(draws, device=device) < per_anchor[:, None]  # (A, K)
        a = anchors[:, None].expand(-1, draws)
        return Triplets(a[used], positives[used], negatives[used])

    def _draw(self, probs: torch.Tensor, n_pos: torch.Tensor, draws: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`draws` negatives per row from `probs` (A, B), and as many uniform picks among each row's n_pos
        positives (as column ranks), both drawn on the generator's device and returned on the probs' device."""
        device = probs.device
        where = device if self.generator is None else self.generator.device
        negatives = torch.multinomial(probs.to(where), draws, replacement=True, generator=self.generator)
        u = torch.rand((probs.shape[0], draws), generator=self.generator, device=where, dtype=torch.float64)
        picks = (u * n_pos.to(where, torch.float64)[:, None]).long()  # (A, K) uniform in 0..n_pos-1
        picks = torch.minimum(picks, (n_pos.to(where) - 1)[:, None])  # u * n rounds up to n only for u ≈ 1
        return negatives.to(device), picks.to(device)
