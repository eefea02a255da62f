"""Slow loop references for the pair and triplet losses, written from the papers' formulas.

Each function loops over pairs or triplets with scalar tensor arithmetic (so autograd gives reference gradients).
Distances are written out: Euclidean between L2-normalised embeddings, or the dot product of L2-normalised
embeddings. Where PML 2.9 chose a variant of a paper's formula (margins, reducers, guards), the reference follows
PML and says so, since that is the configuration our losses must equal. `pairs` / `triplets` arguments replace
"every pair / triplet of the batch" by an explicit list (mined tuples).
"""

from __future__ import annotations

from itertools import product

import torch

__all__ = ["all_pairs", "all_triplets", "contrastive", "eet", "lifted_structure", "multi_similarity", "npair",
           "ranked_list", "triplet"]

PairList = list[tuple[int, int]]
TripletList = list[tuple[int, int, int]]


def _units(x: torch.Tensor) -> list[torch.Tensor]:
    return [row / row.norm() for row in x]


def _euclid(u: list[torch.Tensor], i: int, j: int) -> torch.Tensor:
    return (u[i] - u[j]).norm()


def _dot(u: list[torch.Tensor], i: int, j: int) -> torch.Tensor:
    return (u[i] * u[j]).sum()


def _relu(v: torch.Tensor) -> torch.Tensor:
    return v if v > 0 else v * 0


