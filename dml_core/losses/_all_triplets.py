"""Means of a per-triplet term over every (a, p, n) of a batch in O(B^2) memory.

Materialising all triplets costs O(B^3) memory (PML's `get_all_triplets_indices` builds a (B, B, B) mask). Here
the triplets are visited in chunks of anchors: a chunk holds (c, K, B) values, K being the number of candidate
positives per anchor, and is dropped after use. Each chunk's derivatives are accumulated into one (B, B) gradient
w.r.t. the signed-distance matrix, which the custom autograd Function hands back in `backward`.

Candidate positives: for small batches every sample (K = B; fewer tensor ops, and B^3 is small), otherwise the
members of the anchor's class (K = largest class size, from `class_groups`).

Signed distances (`signed_distance`): larger means farther for every Distance, so one formula serves Euclidean
distances and similarities. A term sees one chunk:

    ap (c, K)     signed distance anchor -> candidate positive   valid_p (c, K) real positive (same class, not self)
    an (c, B)     signed distance anchor -> every sample         neg (c, B) that sample is a negative of the anchor
    pn (c, K, B)  signed distance candidate positive -> every sample (only for terms with `uses_pn`)

and returns the chunk's sum, how many of its triplet values are > 0, and d sum / d (ap, an, pn), which must be 0
wherever valid_p is False (the engine adds them without masking).
"""

from __future__ import annotations

import enum
from typing import Callable, NamedTuple, Protocol

import torch

from dml_core.losses._groups import class_groups

__all__ = ["ChunkSums", "TripletTerm", "HingeTerm", "AutogradTerm", "Denominator", "all_triplet_mean"]

# Elements of one chunk's (c, K, B) tensors: a few MiB each, whatever the batch size.
_CHUNK_ELEMENTS = 1 << 20
# Up to this batch size every sample is a candidate positive (K = B): B^3 <= 262,144 elements.
_DENSE_BATCH = 64


class Denominator(enum.Enum):
    """What the sum over triplets is divided by."""

    NONZERO = "nonzero"  # triplets with a value > 0 (PML's AvgNonZeroReducer)
    ALL = "all"  # every valid triplet (a plain mean)


class ChunkSums(NamedTuple):
    total: torch.Tensor  # scalar
    nonzero: torch.Tensor  # int64 scalar
    d_ap: torch.Tensor  # (c, K)
    d_an: torch.Tensor  # (c, B)
    d_pn: torch.Tensor | None  # (c, K, B)


class TripletTerm(Protocol):
    uses_pn: bool

    def __call__(self, ap: torch.Tensor, an: torch.Tensor, pn: torch.Tensor | None, valid_p: torch.Tensor,
                 neg: torch.Tensor) -> ChunkSums: ...


class HingeTerm:
    """relu(ap - an + margin) with hand-written derivatives: the hot path of the default triplet loss.

    Only one (c, K, B) boolean is built (which triplets violate the margin); the sum of the violations follows
    from the per-pair counts, Σ_(a,p) k_ap (ap + margin) - Σ_(a,n) k_an an, with k_ap / k_an the number of active
    negatives / positives, which are also the derivatives. Invalid positives are set to -inf and non-negatives to
    +inf so that they are never active.
    """

    uses_pn = False

    def __init__(self, margin: float) -> None:
        self.margin = margin

    def __call__(self, ap: torch.Tensor, an: torch.Tensor, pn: torch.Tensor | None, valid_p: torch.Tensor,
                 neg: torch.Tensor) -> ChunkSums:
        shifted = ap + self.margin  # (c, K)
        active = shifted.masked_fill(~valid_p, -torch.inf)[:, :, None] > an.masked_fill(~neg, torch.inf)[:, None, :]
        d_ap = active.sum(2).to(ap.dtype)  # (c, K): active negatives of each (a, p)
        d_an = -active.sum(1).to(ap.dtype)  # (c, B): active positives of each (a, n), negated
        total = (d_ap * shifted).sum() + (d_an * an).sum()
        return ChunkSums(total, d_ap.sum().long(), d_ap, d_an, None)


