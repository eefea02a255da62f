"""What the proxy and classification losses share: the class-weight base class and a few small helpers.

These losses learn one weight vector per class (a "proxy"; several per class for SoftTriple) instead of comparing
samples with one another. `ProxyLoss` does the routine work once (size checks, the `proxies` parameter, the label
range, full-precision maths under autocast) and each loss fills in `proxy_loss`.

Mined tuples are ignored by every loss here: the proxies, not sampled pairs or triplets, carry the learning signal,
and `compatible_miners` offers them only the `none` miner. (PML, given tuples, would reweight samples by how often
they occur in them; the study never asks for that.)
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from dml_core.losses._checks import check_positive_int

from dml_core.losses.base import MetricLoss, zero_loss
from dml_core.tuples import Mined

__all__ = [
    "ProxyLoss",
    "cosine_to_proxies",
    "new_proxies",
    "with_target",
]

_HALF = (torch.float16, torch.bfloat16)


def new_proxies(*shape: int) -> nn.Parameter:
    """Standard-normal class weights, drawn from torch's default generator like `nn.Linear`'s weights.

    Every loss here uses its proxies only through their direction, and a standard normal draws directions
    uniformly on the sphere, so no class starts favoured.
    """
    return nn.Parameter(torch.randn(*shape))


def cosine_to_proxies(x: torch.Tensor, proxies: torch.Tensor) -> torch.Tensor:
    """(B, D), (C, D) -> (B, C) cosine similarities (both sides L2-normalised)."""
    return F.normalize(x, dim=1) @ F.normalize(proxies, dim=1).T


def with_target(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, C) logits with each row's own-class entry replaced by `target` (B,); differentiable in both."""
    return logits.scatter(1, labels[:, None], target[:, None])


class ProxyLoss(MetricLoss):
    """Base of the losses with class weights: `proxies` of shape (num_classes, *per_class, embedding_dim).

    Subclasses implement `proxy_loss(x, labels)`, where `x` is the (B, D) batch in at least float32 (float64 stays
    float64), autocast is off, and labels are int64 in [0, num_classes). Half-precision inputs are promoted because
    these losses exponentiate scaled cosines (scale 64 at ArcFace's default) and take square roots near 1 - cos^2 = 0,
    where bf16's 8-bit mantissa overflows or cancels; at (B, C) these products are cheap in float32.
    """

    proxies: nn.Parameter

    def __init__(self, *, num_classes: int, embedding_dim: int, per_class: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.num_classes = check_positive_int(type(self).__name__, "num_classes", num_classes)
        self.embedding_dim = check_positive_int(type(self).__name__, "embedding_dim", embedding_dim)
        self.proxies = new_proxies(self.num_classes, *per_class, self.embedding_dim)

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, mined: Mined | None) -> torch.Tensor:
        del mined  # ignored on purpose: see the module docstring
        if embeddings.shape[1] != self.embedding_dim:
            raise ValueError(f"embeddings must be (batch, {self.embedding_dim}), got shape "
                             f"{tuple(embeddings.shape)}")
        if embeddings.shape[0] == 0:
            return zero_loss(embeddings)
        labels = labels.long()
        low, high = (int(v) for v in torch.aminmax(labels))
        if low < 0 or high >= self.num_classes:
            raise ValueError(f"labels must be in [0, {self.num_classes}), got values in [{low}, {high}]")
        with torch.autocast(embeddings.device.type, enabled=False):
            x = embeddings.float() if embeddings.dtype in _HALF else embeddings
            return self.proxy_loss(x, labels)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The proxies in `x`'s dtype (a no-op when they already match)."""
        return self.proxies.to(x.dtype)

    def proxy_loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
