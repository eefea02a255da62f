"""Triplet-margin mining, PML's `TripletMarginMiner`: triplets selected by their margin violation.

For a triplet (a, p, n) with labels[a] = labels[p] ≠ labels[n], a ≠ p, let t = d(a, n) − d(a, p) (in farness units,
so for a similarity t = S(a, p) − S(a, n)). With m = `margin`, `type_of_triplets` keeps:
    all:       t ≤ m              (every triplet that violates the margin)
    hard:      t ≤ m and t ≤ 0    (the negative is at least as close as the positive)
    semihard:  0 < t ≤ m          (the negative is farther than the positive, but within the margin)
    easy:      t > m              (the complement of "all")

Each rule is an interval (lo, hi] of t. The margins are computed anchor block by anchor block as a (rows, P, B)
tensor, P the largest number of positives of an anchor (m − 1 in an m-per-class batch), with rows chosen so that a
block never exceeds max(B², 2^20) elements: time O(B²·P), memory O(B² + T) for T mined triplets, never a (B, B, B)
tensor. T itself can be O(B³): two classes of 512 at B = 1,024 with "all" give up to 1,024·511·512 ≈ 2.7e8
triplets (6.4 GB of indices). When the number of candidate triplets exceeds `max_triplets`, a counting pass runs
first, and a batch whose result would exceed the limit raises `TooManyTripletsError` before any index is
materialised; use more classes per batch, a "hard"/"semihard" type, or raise the limit.
"""

from __future__ import annotations

import enum

import torch

from dml_core.distances import Distance, LpDistance
from dml_core.miners.base import Miner, empty_triplets, farness, finite_float
from dml_core.tuples import Triplets, label_masks

__all__ = ["TripletMarginMiner", "TripletType", "TooManyTripletsError", "DEFAULT_MAX_TRIPLETS"]

# 2**25 triplets are 0.8 GB of int64 indices: the most a training step should be asked to hold for one batch.
DEFAULT_MAX_TRIPLETS = 2**25


class TripletType(str, enum.Enum):
    """Which margin violations `TripletMarginMiner` keeps; the string values are PML's `type_of_triplets`."""

    ALL = "all"
    HARD = "hard"
    SEMIHARD = "semihard"
    EASY = "easy"


class TooManyTripletsError(RuntimeError):
    """The mined triplets of one batch would exceed the miner's `max_triplets`."""


class TripletMarginMiner(Miner):
    """Triplets whose margin t = d(a, n) − d(a, p) falls in the interval `type_of_triplets` selects."""

    kind = Triplets

    # The default is the plain string so that `miner_hparams` hands search spaces, YAML and Parquet a plain value.
    def __init__(self, *, margin: float = 0.2, type_of_triplets: TripletType | str = "all",
                 distance: Distance | None = None, max_triplets: int = DEFAULT_MAX_TRIPLETS) -> None:
        self.margin = finite_float("triplet_margin", "margin", margin)
        try:
            self.type_of_triplets = TripletType(type_of_triplets)
        except ValueError:
            raise ValueError(f"triplet_margin miner: type_of_triplets must be one of "
                             f"{', '.join(t.value for t in TripletType)}, got {type_of_triplets=}") from None
        if isinstance(max_triplets, bool) or not isinstance(max_triplets, int) or max_triplets < 1:
            raise ValueError(f"triplet_margin miner: max_triplets must be a positive integer, got {max_triplets=}")
        self.max_triplets = max_triplets
        self.distance = LpDistance() if distance is None else distance

    def bounds(self) -> tuple[float, float]:
        """The interval (lo, hi] of the triplet margin t that this miner keeps."""
        m = self.margin
        return {
            TripletType.ALL: (-torch.inf, m),
            TripletType.HARD: (-torch.inf, min(m, 0.0)),
            TripletType.SEMIHARD: (0.0, m),
            TripletType.EASY: (m, torch.inf),
        }[self.type_of_triplets]

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        f = farness(self.distance, self.distance.pairwise(embeddings))  # (B, B)
        pos, neg = label_masks(labels)
        n_pos = pos.sum(dim=1)  # (B,)
        width = int(n_pos.max())
        if width == 0:
            return empty_triplets(embeddings.device)
        # Each anchor's positives packed to the left: (B, P). Unused slots and non-negatives become NaN, and every
        # comparison with NaN is False, so the interval test alone discards them.
        pos_idx = pos.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :width]  # (B, P)
        pos_ok = torch.arange(width, device=f.device) < n_pos[:, None]  # (B, P)
        ap = f.gather(1, pos_idx).masked_fill(~pos_ok, torch.nan)  # (B, P)
        an = f.masked_fill(~neg, torch.nan)  # (B, B)
        b = len(labels)
        starts = range(0, b, max(1, max(b * b, 2**20) // (width * b)))
        step = starts.step
        if int((n_pos * neg.sum(dim=1)).sum()) > self.max_triplets:  # cheap upper bound: every triplet
            total = sum(int(self._kept(an[s:s + step], ap[s:s + step]).sum()) for s in starts)
            if total > self.max_triplets:
                raise TooManyTripletsError(
                    f"triplet_margin miner ({self.type_of_triplets.value}) would return {total} triplets for a "
                    f"batch of {b}, over {self.max_triplets=}: use more classes per batch, type_of_triplets "
                    f"hard/semihard, or a larger max_triplets")
        blocks = [self._block(s, an[s:s + step], ap[s:s + step], pos_idx) for s in starts]
        return Triplets(*(torch.cat(parts) for parts in zip(*blocks)))

    def _kept(self, an: torch.Tensor, ap: torch.Tensor) -> torch.Tensor:
        """(rows, B) anchor-negative and (rows, P) anchor-positive farness -> (rows, P, B) mask of kept triplets."""
        lo, hi = self.bounds()
        t = an[:, None, :] - ap[:, :, None]  # (rows, P, B): the same subtraction PML thresholds
        return (t > lo) & (t <= hi)

    def _block(self, first: int, an: torch.Tensor, ap: torch.Tensor,
               pos_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The kept triplets of anchors first .. first + rows - 1, as (a, p, n)."""
        row, slot, n = torch.where(self._kept(an, ap))
        a = row + first
        p = pos_idx.flatten().index_select(0, a * pos_idx.shape[1] + slot)
        return a, p, n
