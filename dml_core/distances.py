"""Distances between embeddings, PML's convention: a distance knows whether larger means closer.

A loss never hard-codes "smaller is closer": it asks the distance for `margin(x, y)`, `smallest` or `largest`, so
one formula serves Euclidean distance and cosine similarity alike.

Euclidean distances of many pairs come from a Gram matrix, d_ij^2 = |x_i|^2 + |y_j|^2 - 2 x_i.y_j (torch.cdist does
the same above 25 rows, and `self_euclidean` here always): one matrix product, but the cancellation leaves rounding
noise of about eps * D * |x|^2, so two equal embeddings come out 3e-4 to 5e-4 apart in float32 (1e-8 in float64)
instead of 0. Every Euclidean matrix here therefore recomputes the pairs whose squared distance lies below a bound
on that noise (`_gram_noise_bound`): pairs of equal rows (found by grouping the rows) become exactly 0, with zero
gradient as cdist gives, and the other near pairs come from cdist's direct kernel, as accurate as a direct
computation. Ordinary batches have no such pair, so the check costs one pass over the matrix; a fully collapsed
batch costs a grouping of the rows (O(B D + B log B)) and a few passes over the matrix; at worst, near pairs of
distinct rows everywhere, one direct computation (O(B^2 D) time, O(B^2) memory).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["Distance", "LpDistance", "CosineSimilarity", "DotProductSimilarity", "self_euclidean"]

_NORM_EPS = 1e-12  # F.normalize's floor on the norm
# Unit roundoff of float32 operands that torch may round before a matrix product, by fp32_precision setting.
_REDUCED_OPERANDS = {"tf32": 2.0**-11, "bf16": 2.0**-8}
_COARSEST_OPERANDS = max(_REDUCED_OPERANDS.values())


class Distance:
    """Base class: normalise (optionally), compute the (N, M) matrix, raise it to `power`."""

    is_inverted: bool = False

    def __init__(self, *, normalize_embeddings: bool = True, p: int = 2, power: float = 1.0) -> None:
        if p <= 0:
            raise ValueError(f"Distance p must be positive, got {p=}")
        if power <= 0:
            raise ValueError(f"Distance power must be positive, got {power=}")
        self.normalize_embeddings = normalize_embeddings
        self.p = p
        self.power = power

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=self.p, dim=-1) if self.normalize_embeddings else x

    def pairwise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """(N, D), (M, D) -> (N, M); `y=None` means `y = x`."""
        if x.ndim != 2 or (y is not None and y.ndim != 2):
            raise ValueError(f"embeddings must be 2-D (batch, dim), got shapes {tuple(x.shape)}"
                             f"{'' if y is None else ', ' + str(tuple(y.shape))}")
        xn = self.normalize(x)
        yn = xn if y is None else self.normalize(y)
        mat = self._matrix(xn, yn)
        return mat if self.power == 1 else mat**self.power

    def _matrix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def margin(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Positive when `x` is farther apart than `y` (PML's `BaseDistance.margin`)."""
        return y - x if self.is_inverted else x - y

    def smallest(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Values of the closest entries along `dim` (max for a similarity)."""
        return t.amax(dim) if self.is_inverted else t.amin(dim)

    def largest(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Values of the farthest entries along `dim` (min for a similarity)."""
        return t.amin(dim) if self.is_inverted else t.amax(dim)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(normalize_embeddings={self.normalize_embeddings}, "
                f"p={self.p}, power={self.power})")


class LpDistance(Distance):
    """Minkowski distance; defaults (L2 on L2-normalised embeddings) are PML's."""

    is_inverted = False

    def _matrix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            # cdist has no half kernels on every backend; the float32 detour keeps autocast working.
            xf = x.float()
            return self._matrix(xf, xf if y is x else y.float()).to(x.dtype)
        # cdist's forward is PML's to the bit (miners mine PML's sets), and its backward is safe at zero distance.
        mat = torch.cdist(x, y, p=self.p)
        if self.p != 2:  # only p = 2 takes cdist's Gram path (above 25 rows); other norms are computed directly
            return mat
        # L2-normalised rows have |x| <= 1: no reduction needed for the noise bound.
        return _with_exact_near_pairs(mat, x, y, 1.0 if self.normalize_embeddings else None)


class DotProductSimilarity(Distance):
    """Inner product; of L2-normalised embeddings by default, as PML's (its BaseDistance normalises)."""

    is_inverted = True

    def __init__(self, *, normalize_embeddings: bool = True, power: float = 1.0) -> None:
        super().__init__(normalize_embeddings=normalize_embeddings, p=2, power=power)

    def _matrix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x @ y.T


class CosineSimilarity(DotProductSimilarity):
    """Inner product of L2-normalised embeddings."""

    def __init__(self, *, power: float = 1.0) -> None:
        super().__init__(normalize_embeddings=True, power=power)


# ---- Euclidean matrices: Gram products with the near pairs recomputed exactly ---------------------------------


def self_euclidean(x: torch.Tensor, *, normalize: bool) -> torch.Tensor:
    """(B, D) float32 / float64 -> (B, B) Euclidean distances between the rows of `x` (L2-normalised first when
    `normalize`), in one autograd node differentiated with two matrix products.

    The same values as `LpDistance().pairwise(x)` up to rounding, faster: torch.cdist's backward is a generic
    per-pair kernel that costs more than the rest of a pair loss at B = 256, and F.normalize adds several autograd
    nodes that dominate at B = 32. The diagonal and the distance between equal rows are exactly 0.
    """
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (batch, dim), got shape {tuple(x.shape)}")
    dist: torch.Tensor = _SelfEuclidean.apply(x, normalize)
    return dist


def _operand_rounding(x: torch.Tensor) -> float:
    """Unit roundoff of the operands of a matrix product of `x`'s dtype: 0 unless torch is allowed to round float32
    operands to TF32 or bf16 (`torch.backends.*.matmul.fp32_precision`, `set_float32_matmul_precision`)."""
    if x.dtype != torch.float32:
        return 0.0
    try:
        if x.device.type == "cuda":
            precision = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
            legacy_tf32 = torch.backends.cuda.matmul.allow_tf32
        else:
            precision = getattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision", None)
            legacy_tf32 = False
        if precision is None:  # a torch without the per-backend setting
            legacy = torch.get_float32_matmul_precision()
            precision = {"medium": "bf16", "high": "tf32"}.get(legacy, "tf32" if legacy_tf32 else "ieee")
    except RuntimeError:  # torch refuses to read settings made through both of its APIs: assume the coarsest
        precision = "bf16"
    return _REDUCED_OPERANDS.get(precision, 0.0)


def _gram_noise_bound(x: torch.Tensor, max_sq_norm: float, operand_rounding: float) -> float:
    """Upper bound on the rounding error of a Gram-matrix squared distance between rows of `x`'s dtype and
    dimension, of squared norms at most `max_sq_norm`, with matrix-product operands rounded to `operand_rounding`.

    Summing D products errs by at most D u times the sum of their magnitudes (u the unit roundoff, eps / 2). The
    squared norms, the dot product (doubled) and the few additions that combine them each contribute such a term, of
    magnitude at most 4 max|x|^2 together; torch.cdist's augmented product (D + 2 terms) stays within the same
    bound. Operands rounded to TF32 or bf16 add their own relative error. The bound uses eps, not u, as a factor-2
    safety margin: a loose bound only makes more pairs exact, a tight one could miss a duplicate.
    """
    eps = torch.finfo(x.dtype).eps
    return 4.0 * ((x.shape[-1] + 4) * eps + 2.0 * operand_rounding) * max_sq_norm


def _near_mask(sq_dist: torch.Tensor, x: torch.Tensor, max_sq_norm: float, *,
               root: bool = False) -> torch.Tensor | None:
    """(N, M) bool: the entries of `sq_dist`, Gram-form squared distances between rows of `x`'s kind, within
    rounding noise of 0 (`_gram_noise_bound`); None when there is none, the common case, decided by one reduction.
    `root`: the entries are distances, not squared distances."""
    if sq_dist.numel() == 0:
        return None
    smallest = float(sq_dist.amin())
    # Most batches have no pair anywhere near 0: the bound for the coarsest operands settles it without reading
    # torch's precision settings (a few microseconds, as much as the rest of this check).
    coarse = _gram_noise_bound(x, max_sq_norm, _COARSEST_OPERANDS)
    if smallest > (math.sqrt(coarse) if root else coarse):
        return None
    bound = _gram_noise_bound(x, max_sq_norm, _operand_rounding(x))
    bound = math.sqrt(bound) if root else bound
    return None if smallest > bound else sq_dist <= bound


def _row_groups(x: torch.Tensor) -> torch.Tensor:
    """(N,) group ids such that rows with the same id are equal (equal rows nearly always share one).

    torch.unique over rows compares them one by one (about 0.7 ms at N = 256); instead the rows are grouped by a
    weighted sum of their coordinates (weights sqrt(1..D): distinct rows collide only by accident) and each row is
    checked against its group's first row, O(N D). A collision falls back to torch.unique. Equal rows that land in
    different groups (the sum rounded differently) are only treated as distinct: the direct kernel still gives 0.
    """
    x = x.detach()
    weights = torch.arange(1, x.shape[1] + 1, dtype=x.dtype, device=x.device).sqrt_()  # (D,)
    groups: torch.Tensor = torch.unique(x @ weights, return_inverse=True)[1]  # (N,)
    index = torch.arange(x.shape[0], device=x.device)
    first = torch.full((x.shape[0],), x.shape[0], device=x.device).scatter_reduce_(0, groups, index, "amin")
    if not bool((x == x[first[groups]]).all()):
        groups = torch.unique(x, dim=0, return_inverse=True)[1]
    return groups


def _equal_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, M) bool: where x_i == y_j in every coordinate (at least the pairs `_row_groups` puts together), from
    grouping the rows rather than comparing N M pairs of D coordinates."""
    if y is x:
        groups = _row_groups(x)
        return groups[:, None] == groups[None, :]
    groups = _row_groups(torch.cat([x, y]))  # (N + M,)
    return groups[: x.shape[0], None] == groups[None, x.shape[0] :]


def _direct_distances(x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(P,) |x_r - y_c| for the listed pairs from cdist's direct kernel (no Gram form) on just the rows and columns
    they involve: O(|R| |C| D) time, O(|R| |C|) memory; differentiable, with gradient 0 at distance 0."""
    row_ids, row_pos = torch.unique(rows, return_inverse=True)
    col_ids, col_pos = torch.unique(cols, return_inverse=True)
    block = torch.cdist(x[row_ids], y[col_ids], compute_mode="donot_use_mm_for_euclid_dist")  # (|R|, |C|)
    return block[row_pos, col_pos]


