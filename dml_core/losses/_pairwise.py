"""`distance.pairwise(x)` for a batch against itself, with a faster Euclidean kernel, and signed distances.

`torch.cdist` computes Euclidean distances through a Gram matrix, but its backward is a generic per-pair kernel
that costs more than the rest of a pair loss at B = 256, and the normalisation before it adds several autograd
nodes that dominate at B = 32. For `LpDistance(p=2)` (the default distance of most losses) this module computes
the same matrix (normalising first when the distance asks) in one autograd node differentiated with two matrix
products. Every other distance, and autocast regions, use `distance.pairwise` unchanged.
"""

from __future__ import annotations

import torch

from dml_core.distances import Distance, LpDistance

__all__ = ["self_pairwise", "signed_distance"]

_NORM_EPS = 1e-12  # F.normalize's floor on the norm


def self_pairwise(distance: Distance, x: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B) `distance` between all rows of `x`; the diagonal is exactly 0 for Euclidean distances."""
    fast = (type(distance) is LpDistance and distance.p == 2 and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled(x.device.type))
    if not fast:
        return distance.pairwise(x)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (batch, dim), got shape {tuple(x.shape)}")
    mat = _SelfEuclidean.apply(x, distance.normalize_embeddings)
    return mat if distance.power == 1 else mat**distance.power


def signed_distance(distance: Distance, mat: torch.Tensor) -> torch.Tensor:
    """The matrix oriented so that larger means farther: `distance.margin(mat, 0)` without the extra node."""
    return -mat if distance.is_inverted else mat


class _SelfEuclidean(torch.autograd.Function):
    """u = x / max(|x|, eps) (or u = x), d_ij = sqrt(|u_i|^2 + |u_j|^2 - 2 u_i.u_j);
    d d_ij / d u_i = (u_i - u_j) / d_ij, taken as 0 where d_ij = 0 (the diagonal, duplicates), as `cdist` does."""

    @staticmethod
    def forward(ctx, x, normalize):  # type: ignore[no-untyped-def, override]
        norm = x.norm(dim=1, keepdim=True) if normalize else None  # (B, 1)
        u = x / norm.clamp_min(_NORM_EPS) if norm is not None else x
        sq = (u * u).sum(1)  # (B,)
        dist = torch.addmm(sq[:, None] + sq[None, :], u, u.T, alpha=-2).clamp_min_(0).sqrt_()  # (B, B)
        dist.fill_diagonal_(0)  # exact self-distances; the Gram expansion leaves rounding noise there
        ctx.save_for_backward(u, dist, norm)
        ctx.normalize = normalize
        return dist

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        u, dist, norm = ctx.saved_tensors
        weight = torch.where(dist > 0, grad / dist, 0)  # (B, B)
        sym = weight + weight.T
        # Σ_j w_ij (u_i - u_j) + Σ_j w_ji (u_i - u_j) = u_i Σ_j sym_ij - (sym @ u)_i
        grad_u = u * sym.sum(1, keepdim=True) - sym @ u  # (B, D)
        if not ctx.normalize:
            return grad_u, None
        # Through u = x / |x|: remove the radial component and divide by |x| (below eps, u = x / eps is linear).
        radial = u * (u * grad_u).sum(1, keepdim=True)
        grad_x = torch.where(norm > _NORM_EPS, (grad_u - radial) / norm.clamp_min(_NORM_EPS), grad_u / _NORM_EPS)
        return grad_x, None
