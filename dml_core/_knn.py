"""Exact nearest neighbours of every embedding among the others (query set = reference set).

One contract, two backends: `nearest_neighbors(x, depth, backend)` returns (N, max depth) int64 indices on the
CPU; row i holds the depth[i] embeddings closest to x[i] in Euclidean distance, x[i] itself excluded, nearest
first, equal distances (duplicated embeddings) in increasing index order, then -1s. That is faiss's
`IndexFlatL2` order, which PML's AccuracyCalculator uses, so the label sequences (and every metric built on them)
agree with PML.

Both backends rank row i by the key `|x_j|^2 / 2 - x_i . x_j` (= (d_ij^2 - |x_i|^2) / 2: the row's own norm is a
constant that cannot change its order), smallest first, computed in float32 as `half[j] - dot` with the dot product
from a matrix product, so a pair's key does not depend on which block it was computed in (MKL's sgemm rounds an
entry the same way in any matrix of at least about 4 rows and 12 columns; the FAISS backend's matmuls are whole
blocks, or strips of at least _MIN_STRIP rows). Candidates closer than float32 rounding (~1e-7 relative) are
ranked as that rounding falls, which may differ from faiss's own float32 arithmetic. Memory is O(N * depth) plus a
few blocks of similarities per worker: never the N x N matrix.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import numpy as np
import torch

__all__ = ["KnnBackend", "default_backend", "nearest_neighbors"]

_Found = tuple[np.ndarray, np.ndarray, np.ndarray]  # (rows, cols, dots) of the entries a screen lets through

# Side of the square similarity blocks of the faiss backend: 1024^2 float32 = 4 MiB per buffer, so a worker's block
# stays in the last-level cache between the matmul and the passes that read it, while the (N / 1024)^2 / 2 blocks
# keep the Python overhead per block small next to its matmul.
_FAISS_BLOCK = 1024
# Entries of one (rows, N) similarity chunk of the torch backend: 2^25 float32 = 128 MiB, small next to a GPU's
# memory and large enough that each chunk is one big matmul.
_TORCH_CHUNK_ELEMENTS = 1 << 25
# Width of the diagonal tiles whose nearest candidates seed the heaps (and rows per strip of a diagonal block). A
# seed of w candidates costs a few ns per candidate and row; the heap insertions that follow number about
# (k + 1) * ln(N / w) per row, at tens of ns each: w of a few hundred balances the two for k in the tens.
_SEED_TILE = 256
# MKL's sgemm takes a small-matrix path, rounded differently, below about 4 rows or 12 columns: no strip is that
# thin unless its whole block is (then the block's own matmul has that shape too).
_MIN_STRIP = 12
# Rows per group of the screen: one vectorised max over each group's rows per column stands for 8 entries, and a
# passing group costs 8 reads; 8 balances the reduction's size against the groups that pass only on a neighbour.
_GROUP = 8
# A side of a block whose groups pass more often than this is offered to its heaps whole (~1.5 ns an entry: the
# keys, then faiss's tight compare loop; ~2.5 ns for the columns' side, which needs a transpose) instead of survivor
# by survivor (~100 ns each: numpy bookkeeping and a heap insertion). A passing group holds one survivor or two of
# its 8 entries, so the break-evens lie near a tenth of the groups for the rows, a fifth for the columns.
_DENSE_GROUPS_ROWS = 0.1
_DENSE_GROUPS_COLUMNS = 0.2
# Relative slack of the screen: far above float32 rounding of the keys (~1e-7), so no admissible entry is screened
# out, and small enough to let hardly any extra entry through.
_SCREEN_SLACK = 1e-5


def _faiss() -> ModuleType:
    """faiss, imported on first use: the TORCH backend (the GPU path) and hosts without faiss never load it."""
    import faiss

    return faiss


class KnnBackend(enum.Enum):
    """How the neighbours are found; both give the same neighbours in the same order."""

    # CPU: matmuls over the upper triangle of the block grid (each pair's dot product computed once and used by
    # both of its rows: half the flops), screened against each row's current k-th key (group maxima first), into
    # faiss's heaps.
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


# ---- FAISS backend: symmetric block matmuls + grouped screens + faiss heaps -----------------------------------


def _faiss_symmetric(x: torch.Tensor, depth: int | np.ndarray, block: int, hint: np.ndarray | None = None, *,
                     tile: int = _SEED_TILE) -> torch.Tensor:
    """Blocks (I, J) of side `block`: one matmul per block I < J updates the heaps of block I's rows (candidates
    from J) and of block J's rows (candidates from I, the transpose): half the flops of a plain search.

    1. Rows are visited in the `hint` order (default: as given), ideally one that keeps nearby points together
    (see _cluster_order), grouped by (rounded) heap size; each block of rows has one faiss heap array. 2. A
    diagonal block is computed in strips of `tile` rows over its upper triangle, bottom strip first: each strip's
    square tile on the diagonal seeds its rows' heaps with their nearest candidates there (so every row has a k-th
    key to beat before the bulk of the work), the rest of the strip is screened like any other block. 3. Every
    block is screened against the rows' current k-th keys, group maxima first (see _screened), so only the entries
    that can still enter a heap are offered; worker threads take blocks that touch disjoint rows (faiss, numpy and
    torch release the GIL). A heap keeps at least depth + 1 entries: a row whose (depth+1)-th key equals its
    depth-th may have lost a tied candidate to arrival order and is recomputed whole (see _exact_rows); otherwise
    arrival order cannot change the result.
    """
    n = x.shape[0]
    depths = np.broadcast_to(np.asarray(depth, dtype=np.int64), (n,))
    capacity = _heap_capacity(depths, n)
    hint = np.arange(n) if hint is None else np.asarray(hint, dtype=np.int64)
    # (N,) position -> row: by heap size rounded up to a multiple of 8, then by hint (rows of one class stay together
    # when their sizes differ a little). The positions decide which matmul computes each pair, hence its rounding,
    # so this order is part of the results: changing it moves distance ties by float32 rounding.
    size_class = np.where(depths > 0, np.minimum(-(-(depths + 1) // 8) * 8, n - 1), 0)
    order = hint[np.argsort(size_class[hint], kind="stable")]
    search = _BlockSearch(x[torch.from_numpy(order)], order, capacity[order], block, tile)
    neighbors = np.full((n, int(depths.max())), -1, dtype=np.int64)
    tied: dict[int, np.ndarray] = {}  # block -> its rows with a tie at the last place

    def finish(b: int) -> None:
        """Block b has met every other block: write its rows' neighbours (disjoint rows, so on any worker)."""
        heap = search.heaps.heaps[b]
        if heap is None:
            return
        keys, ids = heap.sorted()  # each row by increasing (key, id); ids original
        start, _ = search.heaps.span(b)
        rows = order[start : start + len(keys)]
        need = depths[rows]  # (m,)
        width = min(ids.shape[1], neighbors.shape[1])
        neighbors[rows, :width] = np.where(np.arange(width) < need[:, None], ids[:, :width], -1)
        has_next = (need > 0) & (need < ids.shape[1])  # the heap holds the (depth+1)-th key to compare with
        at = np.flatnonzero(has_next)
        tied[b] = rows[at[keys[at, need[at]] == keys[at, need[at] - 1]]]

    _run_blocks(search.process, search.heaps.n_blocks, finish)
    # In search order, whatever order the workers finished the blocks in: _exact_rows's matmul rounds a row's keys
    # by its place among the rows redone with it, so the order is part of the result.
    redo = np.concatenate([tied[b] for b in sorted(tied)] + [np.zeros(0, np.int64)])
    if len(redo):
        neighbors[redo] = _exact_rows(x, redo, depths[redo], neighbors.shape[1])
    return torch.from_numpy(neighbors)