class AutogradTerm:
    """Any per-triplet formula `fn(ap (c,K,1), an (c,1,B), pn (c,K,B) | None) -> (c,K,B)`, differentiated by
    autograd inside the chunk. `fn` must be finite on finite inputs; invalid triplets are masked afterwards."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor], *,
                 uses_pn: bool) -> None:
        self.fn = fn
        self.uses_pn = uses_pn

    def __call__(self, ap: torch.Tensor, an: torch.Tensor, pn: torch.Tensor | None, valid_p: torch.Tensor,
                 neg: torch.Tensor) -> ChunkSums:
        valid = valid_p[:, :, None] & neg[:, None, :]  # (c, K, B)
        with torch.enable_grad():
            inputs = [ap[:, :, None].requires_grad_(), an[:, None, :].requires_grad_()]
            if pn is not None:
                pn = pn.detach().requires_grad_()
                inputs.append(pn)
            values = torch.where(valid, self.fn(inputs[0], inputs[1], pn), 0)
            grads = torch.autograd.grad(values.sum(), inputs)
        values = values.detach()
        d_pn = grads[2] if pn is not None else None
        return ChunkSums(values.sum(), (values > 0).sum(), grads[0][:, :, 0], grads[1][:, 0, :], d_pn)


def all_triplet_mean(signed: torch.Tensor, labels: torch.Tensor, term: TripletTerm,
                     denominator: Denominator) -> torch.Tensor:
    """`signed` (B, B): Σ term over every triplet of the batch, divided by `denominator`; 0 without triplets."""
    return _AllTripletMean.apply(signed, labels, term, denominator)


class _AllTripletMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, signed, labels, term, denominator):  # type: ignore[no-untyped-def, override]
        # Half-precision inputs (autocast) are summed in float32: sums over B^2 K terms need it.
        work = signed.detach().float() if signed.dtype in (torch.float16, torch.bfloat16) else signed.detach()
        grad = torch.zeros_like(work)  # (B, B): d sum / d signed
        total = work.new_zeros(())
        nonzero = torch.zeros((), dtype=torch.long, device=work.device)
        count = torch.zeros((), dtype=torch.long, device=work.device)
        idx, valid_p = _candidates(labels)  # (B, K) or None (K = B, identity), (B, K)
        batch, width = valid_p.shape
        step = max(1, _CHUNK_ELEMENTS // max(1, width * batch))
        for start in range(0, batch, step):
            rows = slice(start, start + step)
            sums, chunk_count = _chunk(work, grad, labels, None if idx is None else idx[rows], valid_p[rows], rows,
                                       term)
            total += sums.total
            nonzero += sums.nonzero
            count += chunk_count
        scale = 1.0 / (nonzero if denominator is Denominator.NONZERO else count).clamp_min(1).to(work.dtype)
        ctx.save_for_backward(grad.mul_(scale))
        ctx.in_dtype = signed.dtype
        return (total * scale).to(signed.dtype)

    @staticmethod
    def backward(ctx, g_mean):  # type: ignore[no-untyped-def, override]
        (grad,) = ctx.saved_tensors
        return (g_mean * grad).to(ctx.in_dtype), None, None, None


def _candidates(labels: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Candidate positives of every anchor: (index (B, K) or None for "all B samples", valid (B, K))."""
    if labels.numel() <= _DENSE_BATCH:
        same = labels[:, None] == labels[None, :]
        return None, same.fill_diagonal_(False)
    idx, valid = class_groups(labels).positives()
    return idx, valid


def _chunk(work: torch.Tensor, grad: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor | None,
           valid_p: torch.Tensor, rows: slice, term: TripletTerm) -> tuple[ChunkSums, torch.Tensor]:
    """One chunk of anchors: add its gradient into `grad` in place; return its sums and its triplet count."""
    neg = labels[rows, None] != labels[None, :]  # (c, B)
    block = work[rows]  # (c, B)
    grad_rows = grad[rows]  # a view: the in-place adds below land in `grad`
    if idx is None:  # every sample is a candidate: ap is the block itself
        pn = work.expand(block.shape[0], -1, -1) if term.uses_pn else None  # (c, B, B)
        sums = term(block, block, pn, valid_p, neg)
        grad_rows += sums.d_ap + sums.d_an
        flat_idx = None
    else:
        safe_idx = idx.clamp_min(0)  # padding points at sample 0; valid_p masks it
        pn = work[safe_idx] if term.uses_pn else None  # (c, K, B)
        sums = term(block.gather(1, safe_idx), block, pn, valid_p, neg)
        grad_rows.scatter_add_(1, safe_idx, sums.d_ap)
        grad_rows += sums.d_an
        flat_idx = safe_idx.reshape(-1)
    if sums.d_pn is not None:
        if flat_idx is None:
            grad += sums.d_pn.sum(0)  # (B, B): candidate p of every anchor is sample p
        else:
            grad.index_add_(0, flat_idx, sums.d_pn.reshape(-1, grad.shape[1]))
    count = (valid_p.sum(1) * neg.sum(1)).sum()
    return sums, count