def _nonzero_or_none(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    rows, cols = mask.nonzero(as_tuple=True)
    return (rows, cols) if rows.numel() else None


def _with_exact_near_pairs(mat: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                           max_sq_norm: float | None) -> torch.Tensor:
    """`mat` (N, M), Euclidean distances from a Gram product, with the entries within rounding noise of 0 replaced:
    by 0 between equal rows, by cdist's direct values otherwise; for a batch against itself (`y is x`), the
    diagonal is 0 too. `max_sq_norm`: a bound on the rows' squared norms, None to compute it.

    Without autograd (miners) `mat` is corrected in place; with it, out of place (cdist's backward needs its
    output), with cdist's convention of gradient 0 at distance 0."""
    if mat.numel() == 0:
        return mat
    symmetric = y is x
    differentiable = torch.is_grad_enabled() and mat.requires_grad
    with torch.no_grad():
        max_sq = max_sq_norm
        if max_sq is None:
            max_sq = float(x.norm(dim=1).amax()) ** 2
            if not symmetric:
                max_sq = max(max_sq, float(y.norm(dim=1).amax()) ** 2)
        # mat itself, unless its diagonal is to change out of place
        search = mat.detach().clone() if differentiable and symmetric else mat.detach()
        if symmetric:
            search.fill_diagonal_(torch.inf)  # self-distances are set to 0 below; out of the search meanwhile
        near = _near_mask(search, x, max_sq, root=True)
        equal = pairs = None
        if near is not None:
            equal = _equal_rows(x, y)  # (N, M); includes the diagonal of a batch against itself
            distinct = near & ~equal
            # Both orders of a self pair: the matrix must stay symmetric whichever order rounding put below.
            pairs = _nonzero_or_none(distinct | distinct.T if symmetric else distinct)
        if not differentiable:
            if symmetric:
                search.fill_diagonal_(0)
            if equal is not None:
                search.masked_fill_(equal, 0)
            if pairs is not None:
                search[pairs] = _direct_distances(x, y, *pairs)
            return mat
    if equal is not None:
        mat = mat.masked_fill(equal, 0)
    elif symmetric:
        mat = torch.diagonal_scatter(mat, mat.new_zeros(mat.shape[0]))
    return mat if pairs is None else mat.index_put(pairs, _direct_distances(x, y, *pairs))


class _SelfEuclidean(torch.autograd.Function):
    """u = x / max(|x|, eps) (or u = x), d_ij = sqrt(|u_i|^2 + |u_j|^2 - 2 u_i.u_j), the entries within rounding
    noise of 0 replaced (0 between equal rows, cdist's direct kernel otherwise); d d_ij / d u_i = (u_i - u_j) / d_ij,
    taken as 0 where d_ij = 0 (the diagonal, equal rows), as `cdist` does."""

    @staticmethod
    def forward(ctx, x, normalize):  # type: ignore[no-untyped-def, override]
        norm = x.norm(dim=1, keepdim=True) if normalize else None  # (B, 1)
        u = x / norm.clamp_min(_NORM_EPS) if norm is not None else x
        sq = (u * u).sum(1)  # (B,)
        sq_dist = torch.addmm(sq[:, None] + sq[None, :], u, u.T, alpha=-2)  # (B, B)
        # The diagonal is set to exactly 0 below; +inf keeps it out of the near-pair search meanwhile.
        sq_dist.fill_diagonal_(torch.inf)
        # Normalised rows have |u| <= 1: no reduction needed for the bound.
        max_sq = 1.0 if normalize or sq.numel() == 0 else float(sq.amax())
        near = _near_mask(sq_dist, u, max_sq)  # the diagonal is +inf: never near
        # No clamp before the root: every entry the Gram form could have rounded below 0 is near, and replaced.
        # So the only zeros are on the diagonal and between equal rows (the backward relies on it).
        equal = pairs = None
        if near is None:
            dist = sq_dist.sqrt_()
            dist.fill_diagonal_(0)
        else:
            equal = _equal_rows(u, u)  # (B, B), the diagonal included
            # Ones under the root, zeros after: on the CPU a root of 0 (or of a negative) is ten times slower than
            # of 1, and a collapsed batch has B^2 of them.
            dist = sq_dist.masked_fill_(equal, 1).clamp_min_(0).sqrt_().masked_fill_(equal, 0)
            distinct = near & ~equal
            pairs = _nonzero_or_none((distinct | distinct.T).triu_(1))  # (i < j), whichever order was near
            if pairs is not None:
                exact = _direct_distances(u, u, *pairs)
                dist[pairs] = exact
                dist[pairs[::-1]] = exact
        ctx.save_for_backward(u, dist, norm)
        # Neither inputs nor outputs, so kept on ctx: the (B, B) mask of equal rows and the near pairs of distinct
        # rows (i < j), or None.
        ctx.equal, ctx.pairs = equal, pairs
        ctx.normalize = normalize
        return dist

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        u, dist, norm = ctx.saved_tensors
        equal, pairs = ctx.equal, ctx.pairs
        # Zero distances lie on the diagonal or between equal rows (see forward): their weights are overwritten,
        # as cdist's gradient is 0 there.
        weight = grad / dist  # (B, B)
        if equal is None:
            weight.fill_diagonal_(0)
        else:
            weight.masked_fill_(equal, 0)
        if pairs is not None:  # near pairs of distinct rows: through their direct computation below
            pair_grad = grad[pairs] + grad[pairs[::-1]]  # (P,) d loss / d d_ij, both orders
            weight[pairs] = 0
            weight[pairs[::-1]] = 0
        sym = weight + weight.T
        # Σ_j w_ij (u_i - u_j) + Σ_j w_ji (u_i - u_j) = u_i Σ_j sym_ij - (sym @ u)_i
        grad_u = u * sym.sum(1, keepdim=True) - sym @ u  # (B, D)
        if pairs is not None:
            with torch.enable_grad():
                leaf = u.detach().requires_grad_(True)
                exact = _direct_distances(leaf, leaf, *pairs)
                grad_u = grad_u + torch.autograd.grad(exact, leaf, pair_grad)[0]
        if not ctx.normalize:
            return grad_u, None
        # Through u = x / |x|: remove the radial component and divide by |x| (below eps, u = x / eps is linear).
        radial = u * (u * grad_u).sum(1, keepdim=True)
        grad_x = torch.where(norm > _NORM_EPS, (grad_u - radial) / norm.clamp_min(_NORM_EPS), grad_u / _NORM_EPS)
        return grad_x, None