def _heap_capacity(depths: np.ndarray, n: int) -> np.ndarray:
    """(N,) heap size per row: depth + 1 (one more to see ties at the last place), at most N - 1; 0 for depth 0.
    A block's heap array takes the largest capacity of its rows (rows are sorted by capacity, so it is close)."""
    return np.where(depths > 0, np.minimum(depths + 1, n - 1), 0)


def _strips(n: int, tile: int) -> list[tuple[int, int]]:
    """[s0, s1) row ranges of `tile` rows covering range(n); a last strip under _MIN_STRIP rows joins the one
    before it, so every strip's matmul takes the same (large-matrix) kernel path as a whole block's."""
    bounds = list(range(0, n, tile)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < _MIN_STRIP:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:]))


def _cluster_order(x: torch.Tensor, block: int) -> np.ndarray:
    """(N,) a permutation that groups nearby rows: faiss k-means into clusters of about a seed tile each, trained
    one-threaded on a subsample (milliseconds; the order only has to be useful, any order gives the same result).
    Near candidates then reach each heap first, which saves heap updates later."""
    n = x.shape[0]
    if n <= block:
        return np.arange(n)
    data = x.numpy()
    faiss = _faiss()
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


def _run_blocks(process: Callable[[int, int], None], n_blocks: int, done: Callable[[int], None]) -> None:
    """process(I, J) for every block pair I <= J: the diagonal (seeding) blocks first, then the others in
    round-robin order, on worker threads (one per torch thread) that take their next pair themselves (see
    _PairQueue); done(B) once block B's last pair is processed, on the thread that processed it. Each worker runs
    one-threaded kernels, so the workers own the cores instead of competing OpenMP pools."""
    pairs = [(b, b) for b in range(n_blocks)] + [pair for pairs in _round_robin(n_blocks) for pair in pairs]
    workers = min(torch.get_num_threads(), n_blocks)
    queue = _PairQueue(pairs, n_blocks)
    if workers <= 1:
        faiss = _faiss()
        faiss_threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # add_sparse needs one-threaded faiss; this thread's setting only
        try:
            for pair in pairs:
                process(*pair)
                for b in queue.finish(pair):
                    done(b)
        finally:
            faiss.omp_set_num_threads(faiss_threads)
        return

    def work() -> None:
        while (pair := queue.take()) is not None:
            try:
                process(*pair)
                for b in queue.finish(pair):
                    done(b)
            except BaseException:
                queue.stop()
                raise

    torch_threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers, initializer=_one_thread_per_kernel) as pool:
            for future in [pool.submit(work) for _ in range(workers)]:
                future.result()  # re-raise a worker's error
    finally:
        torch.set_num_threads(torch_threads)  # the workers lowered torch's default for new threads; restore it


