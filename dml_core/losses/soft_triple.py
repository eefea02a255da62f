"""SoftTriple (Qian et al., ICCV 2019), as PML 2.9's `SoftTripleLoss` with its defaults.

Each class c has K centres w_{c,k} (`proxies`, shape (C, K, D)). With cosines s_{c,k} = cos(x, w_{c,k}), the
relaxed similarity to a class is the softmax-weighted mean of its centres' cosines,

    S_c(x) = Σ_k softmax_k(s_{c,k} / γ) · s_{c,k},

and the loss is a cross-entropy with margin δ on the own class and scale λ:

    L = (1/B) Σ_i -log( exp(λ(S_{y_i} - δ)) / (exp(λ(S_{y_i} - δ)) + Σ_{c≠y_i} exp(λ S_c)) ),

with λ = la, γ = gamma, δ = margin, K = centers_per_class. The paper's optional regulariser that merges
redundant centres is left out, as in PML's default configuration. Mined tuples are ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dml_core.losses._checks import check_at_least, check_positive, check_positive_int
from dml_core.losses._proxy import ProxyLoss, cosine_to_proxies, with_target

__all__ = ["SoftTripleLoss"]


class SoftTripleLoss(ProxyLoss):
    def __init__(self, *, num_classes: int, embedding_dim: int, centers_per_class: int = 10, la: float = 20.0,
                 gamma: float = 0.1, margin: float = 0.01) -> None:
        # All four are PML's defaults, which are the paper's settings (K = 10, λ = 20, γ = 0.1, δ = 0.01).
        k = check_positive_int("soft_triple", "centers_per_class", centers_per_class)
        super().__init__(num_classes=num_classes, embedding_dim=embedding_dim, per_class=(k,))
        self.centers_per_class = k
        self.la = check_positive("soft_triple", "la", la)
        self.gamma = check_positive("soft_triple", "gamma", gamma)
        self.margin = check_at_least("soft_triple", "margin", margin, 0.0)

    def proxy_loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        c, k, d = self.proxies.shape
        # Centre-major order (K, C): the softmax then runs over a strided middle dimension, which torch's CPU
        # kernel does about 10x faster than over a short innermost one of size K.
        centres = self.weights(x).transpose(0, 1).reshape(k * c, d)  # (K*C, D)
        sim = cosine_to_proxies(x, centres).view(-1, k, c)  # (B, K, C)
        weight = F.softmax(sim * (1.0 / self.gamma), dim=1)  # (B, K, C)
        relaxed = (weight * sim).sum(dim=1)  # (B, C)
        own = relaxed.gather(1, labels[:, None]).squeeze(1) - self.margin  # (B,)
        return F.cross_entropy(self.la * with_target(relaxed, labels, own), labels)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
                f"centers_per_class={self.centers_per_class}, la={self.la}, gamma={self.gamma}, margin={self.margin}")
