"""Exact nearest neighbours of every embedding among the others (query set = reference set).

One contract, two backends: `nearest_neighbors(x, depth, backend)` returns (N, max depth) int64 indices on the
CPU; row i holds the depth[i] embeddings closest to x[i] in Euclidean distance, x[i] itself excluded, nearest
first, equal distances (duplicated embeddings) in increasing index order, then -1s. That is faiss's
`IndexFlatL2` order, which PML's AccuracyCalculator uses, so the label sequences (and every metric built on them)
agree with PML.

Both backends rank row i by the key `|x_j|^2 / 2 - x_i . x_j` (= (d_ij^2 - |x_i|^2) / 2: the row's own norm is a
constant that cannot change its order), smallest first, computed in float32 as `half[j] - dot` with the dot product
from a matrix product, so a pair's key does not depend on which block it was computed in. Candidates closer than
float32 rounding (~1e-7 relative) are ranked as that rounding falls, which may differ from faiss's own float32
arithmetic. Memory is O(N * depth) plus a few blocks of similarities: never the N x N matrix.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import faiss
import numpy as np
import torch

__all__ = ["KnnBackend", "default_backend", "nearest_neighbors"]

# Side of the square similarity blocks of the faiss backend: 1024^2 float32 = 4 MiB per buffer, so a worker's block
# stays in the last-level cache between the matmul and the passes that read it, while the (N / 1024)^2 / 2 blocks
# keep the Python overhead per block small next to its matmul.
_FAISS_BLOCK = 1024
# Entries of one (rows, N) similarity chunk of the torch backend: 2^25 float32 = 128 MiB, small next to a GPU's
# memory and large enough that each chunk is one big matmul.
_TORCH_CHUNK_ELEMENTS = 1 << 25
# Width of the diagonal tiles whose nearest candidates seed the heaps. A seed of w candidates costs a few ns per
# candidate and row; the heap insertions that follow number about (k + 1) * ln(N / w) per row, at tens of ns each:
# w of a few hundred balances the two for k in the tens.
_SEED_TILE = 256
# A block direction whose screen lets more than this fraction of entries through is offered to the heaps whole (a
# tight C loop, ~1 ns an entry) instead of entry by entry (~20 ns of numpy bookkeeping per survivor); offering the
# columns' side whole also costs a transpose, hence its higher break-even.
_DENSE_FRACTION_ROWS = 0.04
_DENSE_FRACTION_COLUMNS = 0.1
# Relative slack of the screen: far above float32 rounding of the keys (~1e-7), so no admissible entry is screened
# out, and small enough to let hardly any extra entry through.
_SCREEN_SLACK = 1e-5


class KnnBackend(enum.Enum):
    """How the neighbours are found; both give the same neighbours in the same order."""

    # CPU: matmuls over the upper triangle of the block grid (each pair's dot product computed once and used by
    # both of its rows: half the flops), screened against each row's current k-th key, into faiss's heaps.
    FAISS = "faiss"
    # Any device (the GPU path): chunks of query rows, one matmul against all references, then topk.
    TORCH = "torch"


def default_backend(x: torch.Tensor) -> KnnBackend:
    """TORCH for embeddings on an accelerator (no copy to the host, fast topk there), FAISS on the CPU."""
    return KnnBackend.FAISS if x.device.type == "cpu" else KnnBackend.TORCH


def nearest_neighbors(x: torch.Tensor, depth: int | np.ndarray, backend: KnnBackend, *,
                      groups: np.ndarray | None = None) -> torch.Tensor:
    """(N, D) float embeddings -> (N, max depth) int64 CPU: row i's depth[i] nearest other rows, then -1s.

    `depth` is one int for every row or an (N,) array in [0, N - 1] (rows needing fewer neighbours cost less).
    `groups` (N,) is an optional hint (e.g. class labels): rows of one group are probably near each other. The
    FAISS backend then meets each row's likely neighbours first, which saves work; the result does not change.
    """
    n = x.shape[0]
    depths = np.array(np.broadcast_to(np.asarray(depth, dtype=np.int64), (n,)))  # (N,) a writable copy
    if n == 0 or depths.min() < 0 or depths.max() > n - 1:
        raise ValueError(f"depth must be in [0, N - 1] for N={n} embeddings, got {depth=}")
    if depths.max() == 0:
        return torch.empty(n, 0, dtype=torch.int64)
    if backend is KnnBackend.FAISS:
        x = x.detach().to("cpu", torch.float32).contiguous()
        hint = _cluster_order(x, _FAISS_BLOCK) if groups is None else np.argsort(groups, kind="stable")
        return _faiss_symmetric(x, depths, _FAISS_BLOCK, hint)
    neighbors = _torch_chunked(x.detach().float(), int(depths.max()), _TORCH_CHUNK_ELEMENTS).cpu()
    return neighbors.masked_fill_(torch.arange(neighbors.shape[1]) >= torch.from_numpy(depths)[:, None], -1)


# ---- FAISS backend: symmetric block matmuls + screened heap updates ------------------------------------------


def _faiss_symmetric(x: torch.Tensor, depth: int | np.ndarray, block: int,
                     hint: np.ndarray | None = None) -> torch.Tensor:
    """Blocks (I, J) of side `block`: one matmul per block I < J updates the heaps of block I's rows (candidates
    from J) and of block J's rows (candidates from I, the transpose): half the flops of a plain search.

    1. Rows are visited in the `hint` order (default: as given), ideally one that keeps nearby points together
    (see _cluster_order), grouped by heap size; 2. each diagonal block seeds its rows' heaps with their nearest
    candidates in a small diagonal tile, so every row has a k-th key to beat before the bulk of the work; 3. all
    blocks are screened against the rows' current k-th keys, so only the entries that can still enter a heap are
    offered; worker threads take blocks that touch disjoint rows (faiss, numpy and torch release the GIL). A heap
    keeps at least depth + 1 entries: a row whose (depth+1)-th key equals its depth-th may have lost a tied
    candidate to arrival order and is recomputed whole (see _exact_rows); otherwise arrival order cannot change
    the result.
    """
    n = x.shape[0]
    depths = np.broadcast_to(np.asarray(depth, dtype=np.int64), (n,))
    capacity = _heap_capacity(depths, n)
    hint = np.arange(n) if hint is None else np.asarray(hint, dtype=np.int64)
    order = hint[np.argsort(capacity[hint], kind="stable")]  # (N,) position -> row: by heap size, then hint
    search = _BlockSearch(x[torch.from_numpy(order)], order, capacity[order], block)
    _run_blocks(search.process, -(-n // block))
    neighbors = np.full((n, int(depths.max())), -1, dtype=np.int64)
    tied: list[np.ndarray] = []
    for start, keys, ids in search.heaps.sorted_segments():  # rows in search order, ids original
        rows = order[start : start + len(keys)]
        need = depths[rows]  # (m,)
        width = min(ids.shape[1], neighbors.shape[1])
        neighbors[rows, :width] = np.where(np.arange(width) < need[:, None], ids[:, :width], -1)
        has_next = (need > 0) & (need < ids.shape[1])  # the heap holds the (depth+1)-th key to compare with
        at = np.flatnonzero(has_next)
        tied.append(rows[at[keys[at, need[at]] == keys[at, need[at] - 1]]])
    redo = np.concatenate(tied)
    if len(redo):
        neighbors[redo] = _exact_rows(x, redo, depths[redo], neighbors.shape[1])
    return torch.from_numpy(neighbors)


def _heap_capacity(depths: np.ndarray, n: int) -> np.ndarray:
    """(N,) heap size per row: depth + 1 (one more to see ties at the last place), rounded up to a multiple of
    8 so rows fall into few groups of equal size (one faiss heap array each), at most N - 1; 0 for depth 0."""
    capacity = np.minimum(-(-(depths + 1) // 8) * 8, n - 1)
    return np.where(depths > 0, capacity, 0)


def _cluster_order(x: torch.Tensor, block: int) -> np.ndarray:
    """(N,) a permutation that groups nearby rows: faiss k-means into clusters of about a seed tile each, trained
    one-threaded on a subsample (milliseconds; the order only has to be useful, any order gives the same result).
    Near candidates then reach each heap first, which saves heap updates later."""
    n = x.shape[0]
    if n <= block:
        return np.arange(n)
    data = x.numpy()
    kmeans = faiss.Kmeans(data.shape[1], -(-n // _SEED_TILE), niter=8, seed=1234, max_points_per_centroid=32,
                          min_points_per_centroid=1)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # tiny work: OpenMP start-up would cost more than it saves
    try:
        kmeans.train(data)
        _, assigned = kmeans.index.search(data, 1)  # (N, 1)
    finally:
        faiss.omp_set_num_threads(threads)
    return np.argsort(assigned[:, 0], kind="stable")


def _round_robin(n_blocks: int) -> list[list[tuple[int, int]]]:
    """Rounds of block pairs I < J, each block at most once per round, every pair once (the circle method)."""
    m = n_blocks + n_blocks % 2  # an odd count gets a dummy block (a bye)
    rounds = []
    for r in range(m - 1):
        pairs = [(r, m - 1)] + [((r + i) % (m - 1), (r - i) % (m - 1)) for i in range(1, m // 2)]
        rounds.append([(min(a, b), max(a, b)) for a, b in pairs if max(a, b) < n_blocks])
    return rounds


def _run_blocks(process: Callable[[int, int], None], n_blocks: int) -> None:
    """process(I, J) for every block pair I <= J: the diagonal (seeding) blocks first, then the others in
    round-robin order, on worker threads (one per torch thread). A pair starts as soon as neither of its blocks is
    in use (two tasks on one block would update the same heap rows) and, off the diagonal, both are seeded. Each
    worker runs one-threaded kernels, so the workers own the cores instead of competing OpenMP pools."""
    pending = [(b, b) for b in range(n_blocks)] + [pair for pairs in _round_robin(n_blocks) for pair in pairs]
    workers = min(torch.get_num_threads(), n_blocks)
    if workers <= 1:
        faiss_threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # add_sparse needs one-threaded faiss; this thread's setting only
        try:
            for pair in pending:
                process(*pair)
        finally:
            faiss.omp_set_num_threads(faiss_threads)
        return
    torch_threads = torch.get_num_threads()
    running: dict[Future[None], tuple[int, int]] = {}
    busy: set[int] = set()
    seeded: set[int] = set()
    try:
        with ThreadPoolExecutor(workers, initializer=_one_thread_per_kernel) as pool:
            while pending or running:
                for pair in _startable(pending, busy, seeded, workers - len(running)):
                    pending.remove(pair)
                    busy.update(pair)
                    running[pool.submit(process, *pair)] = pair
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # re-raise a worker's error
                    i, j = running.pop(future)
                    busy.difference_update((i, j))
                    if i == j:
                        seeded.add(i)
    finally:
        torch.set_num_threads(torch_threads)  # the workers lowered torch's default for new threads; restore it


def _startable(pending: list[tuple[int, int]], busy: set[int], seeded: set[int],
               slots: int) -> list[tuple[int, int]]:
    """Up to `slots` pending pairs, first come first, whose blocks are not busy, not shared between the chosen
    pairs, and (off the diagonal) already seeded."""
    chosen: list[tuple[int, int]] = []
    taken = set(busy)
    for i, j in pending:
        if len(chosen) == slots:
            break
        if i in taken or j in taken or (i != j and not (i in seeded and j in seeded)):
            continue
        chosen.append((i, j))
        taken.update((i, j))
    return chosen


def _one_thread_per_kernel() -> None:
    # torch's intra-op and MKL threads and faiss's OpenMP threads are per calling thread here.
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)


def _exact_rows(x: torch.Tensor, rows: np.ndarray, depths: np.ndarray, width: int) -> np.ndarray:
    """(len(rows), width) the rows' neighbours from one full row of keys each, ties by index, -1 past depth."""
    half = (x * x).sum(1).mul_(0.5)  # (N,) as _BlockSearch computes it
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for start in range(0, len(rows), 256):
        r = torch.from_numpy(rows[start : start + 256])
        keys = torch.sub(half[None, :], x[r] @ x.T)  # (c, N)
        keys[torch.arange(len(r)), r] = float("inf")
        best = _smallest_in_index_order(keys, width).numpy()
        need = depths[start : start + 256]
        out[start : start + len(r)] = np.where(np.arange(width) < need[:, None], best, -1)
    return out


