"""A synthetic image folder of JPEGs shaped like CUB-200-2011's, for benchmarks of the disk data path.

    from _jpeg_tree import make_tree
    root = make_tree(Path("/tmp/cub-like"), images=11_788, classes=200)  # root/class000/0000.jpg, ...

CUB's photos are mostly 500 px on the long side, landscape, portrait or square (`CUB_SIZES`); `scale` shrinks them
for quick CPU runs. The content is a coarse random field upsampled plus grain, saved at quality 90: about 85 KB a
file at full size, near CUB's own (its 11,788 photos take about 1.1 GB), so decoding one costs about what a real
photo of that size costs (pure noise would be larger and slower to decode, a flat colour far faster).

Only numpy and Pillow here: the pool's processes stay light. The tree is generated once per (images, classes,
scale, seed): a marker file written last says it is complete, so a run cut short regenerates it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CUB_SIZES", "TreeStats", "make_tree", "tree_stats"]

CUB_SIZES = ((500, 375), (500, 333), (375, 500), (500, 500), (500, 400), (333, 500))  # (W, H): CUB's common ones
_QUALITY = 90
_GRAIN = 28  # +- grey levels of uniform noise: with _QUALITY, sets the file size (and so the decode cost)


@dataclass(frozen=True)
class TreeStats:
    """What a generated tree holds (for a benchmark's table)."""

    images: int
    classes: int
    mean_width: float
    mean_height: float
    mean_kib: float


def _default_signals() -> None:
    # A forked worker inherits its parent's handlers; the pool ends its workers with SIGTERM, which must just end
    # them (a caller that turns SIGTERM into an exception would print a traceback per worker).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the pool


def _write_class(job: tuple[str, int, int, int, float]) -> None:
    from PIL import Image

    root, label, count, seed, scale = job
    rng = np.random.default_rng(seed)
    folder = Path(root) / f"class{label:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    base = rng.integers(40, 216, size=3)  # a class's mean colour
    for i in range(count):
        w, h = (max(8, round(s * scale)) for s in CUB_SIZES[int(rng.integers(len(CUB_SIZES)))])
        coarse = np.clip(base + rng.normal(0, 40, size=(6, 8, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-_GRAIN, _GRAIN + 1, size=(h, w, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.jpg", quality=_QUALITY)


def make_tree(root: Path, *, images: int, classes: int, scale: float = 1.0, seed: int = 0,
              processes: int | None = None) -> Path:
    """`root` holding `images` JPEGs in `classes` class folders (sizes as equal as they can be), made once.

    Uses a pool of `processes` forked workers (default: every CPU): call it before CUDA is initialised.
    """
    if images < classes or classes < 1 or not 0 < scale <= 1:
        raise ValueError(f"need 1 <= classes <= images and 0 < scale <= 1, got {images=}, {classes=}, {scale=}")
    marker = root / f".complete-{images}-{classes}-{scale:g}-{seed}"
    if marker.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    per_class = [images // classes + (1 if c < images % classes else 0) for c in range(classes)]
    jobs = [(str(root), c, n, seed * 100_003 + c, scale) for c, n in enumerate(per_class)]
    # fork: the workers need no re-import of the caller's main module (a spawned one would import torch again).
    workers = processes or os.cpu_count() or 1
    with multiprocessing.get_context("fork").Pool(workers, initializer=_default_signals) as pool:
        pool.map(_write_class, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
    marker.touch()
    return root


def tree_stats(root: Path) -> TreeStats:
    """Count, mean size and mean file size of the JPEGs under `root` (reads only their headers)."""
    from PIL import Image

    files = sorted(root.glob("*/*.jpg"))
    sizes = []
    for path in files:
        with Image.open(path) as image:
            sizes.append(image.size)
    dims = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    kib = sum(p.stat().st_size for p in files) / 1024 / max(1, len(files))
    return TreeStats(images=len(files), classes=len({p.parent.name for p in files}),
                     mean_width=float(dims[:, 0].mean()) if len(files) else 0.0,
                     mean_height=float(dims[:, 1].mean()) if len(files) else 0.0, mean_kib=kib)
