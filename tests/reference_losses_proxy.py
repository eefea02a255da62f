"""Slow loop references for the proxy and classification losses, written from the papers' formulas.

Each function loops over samples and classes with scalar tensor arithmetic (so autograd gives reference gradients)
and takes the class weights as explicit arguments. Where PML 2.9 chose a variant of a paper's formula, the
reference follows PML and says so, since that is the configuration our losses must equal.
"""

from __future__ import annotations

import math

import torch

__all__ = ["arcface", "center", "cosface", "normalized_softmax", "proxy_anchor", "proxy_nca", "soft_triple"]


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum() / (a.norm() * b.norm())


def _softmax_nll(logits: list[torch.Tensor], target: int) -> torch.Tensor:
    """-log( exp(logits[target]) / Σ_c exp(logits[c]) ), written out, with every logit shifted by the largest so
    that float32 neither overflows nor underflows at scale 64."""
    shift = max(float(z.detach()) for z in logits)
    denominator = sum(torch.exp(z - shift) for z in logits)
    return torch.log(denominator) - (logits[target] - shift)


def proxy_nca(x: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, softmax_scale: float) -> torch.Tensor:
    """Movshovitz-Attias et al. 2017 on normalised vectors with squared Euclidean distance; the denominator keeps
    the own class (PML's variant; the paper sums over the other classes only)."""
    total = x.new_zeros(())
    for i in range(len(x)):
        xi = x[i] / x[i].norm()
        logits = []
        for c in range(len(proxies)):
            pc = proxies[c] / proxies[c].norm()
            logits.append(-softmax_scale * ((xi - pc) ** 2).sum())
        total = total + _softmax_nll(logits, int(labels[i]))
    return total / len(x)


def proxy_anchor(x: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, margin: float,
                 alpha: float) -> torch.Tensor:
    """Kim et al. 2020, eq. 4: positive terms averaged over the proxies present in the batch, negative terms over
    all proxies."""
    pos_sum, neg_sum, num_with_pos = x.new_zeros(()), x.new_zeros(()), 0
    for c in range(len(proxies)):
        pos_exp, neg_exp, has_pos = x.new_zeros(()), x.new_zeros(()), False
        for i in range(len(x)):
            s = _cos(x[i], proxies[c])
            if int(labels[i]) == c:
                pos_exp = pos_exp + torch.exp(-alpha * (s - margin))
                has_pos = True
            else:
                neg_exp = neg_exp + torch.exp(alpha * (s + margin))
        if has_pos:
            pos_sum = pos_sum + torch.log(1 + pos_exp)
            num_with_pos += 1
        neg_sum = neg_sum + torch.log(1 + neg_exp)
    return pos_sum / num_with_pos + neg_sum / len(proxies)


def soft_triple(x: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor, la: float, gamma: float,
                margin: float) -> torch.Tensor:
    """Qian et al. 2019, eqs. 4 and 8, without the centre-merging regulariser (PML's default). centers: (C, K, D)."""
    total = x.new_zeros(())
    for i in range(len(x)):
        y = int(labels[i])
        logits = []
        for c in range(len(centers)):
            sims = [_cos(x[i], centers[c, k]) for k in range(centers.shape[1])]
            weights = [torch.exp(s / gamma) for s in sims]
            relaxed = sum(w * s for w, s in zip(weights, sims)) / sum(weights)
            logits.append(la * (relaxed - margin) if c == y else la * relaxed)
        total = total + _softmax_nll(logits, y)
    return total / len(x)


def normalized_softmax(x: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """Zhai & Wu 2019: softmax over cosines divided by the temperature."""
    total = x.new_zeros(())
    for i in range(len(x)):
        logits = [_cos(x[i], weights[c]) / temperature for c in range(len(weights))]
        total = total + _softmax_nll(logits, int(labels[i]))
    return total / len(x)


def arcface(x: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, margin_degrees: float,
            scale: float) -> torch.Tensor:
    """Deng et al. 2019: cos(θ + m) on the own class, with the official code's fallback cos θ - m·sin m once
    θ > π - m (keeps the target logit decreasing in θ)."""
    m = math.radians(margin_degrees)
    total = x.new_zeros(())
    for i in range(len(x)):
        y = int(labels[i])
        logits = []
        for c in range(len(weights)):
            cos = _cos(x[i], weights[c])
            if c == y:
                theta = torch.acos(cos.clamp(-1, 1))
                cos = torch.cos(theta + m) if float(theta.detach()) <= math.pi - m else cos - m * math.sin(m)
            logits.append(scale * cos)
        total = total + _softmax_nll(logits, y)
    return total / len(x)


def cosface(x: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, margin: float,
            scale: float) -> torch.Tensor:
    """Wang et al. 2018: s·(cos θ - m) on the own class, s·cos θ elsewhere."""
    total = x.new_zeros(())
    for i in range(len(x)):
        y = int(labels[i])
        logits = [scale * (_cos(x[i], weights[c]) - (margin if c == y else 0.0)) for c in range(len(weights))]
        total = total + _softmax_nll(logits, y)
    return total / len(x)


def center(x: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor, weight: torch.Tensor,
           bias: torch.Tensor, center_weight: float) -> torch.Tensor:
    """Wen et al. 2016, eq. 5, L_S + λ/2 Σ‖x_i - c_{y_i}‖², divided by the batch size."""
    total = x.new_zeros(())
    for i in range(len(x)):
        y = int(labels[i])
        logits = [(weight[c] * x[i]).sum() + bias[c] for c in range(len(weight))]
        squared = sum((x[i, d] - centers[y, d]) ** 2 for d in range(x.shape[1]))
        total = total + _softmax_nll(logits, y) + center_weight / 2 * squared
    return total / len(x)
