"""CosFace / large margin cosine loss (Wang et al., CVPR 2018), as PML 2.9's `CosFaceLoss` with its defaults.

With cos_{i,c} the cosine between embedding x_i and class weight w_c, scale s and margin m,

    L = (1/B) Σ_i -log( exp(s(cos_{i,y_i} - m)) / (exp(s(cos_{i,y_i} - m)) + Σ_{c≠y_i} exp(s·cos_{i,c})) ).

Mined tuples are ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dml_core.losses._checks import check_at_least, check_positive
from dml_core.losses._proxy import ProxyLoss, cosine_to_proxies

__all__ = ["CosFaceLoss"]


class CosFaceLoss(ProxyLoss):
    def __init__(self, *, num_classes: int, embedding_dim: int, margin: float = 0.35, scale: float = 64.0) -> None:
        super().__init__(num_classes=num_classes, embedding_dim=embedding_dim)
        # PML's defaults, which are the paper's face-recognition settings (m = 0.35, s = 64).
        self.margin = check_at_least("cosface", "margin", margin, 0.0)
        self.scale = check_positive("cosface", "scale", scale)

    def proxy_loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = cosine_to_proxies(x, self.weights(x))  # (B, C)
        penalty = F.one_hot(labels, self.num_classes).to(cos.dtype) * self.margin  # (B, C)
        return F.cross_entropy(self.scale * (cos - penalty), labels)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, margin={self.margin}, "
                f"scale={self.scale}")
