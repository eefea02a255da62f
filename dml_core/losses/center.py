"""Softmax plus center loss (Wen et al., ECCV 2016). PML has no counterpart; the loop reference is the only check.

A linear softmax classifier (W, b) on the embeddings (an ordinary `nn.Linear`, `self.classifier`) plus a pull of
each embedding towards its class centre c_{y_i} (`proxies`, shape (C, D)):

    L = (1/B) Σ_i [ -log softmax(W x_i + b)_{y_i} + (λ/2) ‖x_i - c_{y_i}‖² ],      λ = center_weight.

The paper writes both terms as sums over the mini-batch, L_S + λ L_C; dividing the whole by B keeps λ's meaning
(the balance of the two terms) and makes the loss scale independent of the batch size, like every other loss
here. The paper moves the centres with its own update rule (rate α); here they are ordinary parameters learned by
gradient, at the loss learning rate, so λ scales both their pull on the embeddings and their own speed.
Mined tuples are ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dml_core.losses._checks import check_at_least
from dml_core.losses._proxy import ProxyLoss

__all__ = ["CenterLoss"]


class CenterLoss(ProxyLoss):
    def __init__(self, *, num_classes: int, embedding_dim: int, center_weight: float = 1.0) -> None:
        super().__init__(num_classes=num_classes, embedding_dim=embedding_dim)
        # 1.0, not the paper's λ = 0.003: the paper paired that with unnormalised features of large norm and centres
        # moved by their own update rule. Our embeddings are unit-norm (‖x - c‖² <= 4) and the centres learn by
        # gradient at a speed proportional to λ, so 0.003 would leave them at the origin and the loss plain softmax;
        # at 1.0 the centre term starts at 0.5, beside a cross-entropy of about log(num_classes).
        self.center_weight = check_at_least("center", "center_weight", center_weight, 0.0)
        with torch.no_grad():
            # Each centre is pulled only by its own class, so starting all at the origin favours no class, and the
            # first pull on a unit-norm embedding is radial, which its normalisation ignores until centres have moved.
            self.proxies.zero_()
        self.classifier = nn.Linear(self.embedding_dim, self.num_classes)

    def proxy_loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight, bias = self.classifier.weight.to(x.dtype), self.classifier.bias.to(x.dtype)
        cross_entropy = F.cross_entropy(F.linear(x, weight, bias), labels)
        pull = (x - self.weights(x)[labels]).pow(2).sum(dim=1).mean()  # mean over the batch of ‖x_i - c_{y_i}‖²
        return cross_entropy + (self.center_weight / 2.0) * pull

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, center_weight={self.center_weight}"