class _PairQueue:
    """Block pairs handed out first come first, each as soon as neither of its blocks is in use (two tasks on one
    block would update the same heap rows) and, off the diagonal, both are seeded. Workers take pairs themselves:
    a dispatcher thread would need the GIL to hand out each pair and leave a core idle meanwhile."""

    def __init__(self, pairs: list[tuple[int, int]], n_blocks: int) -> None:
        self.pending = list(pairs)
        self.left = np.bincount(np.array(pairs, dtype=np.int64).reshape(-1), minlength=n_blocks)
        self.left[[i for i, j in pairs if i == j]] -= 1  # (B,) pairs still to process per block
        self.busy: set[int] = set()
        self.seeded: set[int] = set()
        self.stopped = False
        self.changed = threading.Condition()

    def take(self) -> tuple[int, int] | None:
        """The next startable pair (waiting while none is), or None when none is left or the queue stopped."""
        with self.changed:
            while self.pending and not self.stopped:
                for pair in self.pending:
                    i, j = pair
                    if i not in self.busy and j not in self.busy and (i == j or {i, j} <= self.seeded):
                        self.pending.remove(pair)
                        self.busy.update(pair)
                        return pair
                self.changed.wait()
            return None

    def finish(self, pair: tuple[int, int]) -> list[int]:
        """Mark `pair` processed; the blocks it completed (none of their pairs left)."""
        with self.changed:
            self.busy.difference_update(pair)
            blocks = sorted(set(pair))
            if len(blocks) == 1:
                self.seeded.add(pair[0])
            self.left[blocks] -= 1
            self.changed.notify_all()
            return [b for b in blocks if self.left[b] == 0]

    def stop(self) -> None:
        """Hand out nothing more (a worker failed)."""
        with self.changed:
            self.stopped = True
            self.changed.notify_all()


