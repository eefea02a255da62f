"""ProxyNCA (Movshovitz-Attias et al., ICCV 2017), as PML 2.9's `ProxyNCALoss` with its defaults.

With x̂ the L2-normalised embedding and p̂_c the normalised proxy of class c (PML's `LpDistance(power=2)`),

    L = (1/B) Σ_i -log( exp(-s‖x̂_i - p̂_{y_i}‖²) / Σ_c exp(-s‖x̂_i - p̂_c‖²) ),      s = softmax_scale.

The denominator runs over all classes, the own class included (PML's choice; the paper leaves it out). Since
‖x̂ - p̂‖² = 2 - 2 x̂·p̂, the logits are computed as 2s·cos: the constant -2s cancels in the softmax. One
deliberate difference from PML: PML drops a sample whose probability underflows to exactly 0 (float32 with
s ≳ 26), which silently discards the hardest samples; here its large, finite loss is kept.
Mined tuples are ignored (see `_proxy`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dml_core.losses._checks import check_positive
from dml_core.losses._proxy import ProxyLoss, cosine_to_proxies

__all__ = ["ProxyNCALoss"]


class ProxyNCALoss(ProxyLoss):
    def __init__(self, *, num_classes: int, embedding_dim: int, softmax_scale: float = 1.0) -> None:
        super().__init__(num_classes=num_classes, embedding_dim=embedding_dim)
        # PML's default; the reality check's tuned values were 8-14, so search spaces should reach that far.
        self.softmax_scale = check_positive("proxy_nca", "softmax_scale", softmax_scale)

    def proxy_loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = cosine_to_proxies(x, self.weights(x))  # (B, C)
        return F.cross_entropy((2.0 * self.softmax_scale) * cos, labels)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, softmax_scale={self.softmax_scale}"
