"""ArcFace / additive angular margin (Deng et al., CVPR 2019), as PML 2.9's `ArcFaceLoss` with its defaults.

With θ_{i,c} the angle between embedding x_i and class weight w_c, margin m (given in degrees, as PML) and scale s,
the own-class logit cos θ becomes

    ψ(θ) = cos(θ + m)          if θ <= π - m,
           cos θ - m·sin m     otherwise (keeps ψ decreasing in θ, as the official code and PML do),

    L = (1/B) Σ_i -log( exp(s·ψ(θ_{i,y_i})) / (exp(s·ψ(θ_{i,y_i})) + Σ_{c≠y_i} exp(s·cos θ_{i,c})) ).

cos(θ + m) is evaluated as cos θ·cos m - sin θ·sin m with sin θ = sqrt(max(1 - cos²θ, tiny)) instead of through
acos. acos and sqrt both have infinite slope at cos θ = ±1 (an embedding on its class weight), which PML's acos form
turns into NaN gradients; the floor, tiny = the dtype's smallest normal number (1e-38 in float32), keeps them
finite and changes nothing else. 1 - cos²θ is either 0 (or negative, from rounding) or at least 2^-24 (float32;
2^-53 in float64), far above tiny, so the floor only acts where sin θ is 0: there it gives sin θ = 1e-19 (float32)
instead of 0, which vanishes when rounded into cos θ·cos m (ψ = cos m exactly, PML's value), and a derivative of 0
instead of an infinite one (clamp passes no gradient below its floor). θ <= π - m is tested as cos θ >= -cos m.
Mined tuples are ignored.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dml_core.losses._checks import check_below, check_positive
from dml_core.losses._proxy import ProxyLoss, cosine_to_proxies, with_target

__all__ = ["ArcFaceLoss"]


class ArcFaceLoss(ProxyLoss):
    def __init__(self, *, num_classes: int, embedding_dim: int, margin: float = 28.6, scale: float = 64.0) -> None:
        super().__init__(num_classes=num_classes, embedding_dim=embedding_dim)
        # PML's defaults, the paper's m = 0.5 rad (28.6°) and s = 64. Beyond 180° the angle wraps around.
        self.margin = check_below("arcface", "margin", margin, 180.0)
        self.scale = check_positive("arcface", "scale", scale)
        radians = math.radians(self.margin)
        self._cos_m, self._sin_m = math.cos(radians), math.sin(radians)
        self._fallback_shift = radians * self._sin_m  # m·sin m, the shift past the θ = π - m threshold

    def proxy_loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = cosine_to_proxies(x, self.weights(x))  # (B, C)
        own = cos.gather(1, labels[:, None]).squeeze(1)  # (B,)
        # The floor is the smallest normal number: see the module docstring for why it changes no value.
        sin = (1.0 - own * own).clamp_min(torch.finfo(own.dtype).tiny).sqrt()  # (B,)
        target = torch.where(own >= -self._cos_m, own * self._cos_m - sin * self._sin_m, own - self._fallback_shift)
        return F.cross_entropy(self.scale * with_target(cos, labels, target), labels)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, margin={self.margin}, "
                f"scale={self.scale}")
