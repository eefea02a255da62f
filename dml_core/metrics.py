"""Retrieval metrics of an embedding space: recall@K, precision@1, R-precision, MAP@R and (optionally) NMI.

Every embedding is a query and the same set is the reference set, the query itself excluded (Musgrave et al., "A
Metric Learning Reality Check", and PML's `AccuracyCalculator` with `ref_includes_query=True`). Neighbours are
ranked by Euclidean distance on the embeddings as given (PML's default; nothing is normalised here), nearest first;
equal distances (duplicated embeddings) are ranked by increasing index, faiss's order and so PML's.

For a query with R same-class references:
- recall@K: 1 if one of its K nearest neighbours shares its class, else 0 (the DML papers' "Recall@K").
- precision@1: 1 if its nearest neighbour shares its class (equal to recall@1).
- r_precision: the fraction of its R nearest neighbours that share its class.
- map@r: sum over positions i <= R whose neighbour shares the class of (precision at i), divided by R.
Each metric is the mean over queries. Conventions (all as PML's AccuracyCalculator, which has no recall@K):
- A query whose class has no other member (R = 0, a "lone" query) cannot be scored and is left out of every
  metric's mean; if every query is lone, every retrieval metric is NaN.
- R-precision and MAP@R look R deep for every query, however large its class: memory is O(N * k), k the largest
  class size minus one (PML's AccuracyCalculator on the CPU, whose default k is every reference, gives the same
  values). `max_k` caps that depth, and so the memory: for a class with more than max_k + 1 members, R-precision
  becomes precision@max_k and MAP@R sums only the first max_k positions but still divides by R (a lower bound):
  exactly PML's AccuracyCalculator(k=max_k), which is also what PML computes on a GPU, where faiss returns at most
  1,024 or 2,048 neighbours.
- recall@K for K >= N - 1 sees every reference, so it equals recall@(N - 1); the key keeps the K asked for.
- Ties: neighbours at exactly equal distances rank by index. Distances that differ by less than float32 rounding
  (~1e-7 relative) rank as our float32 arithmetic rounds them, which can differ from faiss's: in the benchmark, 28
  of 20,000 queries ranked such a pair differently from PML, moving the metrics by < 1e-7.

The neighbours come from an exact search (dml_core._knn): on the CPU, matmuls over the upper triangle of a block
grid (each pair once, half of faiss's flops) screened into faiss's heaps; on an accelerator, chunked matmul +
topk (`backend=KnnBackend.TORCH`, selectable on the CPU too). Each query is searched only as deep as its metrics
need (R, or min(R, max_k), and max(ks) for recall@K). NMI: faiss k-means with one cluster per class (20
iterations, as PML), seeded, against the labels, normalised by the arithmetic mean of the two entropies
(sklearn's default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from dml_core._knn import KnnBackend, _faiss, default_backend, nearest_neighbors

__all__ = ["KnnBackend", "normalized_mutual_info", "retrieval_metrics"]


def retrieval_metrics(
    embeddings: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    *,
    ks: Sequence[int] = (1, 2, 4, 8),
    include_nmi: bool = False,
    backend: KnnBackend | str | None = None,
    max_k: int | None = None,
    nmi_seed: int = 1234,
) -> dict[str, float]:
    """Metrics of (N, D) embeddings (torch or numpy, any float dtype, compared in float32) with (N,) integer
    labels: `recall@K` for each K in `ks`, `precision@1`, `r_precision`, `map@r`, and `nmi` when `include_nmi`.

    backend: the k-NN search, KnnBackend or its name; default FAISS for CPU embeddings, TORCH otherwise (both give
        the same values). max_k: None (R-precision and MAP@R look R deep), or a cap on that depth, which bounds
        the memory (see the module docstring). nmi_seed: the k-means seed; 1234 is faiss's default and so PML's.
    Raises ValueError naming the argument for a bad shape, dtype or value, TypeError for a non-array input.
    """
    x, y = _as_tensors(embeddings, labels)
    ks = _checked_ks(ks)
    if max_k is not None and (isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 1):
        raise ValueError(f"max_k must be None or a positive int, got {max_k=}")
    knn_backend = default_backend(x) if backend is None else _checked_backend(backend)

    # numpy from here on: the (N, k) bookkeeping is a handful of small passes, where numpy has less overhead.
    _, class_of = np.unique(y.numpy(), return_inverse=True)  # (N,) contiguous 0..C-1
    class_sizes = np.bincount(class_of)
    same_class_refs = class_sizes[class_of] - 1  # (N,) R of each query
    scored = same_class_refs > 0  # (N,) lone queries are left out
    r_needed = same_class_refs if max_k is None else np.minimum(same_class_refs, max_k)  # (N,) depth for R metrics
    r_depth = int(r_needed.max())

    out: dict[str, float]
    if not scored.any():
        out = {name: math.nan for name in [*(f"recall@{k}" for k in ks), "precision@1", "r_precision", "map@r"]}
    else:
        # Each scored query needs its R (or max_k) nearest for R-precision and MAP@R and max(ks) for recall@K;
        # lone queries need none.
        depth = np.where(scored, np.minimum(np.maximum(r_needed, max(ks)), len(y) - 1), 0)
        neighbors = nearest_neighbors(x, depth, knn_backend, groups=class_of).numpy()[scored]  # (Q, max depth)
        hits = (neighbors >= 0) & (class_of[neighbors] == class_of[scored][:, None])  # neighbour shares the class
        refs = same_class_refs[scored]  # (Q,)
        out = {f"recall@{k}": _recall_at(hits, k) for k in ks}
        out["precision@1"] = _precision_at_1(hits)
        relevant = hits[:, :r_depth] & (np.arange(r_depth)[None, :] < refs[:, None])  # (Q, r) hits within R
        out["r_precision"] = _r_precision(relevant, refs)
        out["map@r"] = _map_at_r(relevant, refs)
    if include_nmi:
        clusters = _kmeans_assignments(x, len(class_sizes), nmi_seed)
        out["nmi"] = normalized_mutual_info(class_of, clusters)
    return out


def _recall_at(hits: np.ndarray, k: int) -> float:
    return float(hits[:, :k].any(1).mean())


def _precision_at_1(hits: np.ndarray) -> float:
    return float(hits[:, 0].mean())


def _r_precision(relevant: np.ndarray, refs: np.ndarray) -> float:
    """Hits among the first min(R, depth) neighbours over min(R, depth) (PML's denominator when capped)."""
    return float((np.count_nonzero(relevant, axis=1) / np.minimum(refs, relevant.shape[1])).mean())


def _map_at_r(relevant: np.ndarray, refs: np.ndarray) -> float:
    """Sum of precision@i over the hit positions i within R, over R (also when the depth cap cuts R short)."""
    hits_so_far = np.cumsum(relevant, axis=1, dtype=np.int32)  # (Q, r)
    precision_at_i = hits_so_far / np.arange(1, relevant.shape[1] + 1)  # (Q, r) float64
    return float(((precision_at_i * relevant).sum(1) / refs).mean())


def _kmeans_assignments(x: torch.Tensor, n_clusters: int, seed: int) -> np.ndarray:
    """Cluster of each embedding: faiss k-means with PML's settings (20 iterations, faiss's subsampling)."""
    data = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
    # min_points_per_centroid=1 only silences faiss's "too few points" warning; it does not change the result.
    kmeans = _faiss().Kmeans(data.shape[1], n_clusters, niter=20, seed=seed, min_points_per_centroid=1)
    kmeans.train(data)
    _, assigned = kmeans.index.search(data, 1)  # (N, 1)
    return assigned[:, 0]


def normalized_mutual_info(labels: np.ndarray, clusters: np.ndarray) -> float:
    """NMI with the arithmetic-mean normaliser, natural log (sklearn's default `normalized_mutual_info_score`):
    two single-block partitions score 1, independent partitions 0. O(N) memory: only non-empty cells are counted."""
    labels, clusters = np.asarray(labels).ravel(), np.asarray(clusters).ravel()
    if labels.shape != clusters.shape:
        raise ValueError(f"labels and clusters must have the same length, got {labels.shape=}, {clusters.shape=}")
    _, a = np.unique(labels, return_inverse=True)
    _, b = np.unique(clusters, return_inverse=True)
    n_a, n_b = int(a.max(initial=-1)) + 1, int(b.max(initial=-1)) + 1
    if n_a == n_b and n_a <= 1:
        return 1.0  # both partitions put everything in one block (or are empty): identical
    n = len(a)
    cells, joint = np.unique(a.astype(np.int64) * n_b + b, return_counts=True)  # non-empty contingency cells
    row, col = np.bincount(a), np.bincount(b)
    ca, cb = row[cells // n_b], col[cells % n_b]
    mutual = float(np.sum(joint / n * (np.log(joint) + math.log(n) - np.log(ca) - np.log(cb))))
    if mutual <= 0.0:
        return 0.0  # rounding can leave a tiny negative for independent partitions
    return mutual / ((_entropy(row, n) + _entropy(col, n)) / 2)


def _entropy(counts: np.ndarray, n: int) -> float:
    p = counts[counts > 0] / n
    return float(-(p * np.log(p)).sum())


def _as_tensors(embeddings: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated (N, D) float32 embeddings (device kept) and (N,) int64 CPU labels."""
    x = _as_tensor(embeddings, "embeddings")
    y = _as_tensor(labels, "labels")
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"embeddings must be a 2-D (N, D) array with D >= 1, got shape={tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"embeddings must be floating point, got dtype={x.dtype}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"labels must be 1-D with one label per embedding (N={len(x)}), got shape={tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex():
        raise ValueError(f"labels must be integers, got dtype={y.dtype}")
    if len(x) < 2:
        raise ValueError(f"retrieval needs at least 2 embeddings, got N={len(x)}")
    x = x.detach().float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("embeddings contain NaN or infinite values")
    return x, y.detach().to("cpu", torch.int64)


def _as_tensor(value: object, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def _checked_ks(ks: Sequence[int]) -> tuple[int, ...]:
    values = tuple(ks)
    valid = all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1 for k in values)
    if not values or not valid or len(set(values)) != len(values):
        raise ValueError(f"ks must be distinct positive integers, got {ks=}")
    return tuple(int(k) for k in values)


def _checked_backend(backend: KnnBackend | str) -> KnnBackend:
    try:
        return KnnBackend(backend)
    except ValueError:
        options = ", ".join(b.value for b in KnnBackend)
        raise ValueError(f"backend must be one of {options}, got {backend=}") from None
