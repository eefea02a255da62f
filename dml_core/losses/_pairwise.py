"""`distance.pairwise(x)` for a batch against itself, with a faster Euclidean kernel, and signed distances.

For `LpDistance(p=2)` (the default distance of most losses) the matrix comes from `distances.self_euclidean`: the
same distances (normalising first when the distance asks) in one autograd node differentiated with two matrix
products, where torch.cdist's per-pair backward and F.normalize's autograd nodes cost more than the rest of a pair
loss. Like every Euclidean matrix of `dml_core.distances`, equal embeddings are exactly 0 apart. Every other
distance, and autocast regions, use `distance.pairwise` unchanged.
"""

from __future__ import annotations

import torch

from dml_core.distances import Distance, LpDistance, self_euclidean

__all__ = ["self_pairwise", "signed_distance"]


def self_pairwise(distance: Distance, x: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B) `distance` between all rows of `x`; for Euclidean distances the diagonal, and the distance
    between equal rows, are exactly 0."""
    fast = (type(distance) is LpDistance and distance.p == 2 and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled(x.device.type))
    if not fast:
        return distance.pairwise(x)
    mat = self_euclidean(x, normalize=distance.normalize_embeddings)
    return mat if distance.power == 1 else mat**distance.power


def signed_distance(distance: Distance, mat: torch.Tensor) -> torch.Tensor:
    """The matrix oriented so that larger means farther: `distance.margin(mat, 0)` without the extra node."""
    return -mat if distance.is_inverted else mat
