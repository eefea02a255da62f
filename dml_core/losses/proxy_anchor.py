"""Proxy-Anchor (Kim et al., CVPR 2020), as PML 2.9's `ProxyAnchorLoss` with its defaults.

With s(x, p) the cosine similarity, P the set of all classes, P⁺ the classes present in the batch, X_p⁺ the batch
samples of class p and X_p⁻ the others,

    L = (1/|P⁺|) Σ_{p∈P⁺} log(1 + Σ_{x∈X_p⁺} exp(-α(s(x, p) - δ)))
      + (1/|P|)  Σ_{p∈P}  log(1 + Σ_{x∈X_p⁻} exp( α(s(x, p) + δ))),     δ = margin, α = alpha.

Each proxy is an anchor that weighs the whole batch at once, hard samples most. Mined tuples are ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dml_core.losses._checks import check_at_least, check_positive
from dml_core.losses._proxy import ProxyLoss, cosine_to_proxies

__all__ = ["ProxyAnchorLoss"]


def _log1p_sum_exp(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, C), bool (B, C) -> (C,): log(1 + Σ_b exp(values[b, c]) over kept b), 0 for a column with none kept.

    The "1 +" is a zero row inside the logsumexp, so even an all-masked column has a finite log-sum and a zero
    (not NaN) gradient.
    """
    masked = values.masked_fill(~keep, float("-inf"))
    return torch.logsumexp(torch.cat([masked, values.new_zeros(1, values.shape[1])]), dim=0)


class ProxyAnchorLoss(ProxyLoss):
    def __init__(self, *, num_classes: int, embedding_dim: int, margin: float = 0.1, alpha: float = 32.0) -> None:
        super().__init__(num_classes=num_classes, embedding_dim=embedding_dim)
        # Both are PML's defaults and the official repository's settings (δ = 0.1, α = 32).
        self.margin = check_at_least("proxy_anchor", "margin", margin, 0.0)
        self.alpha = check_positive("proxy_anchor", "alpha", alpha)

    def proxy_loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = cosine_to_proxies(x, self.weights(x))  # (B, C)
        pos = F.one_hot(labels, self.num_classes).bool()  # (B, C): sample b belongs to proxy c
        pos_term = _log1p_sum_exp(-self.alpha * (cos - self.margin), pos)  # (C,)
        neg_term = _log1p_sum_exp(self.alpha * (cos + self.margin), ~pos)  # (C,)
        num_with_pos = pos.any(dim=0).sum()  # |P⁺| >= 1 for a non-empty batch
        return pos_term.sum() / num_with_pos + neg_term.sum() / self.num_classes

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, margin={self.margin}, "
                f"alpha={self.alpha}")
