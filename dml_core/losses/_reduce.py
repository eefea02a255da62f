"""Reductions shared by the pair and triplet losses: PML's AvgNonZeroReducer, and a masked log-sum-exp.

Both stay finite and connected to the graph when there is nothing to reduce, so `backward()` works on degenerate
batches and gives 0, never NaN. (PML's MeanReducer is a plain `.mean()` over non-empty losses.)
"""

from __future__ import annotations

import torch

__all__ = ["avg_nonzero", "masked_logsumexp"]


def avg_nonzero(losses: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the strictly positive entries (PML's AvgNonZeroReducer), optionally only where `mask`; 0 when
    there are none.

    Entries <= 0 get no gradient, as PML's boolean filter gives them none; so `losses` may be the violations
    before the relu, which saves the relu.
    """
    positive = losses > 0 if mask is None else mask & (losses > 0)
    total = torch.where(positive, losses, 0).sum()
    return total / positive.sum().clamp_min(1)


def masked_logsumexp(x: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """log Σ exp(x) over the entries where `mask`; rows with no entry give the dtype's most negative number.

    The finite sentinel (instead of -inf) keeps the backward pass free of `exp(-inf - -inf)` = NaN; callers turn
    empty rows into 0 (PML does the same with `finfo.min`).
    """
    floor = torch.finfo(x.dtype).min
    return torch.logsumexp(x.masked_fill(~mask, floor), dim=dim)