def _one_thread_per_kernel() -> None:
    # torch's intra-op and MKL threads and faiss's OpenMP threads are per calling thread here.
    torch.set_num_threads(1)
    _faiss().omp_set_num_threads(1)


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
    heaps (indexed by search position, holding original ids); per-thread scratch buffers."""

    def __init__(self, x: torch.Tensor, ids: np.ndarray, capacity: np.ndarray, block: int, tile: int) -> None:
        self.x = x  # (N, D) search order
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)  # (N,) original row of each position
        self.half = (x * x).sum(1).mul_(0.5).numpy()  # (N,) |x_j|^2 / 2
        # The screen's absolute slack: bounds the rounding of any key, as 3 * max(half) bounds |half_j - dot|.
        self.slack = _SCREEN_SLACK * 3.0 * float(self.half.max(initial=0.0))
        self.heaps = _BlockHeaps(capacity, block)
        self.block = block
        self.tile = tile
        self.buffers = threading.local()

    def process(self, bi: int, bj: int) -> None:
        """One block pair: the diagonal ones seed, the others update both sides."""
        if bi == bj:
            self.diagonal(bi)
        else:
            self.pair(bi, bj)

    def diagonal(self, b: int) -> None:
        """Strips of the upper triangle, bottom first: a strip's diagonal tile seeds its rows' empty heaps, then the
        rest of the strip (its rows against the rows below, already seeded) is screened both ways."""
        heap = self.heaps.heaps[b]
        if heap is None:
            return  # no row of this block wants neighbours; the block's pairs have nothing to update
        i0, n = self.heaps.span(b)
        rows = self.x[i0 : i0 + n]
        for s0, s1 in reversed(_strips(n, self.tile)):
            sim = self._scratch("sim", (s1 - s0, n - s0))
            torch.mm(rows[s0:s1], rows[s0:].T, out=sim)  # (t, n - s0) the strip's upper-triangle dot products
            dots = sim.numpy()
            self._seed(heap, dots[:, : s1 - s0], i0 + s0, s0)
            if s1 < n:
                self._screen(dots[:, s1 - s0 :], (heap, s0, i0 + s0), (heap, s1, i0 + s1))

    def pair(self, bi: int, bj: int) -> None:
        heap_i, heap_j = self.heaps.heaps[bi], self.heaps.heaps[bj]
        if heap_i is None and heap_j is None:
            return
        (i0, n_rows), (j0, n_cols) = self.heaps.span(bi), self.heaps.span(bj)
        sim = self._scratch("sim", (n_rows, n_cols))
        torch.mm(self.x[i0 : i0 + n_rows], self.x[j0 : j0 + n_cols].T, out=sim)  # (bi, bj) each pair once
        self._screen(sim.numpy(), (heap_i, 0, i0), (heap_j, 0, j0))

    def _seed(self, heap: _TopKHeaps, tile: np.ndarray, at: int, row0: int) -> None:
        """(t, t) dot products of positions at.. with themselves: each row's `heap.k` nearest (itself excluded)
        seed its heap (rows row0.. of the block's heap array)."""
        keys = self.half[at : at + len(tile)][None, :] - tile  # (t, t)
        np.fill_diagonal(keys, np.inf)  # a query is not its own neighbour
        local = np.broadcast_to(np.arange(keys.shape[1]), keys.shape)
        if keys.shape[1] > heap.k:  # the heaps keep at most k candidates anyway: hand them only those
            local = np.argpartition(keys, heap.k - 1, axis=1)[:, : heap.k]
            keys = np.take_along_axis(keys, local, axis=1)
        heap.add_rows(keys, self.ids[at + local], row0=row0)

    def _screen(self, dots: np.ndarray, rows: tuple[_TopKHeaps | None, int, int],
                cols: tuple[_TopKHeaps | None, int, int]) -> None:
        """Offer the (r, c) `dots` (a view, rows may be strided) to both sides: row i of `dots` is row row0 + i of
        the rows' heap array (search position at + i) and gets candidates half[col] - dot; column j likewise.
        `rows` and `cols` are (heap array or None, first row in it, first search position)."""
        (heap_r, row0, at_r), (heap_c, col0, at_c) = rows, cols
        n_rows, n_cols = dots.shape
        half_r, half_c = self.half[at_r : at_r + n_rows], self.half[at_c : at_c + n_cols]
        ids_r, ids_c = self.ids[at_r : at_r + n_rows], self.ids[at_c : at_c + n_cols]
        floor_r = self._floor(at_r, n_rows, float(half_c.min()))
        floor_c = self._floor(at_c, n_cols, float(half_r.min()))
        shape, groups = (n_rows // _GROUP, n_cols), self.block // _GROUP
        found_r, found_c = _screened(dots, floor_r, floor_c, self._scratch("gmax", shape, rows=groups).numpy(),
                                     self._scratch("cand", shape, torch.bool, groups).numpy(),
                                     self._scratch("cand_c", shape, torch.bool, groups).numpy())
        if heap_c is not None:
            if found_c is None:
                keys = self._scratch("keys", (n_cols, n_rows))
                keys.copy_(torch.from_numpy(dots).T)  # a blocked transpose: 4x faster than subtracting from .T
                torch.sub(torch.from_numpy(half_r)[None, :], keys, out=keys)
                heap_c.add_dense(keys.numpy(), ids_r, row0=col0)
            else:
                r, c, d = found_c
                heap_c.add_sparse(c + col0, half_r[r] - d, ids_r[r])
        if heap_r is not None:
            if found_r is None:
                keys = self._scratch("keys", (n_rows, n_cols))
                torch.sub(torch.from_numpy(half_c)[None, :], torch.from_numpy(dots), out=keys)
                heap_r.add_dense(keys.numpy(), ids_c, row0=row0)
            else:
                r, c, d = found_r
                heap_r.add_sparse(r + row0, half_c[c] - d, ids_c[c])

    def _floor(self, at: int, n_rows: int, half_min: float) -> np.ndarray:
        """(n_rows,) dot products at or below this cannot beat the row's current largest kept key (tau): a
        candidate enters only if half[j] - dot < tau, i.e. dot > half[j] - tau >= half_min - tau; minus a slack
        for rounding. -inf (all pass) while a heap is not full (tau = inf), about +FLT_MAX for rows without a heap
        (tau = -FLT_MAX): nothing passes."""
        tau = self.heaps.largest_keys(at, n_rows)
        floor = np.subtract(half_min, tau)
        floor -= _SCREEN_SLACK * np.abs(tau)
        floor -= self.slack
        return floor

    def _scratch(self, name: str, shape: tuple[int, int], dtype: torch.dtype = torch.float32,
                 rows: int | None = None) -> torch.Tensor:
        """A per-thread scratch tensor, reused across blocks (fresh pages would cost more than the work), made once
        with room for `rows` (default: block) rows of a block's width."""
        store = self.buffers.__dict__
        flat = store.get(name)
        if flat is None:
            flat = store[name] = torch.empty((self.block if rows is None else rows) * self.block, dtype=dtype)
        return flat[: shape[0] * shape[1]].view(shape)


def _screened(dots: np.ndarray, floor_rows: np.ndarray, floor_cols: np.ndarray, group_max: np.ndarray,
              candidate: np.ndarray, scratch: np.ndarray) -> tuple[_Found | None, _Found | None]:
    """For each side of (r, c) `dots` (any strides), the entries above their floor: (rows, cols, dots) of those
    above their row's floor (for the rows' heaps), and of those above their column's floor; None for a side whose
    groups pass too often (see _DENSE_GROUPS_ROWS): that side is offered whole.

    One pass over the block takes the maximum of each group of _GROUP rows in each column (a vectorised
    reduction, a fraction of a full compare-and-collect pass); a group passes for the columns if that maximum beats
    its column's floor, for the rows if it beats its rows' smallest floor. Only the entries of passing groups are
    read again and tested exactly. `group_max`, `candidate` and `scratch` are (r // _GROUP, c) scratch arrays.
    """
    n_rows, n_cols = dots.shape
    n_groups = n_rows // _GROUP
    whole = n_groups * _GROUP
    grouped = dots[:whole].reshape(n_groups, _GROUP, n_cols)  # a view: rows keep their stride
    torch.amax(torch.from_numpy(grouped), dim=1, out=torch.from_numpy(group_max))
    group_floor = floor_rows[:whole].reshape(n_groups, _GROUP)
    np.greater(group_max, group_floor.min(1)[:, None], out=candidate)  # (g, c) for the rows' side
    np.greater(group_max, floor_cols[None, :], out=scratch)  # (g, c) for the columns' side
    dense_rows = np.count_nonzero(candidate) > _DENSE_GROUPS_ROWS * candidate.size
    dense_cols = np.count_nonzero(scratch) > _DENSE_GROUPS_COLUMNS * candidate.size
    if dense_rows and dense_cols:
        return None, None
    if not (dense_rows or dense_cols):
        candidate |= scratch
    elif dense_rows:
        candidate = scratch
    g, c = np.divmod(np.flatnonzero(candidate), n_cols)
    values = grouped[g, :, c]  # (m, G) the passing groups' entries
    rest = dots[whole:]  # (< G, c) the rows past the last whole group, tested directly
    found_rows = found_cols = None
    if not dense_rows:
        found_rows = _in_groups(values > group_floor[g], g, c, values)
        if whole < n_rows:
            found_rows = _with_rest(found_rows, rest > floor_rows[whole:, None], rest, whole)
    if not dense_cols:
        found_cols = _in_groups(values > floor_cols[c][:, None], g, c, values)
        if whole < n_rows:
            found_cols = _with_rest(found_cols, rest > floor_cols[None, :], rest, whole)
    return found_rows, found_cols


def _in_groups(passed: np.ndarray, g: np.ndarray, c: np.ndarray, values: np.ndarray) -> _Found:
    """(rows, cols, dots) of the passing entries of groups (g, c) with (m, G) `values` and `passed`."""
    e = np.flatnonzero(passed)
    at = e // _GROUP
    return g[at] * _GROUP + e % _GROUP, c[at], values.reshape(-1)[e]


def _with_rest(found: _Found, passed: np.ndarray, rest: np.ndarray, row0: int) -> _Found:
    """`found` plus the passing entries of `rest` (rows row0..)."""
    r, c = np.nonzero(passed)
    rows, cols, dots = found
    return np.concatenate([rows, r + row0]), np.concatenate([cols, c]), np.concatenate([dots, rest[r, c]])


class _BlockHeaps:
    """One faiss heap array per block of `block` rows (in search order), of the largest capacity among its rows
    (rows are sorted by capacity, so the others waste little). All keys live in one flat buffer, so every row's
    largest kept key is one gather away; a last slot holds -FLT_MAX for rows that want no neighbours."""

    def __init__(self, capacity: np.ndarray, block: int) -> None:
        n = len(capacity)
        self.block = block
        self.starts = np.arange(0, n, block)  # (B,) first row of each block
        self.n_blocks = len(self.starts)
        sizes = np.minimum(self.starts + block, n) - self.starts
        ks = np.maximum.reduceat(capacity, self.starts)  # (B,) heap size
        offsets = np.concatenate([[0], np.cumsum(ks * sizes)])  # where each block's heaps begin
        self.keys = np.full(int(offsets[-1]) + 1, np.finfo(np.float32).min, dtype=np.float32)
        self.ids = np.full(int(offsets[-1]), -1, dtype=np.int64)
        block_of = np.arange(n) // block
        first = offsets[block_of] + (np.arange(n) - self.starts[block_of]) * ks[block_of]
        self.top = np.where(capacity > 0, first, len(self.keys) - 1)  # (N,) where each row's largest key is
        self.heaps: list[_TopKHeaps | None] = []
        for b in range(self.n_blocks):
            k, lo, hi = int(ks[b]), int(offsets[b]), int(offsets[b + 1])
            self.heaps.append(_TopKHeaps(self.keys[lo:hi].reshape(-1, k), self.ids[lo:hi].reshape(-1, k))
                              if k else None)

    def span(self, b: int) -> tuple[int, int]:
        """(first position, rows) of block b."""
        start = int(self.starts[b])
        return start, min(self.block, len(self.top) - start)

    def largest_keys(self, at: int, n_rows: int) -> np.ndarray:
        """(n_rows,) the largest kept key of positions at..: inf while its heap is not full, -FLT_MAX without."""
        return self.keys[self.top[at : at + n_rows]]


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
        self.k = keys.shape[1]
        self.ids = ids  # (n, k) contiguous
        self._ptr = _faiss().swig_ptr
        self.heaps = _faiss().float_maxheap_array_t()
        self.heaps.nh, self.heaps.k = keys.shape
        self.heaps.val = self._ptr(keys)
        self.heaps.ids = self._ptr(ids)

    def add_dense(self, keys: np.ndarray, ids: np.ndarray, *, row0: int) -> None:
        """Offer a contiguous (rows, cols) block of keys to rows row0..; `ids` (cols,) the same for every row."""
        self.heaps.addn_with_ids(keys.shape[1], self._ptr(keys), self._ptr(ids), 0, row0, keys.shape[0])

    def add_rows(self, keys: np.ndarray, ids: np.ndarray, *, row0: int) -> None:
        """Offer (rows, m) keys with their own (rows, m) ids to rows row0.."""
        keys, ids = np.ascontiguousarray(keys), np.ascontiguousarray(ids)
        self.heaps.addn_with_ids(keys.shape[1], self._ptr(keys), self._ptr(ids), keys.shape[1], row0,
                                 keys.shape[0])

    def add_sparse(self, rows: np.ndarray, keys: np.ndarray, ids: np.ndarray) -> None:
        """Offer candidates one by one: (rows[e], keys[e], ids[e]), rows in any order. faiss walks them in order
        when it runs one-threaded (as the search makes it), so repeated rows are safe."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        keys = np.ascontiguousarray(keys, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.heaps.addn_query_subset_with_ids(len(rows), self._ptr(rows), 1, self._ptr(keys), self._ptr(ids), 1)

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
