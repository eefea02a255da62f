"""Distances between embeddings, PML's convention: a distance knows whether larger means closer.

A loss never hard-codes "smaller is closer": it asks the distance for `margin(x, y)`, `smallest` or `largest`, so
one formula serves Euclidean distance and cosine similarity alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["Distance", "LpDistance", "CosineSimilarity", "DotProductSimilarity"]


class Distance:
    """Base class: normalise (optionally), compute the (N, M) matrix, raise it to `power`."""

    is_inverted: bool = False

    def __init__(self, *, normalize_embeddings: bool = True, p: int = 2, power: float = 1.0) -> None:
        if p <= 0:
            raise ValueError(f"Distance p must be positive, got {p=}")
        if power <= 0:
            raise ValueError(f"Distance power must be positive, got {power=}")
        self.normalize_embeddings = normalize_embeddings
        self.p = p
        self.power = power

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=self.p, dim=-1) if self.normalize_embeddings else x

    def pairwise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """(N, D), (M, D) -> (N, M); `y=None` means `y = x`."""
        if x.ndim != 2 or (y is not None and y.ndim != 2):
            raise ValueError(f"embeddings must be 2-D (batch, dim), got shapes {tuple(x.shape)}"
                             f"{'' if y is None else ', ' + str(tuple(y.shape))}")
        xn = self.normalize(x)
        yn = xn if y is None else self.normalize(y)
        mat = self._matrix(xn, yn)
        return mat if self.power == 1 else mat**self.power

    def _matrix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def margin(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Positive when `x` is farther apart than `y` (PML's `BaseDistance.margin`)."""
        return y - x if self.is_inverted else x - y

    def smallest(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Values of the closest entries along `dim` (max for a similarity)."""
        return t.amax(dim) if self.is_inverted else t.amin(dim)

    def largest(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Values of the farthest entries along `dim` (min for a similarity)."""
        return t.amin(dim) if self.is_inverted else t.amax(dim)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(normalize_embeddings={self.normalize_embeddings}, "
                f"p={self.p}, power={self.power})")


class LpDistance(Distance):
    """Minkowski distance; defaults (L2 on L2-normalised embeddings) are PML's."""

    is_inverted = False

    def _matrix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            # cdist has no half kernels on every backend; the float32 detour keeps autocast working.
            return torch.cdist(x.float(), y.float(), p=self.p).to(x.dtype)
        # cdist's backward is safe at zero distance (the diagonal), unlike sqrt of a Gram expansion.
        return torch.cdist(x, y, p=self.p)


class DotProductSimilarity(Distance):
    """Inner product; of L2-normalised embeddings by default, as PML's (its BaseDistance normalises)."""

    is_inverted = True

    def __init__(self, *, normalize_embeddings: bool = True, power: float = 1.0) -> None:
        super().__init__(normalize_embeddings=normalize_embeddings, p=2, power=power)

    def _matrix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x @ y.T


class CosineSimilarity(DotProductSimilarity):
    """Inner product of L2-normalised embeddings."""

    def __init__(self, *, power: float = 1.0) -> None:
        super().__init__(normalize_embeddings=True, power=power)