class _BlockSearch:
    """The shared state of one search: embeddings in search order, their original row ids, half squared norms,
    heaps (indexed by search position, holding original ids); per-thread block buffers."""

    def __init__(self, x: torch.Tensor, ids: np.ndarray, capacity: np.ndarray, block: int) -> None:
        self.x = x  # (N, D) search order
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)  # (N,) original row of each position
        self.half = (x * x).sum(1).mul_(0.5).numpy()  # (N,) |x_j|^2 / 2
        self.slack_floor = 3.0 * float(self.half.max(initial=0.0))  # bounds |half_j - dot| for any pair
        self.heaps = _RowHeaps(capacity)
        self.block = block
        self.buffers = threading.local()

    def process(self, bi: int, bj: int) -> None:
        """One block pair: the diagonal ones seed, the others update both sides."""
        if bi == bj:
            self.seed(bi)
        else:
            self.run(bi, bj)

    def seed(self, b: int) -> None:
        """Diagonal block: each row's nearest candidates within its tile of the diagonal seed its empty heap, then
        the rest of the block is screened like any other block."""
        i0 = b * self.block
        rows = self.x[i0 : i0 + self.block]
        sim = self._buffer("sim", (len(rows), len(rows)))
        torch.mm(rows, rows.T, out=sim)
        dots = sim.numpy()
        for t0 in range(0, len(rows), _SEED_TILE):
            tile = slice(t0, min(t0 + _SEED_TILE, len(rows)))
            keys = self.half[i0 + tile.start : i0 + tile.stop][None, :] - dots[tile, tile]  # (t, t)
            np.fill_diagonal(keys, np.inf)  # a query is not its own neighbour
            local = np.broadcast_to(np.arange(keys.shape[1]), keys.shape)
            most = int(self.heaps.capacity[i0 + tile.start : i0 + tile.stop].max())
            if keys.shape[1] > most:  # the heaps keep at most `most` candidates anyway: hand them only those
                local = np.argpartition(keys, most - 1, axis=1)[:, :most] if most else local[:, :0]
                keys = np.take_along_axis(keys, local, axis=1)
            self.heaps.add_rows(keys, self.ids[i0 + tile.start + local], row0=i0 + tile.start)
            dots[tile, tile] = -np.inf  # offered: the screen below must not offer these again
        if len(rows) > _SEED_TILE:
            self._offer_rows(dots, i0, i0)

    def run(self, bi: int, bj: int) -> None:
        i0, j0 = bi * self.block, bj * self.block
        rows, cols = self.x[i0 : i0 + self.block], self.x[j0 : j0 + self.block]
        sim = self._buffer("sim", (len(rows), len(cols)))
        torch.mm(rows, cols.T, out=sim)  # (bi, bj) dot products, each pair once
        dots = sim.numpy()
        self._offer_columns(dots, i0, j0)  # block J's rows first: the next step may overwrite `dots`
        self._offer_rows(dots, i0, j0)

    def _offer_rows(self, dots: np.ndarray, i0: int, j0: int) -> None:
        """Rows of block I, candidates from block J: keys half[j] - dots[r, c]."""
        n_rows, n_cols = dots.shape
        half_cols = self.half[j0 : j0 + n_cols]
        floor = self._floor(half_cols, i0, n_rows)[:, None]
        passed = _passing(dots, floor, _DENSE_FRACTION_ROWS, self._buffer("passed", dots.shape, torch.bool))
        if passed is None:
            keys = np.subtract(half_cols[None, :], dots, out=dots)
            self.heaps.add_dense(keys, self.ids[j0 : j0 + n_cols], row0=i0)
            return
        r, c, dot = passed  # by row (row-major order): the heaps are split into runs of rows
        self.heaps.add_sparse(r + i0, half_cols[c] - dot, self.ids[c + j0])

    def _offer_columns(self, dots: np.ndarray, i0: int, j0: int) -> None:
        """Rows of block J, candidates from block I: keys half[i] - dots[r, c], read down column c."""
        n_rows, n_cols = dots.shape
        half_rows = self.half[i0 : i0 + n_rows]
        floor = self._floor(half_rows, j0, n_cols)[None, :]
        passed = _passing(dots, floor, _DENSE_FRACTION_COLUMNS, self._buffer("passed", dots.shape, torch.bool))
        if passed is None:
            keys_t = self._buffer("keys_t", (n_cols, n_rows))
            keys_t.copy_(torch.from_numpy(dots).T)  # torch transposes faster than numpy
            keys = np.subtract(half_rows[None, :], keys_t.numpy(), out=keys_t.numpy())
            self.heaps.add_dense(keys, self.ids[i0 : i0 + n_rows], row0=j0)
            return
        r, c, dot = _sorted_by(passed[1], *passed)  # by column: its heap is then updated while in cache
        self.heaps.add_sparse(c + j0, half_rows[r] - dot, self.ids[r + i0])

    def _floor(self, half_candidates: np.ndarray, row0: int, n_rows: int) -> np.ndarray:
        """(n_rows,) dot products at or below this cannot beat the row's current largest kept key (tau): a
        candidate enters only if half[j] - dot < tau, i.e. dot > half[j] - tau >= min(half) - tau; minus a slack
        for rounding. -inf (all pass) while a heap is not full (tau = inf), +inf for rows without a heap."""
        tau = self.heaps.largest_keys(row0, n_rows)
        slack = _SCREEN_SLACK * (np.where(np.isfinite(tau), np.abs(tau), 0) + self.slack_floor)
        return (half_candidates.min() - tau) - slack

    def _buffer(self, name: str, shape: tuple[int, int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A per-thread scratch tensor, reused across blocks (fresh pages would cost more than the work)."""
        store = self.buffers.__dict__
        flat = store.get(name)
        if flat is None:
            flat = store[name] = torch.empty(self.block * self.block, dtype=dtype)
        return flat[: shape[0] * shape[1]].view(shape)


def _passing(dots: np.ndarray, floor: np.ndarray, dense_fraction: float,
             scratch: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(r, c, dots[r, c]) of the entries above `floor` ((rows, 1) or (1, cols)), in row-major order, or None when
    more than `dense_fraction` of the entries pass (then offering the whole block is cheaper)."""
    passed = scratch.numpy()  # (rows, cols) bool
    np.greater(dots, floor, out=passed)
    if np.count_nonzero(passed) > dense_fraction * passed.size:
        return None
    flat = np.flatnonzero(passed)
    r, c = np.divmod(flat, dots.shape[1])
    return r, c, dots.reshape(-1)[flat]


def _sorted_by(key: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """`arrays` reordered by a small non-negative int key (stable; a radix sort when the key fits 16 bits)."""
    order = np.argsort(key.astype(np.uint16) if key.size and key.max() < 1 << 16 else key, kind="stable")
    return tuple(a[order] for a in arrays)


class _RowHeaps:
    """Per-row heaps of the `capacity[r]` smallest (key, id) pairs offered so far, for rows in search order.
    Rows of equal capacity are contiguous (the search sorts them so); each run is one faiss heap array, all of them
    views of one flat buffer, so every row's largest kept key can be read in one gather. Methods take absolute row
    positions and split them over the runs."""

    def __init__(self, capacity: np.ndarray) -> None:
        self.capacity = capacity  # (N,) non-decreasing
        self.starts = np.flatnonzero(np.diff(capacity, prepend=-1))  # (S,) first row of each run
        offsets = np.concatenate([[0], np.cumsum(capacity)])  # (N + 1,) where each row's heap begins
        self.keys = np.full(int(offsets[-1]) + 1, -np.inf, dtype=np.float32)  # the last slot: "no heap"
        self.ids = np.full(int(offsets[-1]), -1, dtype=np.int64)
        self.top = np.where(capacity > 0, offsets[:-1], len(self.keys) - 1)  # (N,) index of each row's largest
        stops = [*self.starts[1:].tolist(), len(capacity)]
        self.runs: list[_TopKHeaps | None] = []
        for start, stop in zip(self.starts.tolist(), stops):
            k, base = int(capacity[start]), int(offsets[start])
            size = (stop - start) * k
            self.runs.append(_TopKHeaps(self.keys[base : base + size].reshape(-1, k),
                                        self.ids[base : base + size].reshape(-1, k)) if k else None)

    def largest_keys(self, row0: int, n_rows: int) -> np.ndarray:
        """(n_rows,) the largest kept key of each row: inf while its heap is not full, -inf without a heap."""
        return self.keys[self.top[row0 : row0 + n_rows]]

    def add_dense(self, keys: np.ndarray, ids: np.ndarray, *, row0: int) -> None:
        """Offer a contiguous (rows, cols) block of keys to rows row0..; `ids` (cols,) the same for every row."""
        for run, start, lo, hi in self._pieces(row0, keys.shape[0]):
            run.add_dense(keys[lo - row0 : hi - row0], ids, row0=lo - start)

    def add_rows(self, keys: np.ndarray, ids: np.ndarray, *, row0: int) -> None:
        """Offer (rows, m) keys with their own (rows, m) ids to rows row0.."""
        for run, start, lo, hi in self._pieces(row0, keys.shape[0]):
            run.add_rows(keys[lo - row0 : hi - row0], ids[lo - row0 : hi - row0], row0=lo - start)

    def add_sparse(self, rows: np.ndarray, keys: np.ndarray, ids: np.ndarray) -> None:
        """Offer candidates (rows[e], keys[e], ids[e]), `rows` absolute and non-decreasing."""
        if len(rows) == 0:
            return
        for run, start, lo, hi in self._pieces(int(rows[0]), int(rows[-1]) + 1 - int(rows[0])):
            a, b = np.searchsorted(rows, [lo, hi])
            run.add_sparse(rows[a:b] - start, keys[a:b], ids[a:b])

    def sorted_segments(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(first row, keys, ids) of each run with heaps, each row by increasing (key, id)."""
        return [(int(start), *run.sorted()) for start, run in zip(self.starts.tolist(), self.runs) if run]

    def _pieces(self, row0: int, n_rows: int) -> list[tuple[_TopKHeaps, int, int, int]]:
        """(run, its first row, lo, hi) for each run with heaps that holds rows lo..hi-1 of [row0, row0 + n_rows)."""
        first = int(np.searchsorted(self.starts, row0, side="right")) - 1
        last = int(np.searchsorted(self.starts, row0 + n_rows, side="left"))
        bounds = [row0, *self.starts[first + 1 : last].tolist(), row0 + n_rows]
        pieces = []
        for s in range(len(bounds) - 1):
            run = self.runs[first + s]
            if run is not None:
                pieces.append((run, int(self.starts[first + s]), bounds[s], bounds[s + 1]))
        return pieces


class _TopKHeaps:
    """faiss's per-row max-heaps of the `k` smallest (key, id) pairs seen so far (the heaps of
    `IndexFlatL2.search`), over (n, k) numpy buffers the caller owns.

    A heap admits a candidate only if its key is strictly below the heap's largest, so among candidates tied at
    the boundary the first offered stays, whatever its id; the search keeps one entry more than it needs and
    redoes the rows whose last two keys tie. Updates of disjoint rows may run in parallel threads (faiss releases
    the GIL).
    """

    def __init__(self, keys: np.ndarray, ids: np.ndarray) -> None:
        keys.fill(np.inf)  # empty heaps
        self.keys = keys  # (n, k) contiguous; keys[:, 0] is each heap's largest
        self.ids = ids  # (n, k) contiguous
        self.heaps = faiss.float_maxheap_array_t()
        self.heaps.nh, self.heaps.k = keys.shape
        self.heaps.val = faiss.swig_ptr(keys)
        self.heaps.ids = faiss.swig_ptr(ids)

    def add_dense(self, keys: np.ndarray, ids: np.ndarray, *, row0: int) -> None:
        """Offer a contiguous (rows, cols) block of keys to rows row0..; `ids` (cols,) the same for every row."""
        self.heaps.addn_with_ids(keys.shape[1], faiss.swig_ptr(keys), faiss.swig_ptr(ids), 0, row0, keys.shape[0])

    def add_rows(self, keys: np.ndarray, ids: np.ndarray, *, row0: int) -> None:
        """Offer (rows, m) keys with their own (rows, m) ids to rows row0.."""
        keys, ids = np.ascontiguousarray(keys), np.ascontiguousarray(ids)
        self.heaps.addn_with_ids(keys.shape[1], faiss.swig_ptr(keys), faiss.swig_ptr(ids), keys.shape[1], row0,
                                 keys.shape[0])

    def add_sparse(self, rows: np.ndarray, keys: np.ndarray, ids: np.ndarray) -> None:
        """Offer candidates one by one: (rows[e], keys[e], ids[e]), rows in any order. faiss walks them in order
        when it runs one-threaded (as the search makes it), so repeated rows are safe."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        keys = np.ascontiguousarray(keys, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.heaps.addn_query_subset_with_ids(len(rows), faiss.swig_ptr(rows), 1, faiss.swig_ptr(keys),
                                              faiss.swig_ptr(ids), 1)

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, ids), each row by increasing (key, id)."""
        self.heaps.reorder()
        return self.keys, self.ids


# ---- TORCH backend: chunked matmul + topk -------------------------------------------------------------------


def _torch_chunked(x: torch.Tensor, k: int, chunk_elements: int) -> torch.Tensor:
    """Chunks of query rows: one (c, N) matmul against every reference, then the k smallest keys."""
    n = x.shape[0]
    half_sq = x.square().sum(1).mul(0.5)  # (N,)
    out = torch.empty(n, k, dtype=torch.int64, device=x.device)
    step = max(1, chunk_elements // n)
    for s in range(0, n, step):
        q = x[s : s + step]  # (c, D)
        keys = torch.sub(half_sq[None, :], q @ x.T)  # (c, N) |x_j|^2 / 2 - q . x_j
        local = torch.arange(len(q), device=x.device)
        keys[local, s + local] = float("inf")  # a query is not its own neighbour
        out[s : s + len(q)] = _smallest_in_index_order(keys, k)
    return out


def _smallest_in_index_order(keys: torch.Tensor, k: int) -> torch.Tensor:
    """(c, N) keys -> (c, k) indices of the k smallest per row, ties in increasing index order.

    topk may order tied values arbitrarily and, when ties straddle the k-th place, keep any of them: sort each
    kept row by (key, index) and redo the rare straddling rows with a full stable sort.
    """
    values, idx = keys.topk(k, dim=1, largest=False)  # (c, k)
    idx, order = idx.sort(dim=1)
    values = values.gather(1, order)
    values, order = values.sort(dim=1, stable=True)
    idx = idx.gather(1, order)
    straddle = (keys <= values[:, -1:]).sum(1) > k  # (c,) more entries reach the k-th key than fit
    if bool(straddle.any()):
        rows = straddle.nonzero().squeeze(1)
        idx[rows] = keys[rows].sort(dim=1, stable=True).indices[:, :k]
    return idx