def _avg_nonzero(losses: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Mean of the strictly positive losses (PML's AvgNonZeroReducer); 0 when there are none."""
    kept = [v for v in losses if v > 0]
    return sum(kept) / len(kept) if kept else x.sum() * 0


def all_pairs(labels: torch.Tensor) -> tuple[PairList, PairList]:
    ys = labels.tolist()
    idx = range(len(ys))
    pos = [(i, j) for i, j in product(idx, idx) if i != j and ys[i] == ys[j]]
    neg = [(i, j) for i, j in product(idx, idx) if ys[i] != ys[j]]
    return pos, neg


def all_triplets(labels: torch.Tensor) -> TripletList:
    ys = labels.tolist()
    idx = range(len(ys))
    return [(a, p, n) for a, p, n in product(idx, idx, idx) if a != p and ys[a] == ys[p] != ys[n]]


def contrastive(x: torch.Tensor, labels: torch.Tensor, *, pos_margin: float = 0.0, neg_margin: float = 1.0,
                pairs: tuple[PairList, PairList] | None = None) -> torch.Tensor:
    """Hadsell et al. 2006: pull positives within pos_margin, push negatives beyond neg_margin; each part averaged
    over its non-zero terms (PML's AvgNonZeroReducer per sub-loss)."""
    u = _units(x)
    pos, neg = all_pairs(labels) if pairs is None else pairs
    pos_losses = [_relu(_euclid(u, i, j) - pos_margin) for i, j in pos]
    neg_losses = [_relu(neg_margin - _euclid(u, i, j)) for i, j in neg]
    return _avg_nonzero(pos_losses, x) + _avg_nonzero(neg_losses, x)


def triplet(x: torch.Tensor, labels: torch.Tensor, *, margin: float = 0.05, swap: bool = False,
            smooth_loss: bool = False, triplets: TripletList | None = None) -> torch.Tensor:
    """FaceNet's hinge [d(a,p) - d(a,n) + margin]_+ (softplus when smooth; with swap, d(a,n) becomes
    min(d(a,n), d(p,n)), Balntas et al. 2016), averaged over the non-zero terms (PML's AvgNonZeroReducer)."""
    u = _units(x)
    losses = []
    for a, p, n in all_triplets(labels) if triplets is None else triplets:
        negative = _euclid(u, a, n)
        if swap:
            negative = torch.minimum(negative, _euclid(u, p, n))
        violation = _euclid(u, a, p) - negative + margin
        losses.append(torch.nn.functional.softplus(violation) if smooth_loss else _relu(violation))
    return _avg_nonzero(losses, x)


def lifted_structure(x: torch.Tensor, labels: torch.Tensor, *, neg_margin: float = 1.0, pos_margin: float = 0.0,
                     pairs: tuple[PairList, PairList] | None = None) -> torch.Tensor:
    """Song et al. 2016, eq. 4, with PML's margins: for each positive pair (i, j),
    J = log(Σ_{(i,k) neg} exp(neg_margin - d_ik) + Σ_{(j,l) neg} exp(neg_margin - d_jl)) + d_ij - pos_margin,
    loss = mean over positive pairs of relu(J)^2 / 2 (PML halves since each pair appears in both orders; a pair
    with no negative pair at either end gets log-term 0, PML's convention)."""
    u = _units(x)
    pos, neg = all_pairs(labels) if pairs is None else pairs
    if not pos or not neg:
        return x.sum() * 0
    losses = []
    for i, j in pos:
        terms = [torch.exp(neg_margin - _euclid(u, a, n)) for a, n in neg if a in (i, j)]
        log_term = torch.log(sum(terms)) if terms else 0.0
        losses.append(_relu(log_term + _euclid(u, i, j) - pos_margin) ** 2 / 2)
    return sum(losses) / len(losses)


def npair(x: torch.Tensor, labels: torch.Tensor, *, pairs: PairList | None = None) -> torch.Tensor:
    """Sohn 2016, multi-class N-pair: one (anchor, positive) pair per class, here the first positive pair (in
    batch order, or in the given order) of each anchor label;
    loss = 1/N Σ_i log(Σ_j exp(f_i.f_j+ - f_i.f_i+)) with normalised f (PML's default distance normalises and PML
    omits the paper's L2 penalty)."""
    u = _units(x)
    ys = labels.tolist()
    chosen: dict[int, tuple[int, int]] = {}
    for a, p in all_pairs(labels)[0] if pairs is None else pairs:
        chosen.setdefault(ys[a], (a, p))
    selected = list(chosen.values())
    if not selected:
        return x.sum() * 0
    losses = []
    for a, p in selected:
        logits = [_dot(u, a, q) for _, q in selected]
        shift = max(float(z.detach()) for z in logits)
        losses.append(torch.log(sum(torch.exp(z - shift) for z in logits)) - (_dot(u, a, p) - shift))
    return sum(losses) / len(losses)


def multi_similarity(x: torch.Tensor, labels: torch.Tensor, *, alpha: float = 2.0, beta: float = 50.0,
                     base: float = 0.5, pairs: tuple[PairList, PairList] | None = None) -> torch.Tensor:
    """Wang et al. 2019, eq. 6, with cosine similarity S: for each sample i,
    1/alpha log(1 + Σ_{P_i} exp(-alpha (S_ij - base))) + 1/beta log(1 + Σ_{N_i} exp(beta (S_ik - base))),
    averaged over all samples (PML's MeanReducer). Mined pairs are a set (PML builds masks from them)."""
    u = _units(x)
    pos, neg = all_pairs(labels) if pairs is None else pairs
    pos_set, neg_set = set(pos), set(neg)
    losses = []
    for i in range(x.shape[0]):
        pos_terms = [torch.exp(-alpha * (_dot(u, i, j) - base)) for a, j in sorted(pos_set) if a == i]
        neg_terms = [torch.exp(beta * (_dot(u, i, k) - base)) for a, k in sorted(neg_set) if a == i]
        losses.append(torch.log(1 + sum(pos_terms, x.sum() * 0)) / alpha
                      + torch.log(1 + sum(neg_terms, x.sum() * 0)) / beta)
    return sum(losses) / len(losses)


def ranked_list(x: torch.Tensor, labels: torch.Tensor, *, margin: float = 0.2, Tn: float = 10.0,
                imbalance: float = 0.5, alpha: float | None = None, Tp: float = 0.0) -> torch.Tensor:
    """Wang et al. 2019 (RLL), eqs. 3-8: non-trivial positives d_ij > alpha - margin, non-trivial negatives
    d_ik < alpha, weighted by exp(Tp (d_ij - (alpha - margin))) and exp(Tn (alpha - d_ik)); each part is the
    weighted mean of its hinge. PML's variant: alpha defaults to 1 + margin / 2, each weight sum gets B * 1e-5 (a
    1e-5 per column of the batch), distances of exactly 0 are left out, and the per-sample losses are averaged."""
    alpha = 1 + margin / 2 if alpha is None else alpha
    u = _units(x)
    ys = labels.tolist()
    size = len(ys)
    losses = []
    for i in range(size):
        pos_num, pos_den, neg_num, neg_den = 0.0, size * 1e-5, 0.0, size * 1e-5
        for j in range(size):
            if j == i:
                continue
            d = _euclid(u, i, j)
            if ys[j] == ys[i] and d > alpha - margin and d > 0:
                w = torch.exp(Tp * (d - (alpha - margin)))
                pos_num, pos_den = pos_num + w * (d - (alpha - margin)), pos_den + w
            elif ys[j] != ys[i] and 0 < d < alpha:
                w = torch.exp(Tn * (alpha - d))
                neg_num, neg_den = neg_num + w * (alpha - d), neg_den + w
        losses.append((1 - imbalance) * pos_num / pos_den + imbalance * neg_num / neg_den)
    return sum(losses) / size + x.sum() * 0


def eet(x: torch.Tensor, labels: torch.Tensor, *, margin: float = 0.05, equidistant_weight: float = 1.0,
        equidistributed_weight: float = 1.0, triplets: TripletList | None = None) -> torch.Tensor:
    """EET as written in dml_core/losses/eet.py's docstring (no PML counterpart), term by term:
    margin constraint + equidistant_weight * equidistant constraint + equidistributed_weight * (L_D + L_E)."""
    u = _units(x)
    ys = labels.tolist()
    size = len(ys)
    chosen = all_triplets(labels) if triplets is None else triplets
    margin_terms = [_relu(_euclid(u, a, p) - _euclid(u, a, n) + margin) for a, p, n in chosen]
    equidistant_terms = [(_euclid(u, a, n) - _euclid(u, p, n)).abs() for a, p, n in chosen]
    total = (sum(margin_terms) + equidistant_weight * sum(equidistant_terms)) / max(1, len(chosen))
    classes = sorted(set(ys))
    if len(classes) < 2:
        return total + x.sum() * 0
    members = {c: [i for i in range(size) if ys[i] == c] for c in classes}
    spread = []
    for ci, cj in product(classes, classes):
        if ci != cj:
            closest = min((_euclid(u, i, j) for i in members[ci] for j in members[cj]), key=lambda v: float(v.detach()))
            spread.append(torch.exp(-closest))
    nearest = {}  # sample -> (r(x), its nearest other-class sample)
    for i in range(size):
        others = [(float(_euclid(u, i, j).detach()), j) for j in range(size) if ys[j] != ys[i]]
        j = min(others)[1]
        nearest[i] = (_euclid(u, i, j), j)
    equalise = []
    for c in classes:
        a_c = min(members[c], key=lambda i: float(nearest[i][0].detach()))
        n_c = nearest[a_c][1]
        equalise.append((nearest[a_c][0] - nearest[n_c][0]).abs())
    equidistributed = sum(spread) / len(spread) + sum(equalise) / len(equalise)
    return total + equidistributed_weight * equidistributed + x.sum() * 0
