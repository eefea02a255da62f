"""The decoded cache of a data set read from disk: every image decoded and resized once, into one file that every
trial of a node memory-maps (the page cache then holds one copy for all of them, not one per trial).

`<cache>/decoded/<dataset>-<key>.bin`, the key hashing the data set's root, the resize and `FORMAT`:

    pixels    uint8, image 0 (3 x H0 x W0), image 1, ... back to back from offset 0
    header    UTF-8 JSON: format, resize, root, files [[name under root, size, mtime_ns], ...], shapes [[H, W], ...]
    footer    16 bytes: the header's length (uint64, little-endian) and MAGIC

The header goes last so that the pixels stream to disk as they are decoded (SOP's would not fit in memory); a file
cut short loses its footer, and a footer whose header disagrees with the file's length is caught too, so a
truncated cache is found before a pixel is read. The file is written under a temporary name and renamed into place
(`dml_core.files.write_atomic`): a reader maps a whole file or none, and a trial that mapped the old file reads on
from it after a rebuild replaced it. Trials of one node that find no cache wait on a lock file while one of them
builds it.

An image is stale when its size or modification time differs from what the header recorded (how make and rsync
judge a file): the cache is then rebuilt, with a warning naming the file. An image that cannot be decoded is a
one-line error naming it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import struct
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from dml_core.data.image_io import decode_resized
from dml_core.files import write_atomic

__all__ = ["FORMAT", "MAGIC", "DecodedImages", "HostImages", "decoded_cache_path", "decoded_images"]

FORMAT = 1  # part of the key and the header: bump it whenever the stored pixels change for the same files
MAGIC = b"DMLDEC01"
_FOOTER = struct.Struct("<Q8s")
_CHUNK = 64  # images decoded per round of the thread pool: bounds the decoded pixels held in memory

logger = logging.getLogger(__name__)

FileStat = tuple[str, int, int]  # (name under the root, size in bytes, mtime in ns)


class CacheDamaged(ValueError):
    """The cache file is not what its header says (cut short, or not a cache at all)."""


@dataclass(frozen=True)
class HostImages:
    """Some images of a cache, copied into one host buffer (pinned when bound for a GPU)."""

    pixels: torch.Tensor  # (P,) uint8: image b is pixels[starts[b]:starts[b + 1]].view(3, H_b, W_b)
    shapes: torch.Tensor  # (B, 2) int64: (H_b, W_b)
    starts: torch.Tensor  # (B + 1,) int64

    def image(self, b: int, pixels: torch.Tensor | None = None) -> torch.Tensor:
        """Image b as a (3, H, W) uint8 view of `pixels` (default: the host buffer; pass its device copy)."""
        source = self.pixels if pixels is None else pixels
        h, w = (int(v) for v in self.shapes[b])
        return source[int(self.starts[b]):int(self.starts[b + 1])].view(3, h, w)


class DecodedImages:
    """A cache file, memory-mapped: `len()` images of 3 x H_i x W_i uint8, gathered by index into host buffers."""

    def __init__(self, path: Path, paths: tuple[str, ...], shapes: np.ndarray, pixels: np.memmap) -> None:
        self.path = path
        self.paths = paths  # the image file of each cached image
        self.shapes = shapes  # (N, 2) int64
        self.offsets = np.concatenate([[0], np.cumsum(_image_bytes(shapes))]).astype(np.int64)  # (N+1,)
        self.pixels = pixels  # (P,) uint8, read-only, shared with every process that maps the file

    def __len__(self) -> int:
        return int(self.shapes.shape[0])

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        # A DataLoader worker started by spawn gets the file reopened, not a pickled copy of every pixel.
        return open_decoded, (self.path,)

    def gather(self, indices: Sequence[int] | np.ndarray | torch.Tensor, *, pin: bool = False) -> HostImages:
        """The images at `indices`, copied back to back into one host buffer (page-locked with `pin`)."""
        index = np.asarray(torch.as_tensor(indices, dtype=torch.int64).cpu())
        begins, ends = self.offsets[index], self.offsets[index + 1]
        sizes = ends - begins
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        buffer = torch.empty(int(starts[-1]), dtype=torch.uint8, pin_memory=pin)
        out = buffer.numpy()
        for b, (begin, end) in enumerate(zip(begins.tolist(), ends.tolist())):
            out[starts[b]:starts[b + 1]] = self.pixels[begin:end]
        return HostImages(buffer, torch.from_numpy(self.shapes[index]), torch.from_numpy(starts))


def decoded_cache_path(cache_root: Path, dataset: str, root: Path, resize: int) -> Path:
    keyed = json.dumps({"format": FORMAT, "dataset": dataset, "root": str(root), "resize": resize}, sort_keys=True)
    return cache_root / "decoded" / f"{dataset}-{hashlib.sha256(keyed.encode()).hexdigest()[:20]}.bin"


def decoded_images(dataset: str, paths: Sequence[Path], resize: int, cache_root: Path, *,
                   workers: int | None = None) -> DecodedImages:
    """The decoded cache of `paths` (in that order) at shorter side `resize`: opened when it is current, else
    (re)built first, decoding with `workers` threads (default: the CPUs this process may use, at most 8)."""
    root = Path(os.path.commonpath([os.path.abspath(p) for p in paths]))
    if len(paths) == 1:
        root = root.parent
    files = [_stat(root, Path(p)) for p in paths]
    path = decoded_cache_path(cache_root, dataset, root, resize)
    images, reason = _open_current(path, root, resize, files)
    if images is not None:
        return images
    with _locked(path):
        images, reason = _open_current(path, root, resize, files)  # another process may have built it meanwhile
        if images is not None:
            return images
        if reason != "missing":
            logger.warning("decoded cache %s: %s; rebuilding it", path, reason)
        _build(path, root, resize, files, workers or _default_workers())
        images, reason = _open_current(path, root, resize, files)
    if images is None:
        raise RuntimeError(f"decoded cache {path} was built but cannot be used: {reason}")
    return images


def open_decoded(path: Path) -> DecodedImages:
    """A cache file as it is, not checked against the image files (for a worker that reopens a checked one)."""
    header = _read_header(path)
    return _map(path, header)


# ---------------------------------------------------------------------------------------------------------------


def _image_bytes(shapes: np.ndarray) -> np.ndarray:
    """(N, 2) (H, W) -> (N,) bytes of each stored image (3 x H x W uint8)."""
    return 3 * shapes[:, 0] * shapes[:, 1]


def _default_workers() -> int:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, available))


def _stat(root: Path, path: Path) -> FileStat:
    info = os.stat(path)
    return (os.path.relpath(os.path.abspath(path), root), int(info.st_size), int(info.st_mtime_ns))


def _open_current(path: Path, root: Path, resize: int,
                  files: list[FileStat]) -> tuple[DecodedImages | None, str]:
    """(the cache, "") when it exists, is whole and matches `files`; else (None, why not)."""
    try:
        header = _read_header(path)
    except FileNotFoundError:
        return None, "missing"
    except CacheDamaged as exc:
        return None, str(exc)
    if header.get("format") != FORMAT or header.get("resize") != resize or header.get("root") != str(root):
        return None, "it was built with other settings"
    changed = _first_change([tuple(f) for f in header["files"]], files, root)
    if changed:
        return None, changed
    return _map(path, header), ""


def _first_change(stored: list[tuple[Any, ...]], current: list[FileStat], root: Path) -> str:
    """'' when the image files are those the cache was built from; else a sentence naming the first that is not."""
    for before, now in zip(stored, current):
        if before[0] != now[0]:
            return f"its file list differs from the data set's at {root / now[0]} (cache has {root / before[0]})"
        if tuple(before[1:]) != now[1:]:
            return f"image file {root / now[0]} changed since the cache was built (size or modification time)"
    if len(stored) != len(current):
        return f"it holds {len(stored)} images, the data set lists {len(current)}"
    return ""


def _read_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size < _FOOTER.size:
            raise CacheDamaged(f"the file is cut short ({size} bytes)")
        file.seek(size - _FOOTER.size)
        length, magic = _FOOTER.unpack(file.read(_FOOTER.size))
        if magic != MAGIC or length > size - _FOOTER.size:
            raise CacheDamaged("the file is cut short or is not a decoded cache (no footer)")
        file.seek(size - _FOOTER.size - length)
        try:
            header: dict[str, Any] = json.loads(file.read(length))
        except ValueError as exc:
            raise CacheDamaged(f"its header is unreadable ({exc})") from None
    shapes = np.asarray(header.get("shapes", []), dtype=np.int64).reshape(-1, 2)
    expected = int(_image_bytes(shapes).sum()) + length + _FOOTER.size
    if expected != size or len(header.get("files", [])) != shapes.shape[0]:
        raise CacheDamaged(f"the file holds {size} bytes where its header needs {expected}")
    header["shapes"] = shapes
    return header


def _map(path: Path, header: dict[str, Any]) -> DecodedImages:
    shapes: np.ndarray = header["shapes"]
    pixels = np.memmap(path, dtype=np.uint8, mode="r", shape=(int(_image_bytes(shapes).sum()),))
    root = Path(header["root"])
    return DecodedImages(path, tuple(str(root / name) for name, _, _ in header["files"]), shapes, pixels)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside the cache file: one process of a node builds, the others wait and then map."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        except OSError as exc:  # a file system without locks (some NFS mounts): builds may overlap, each atomic
            logger.warning("decoded cache %s: no lock on this file system (%s); building without one", path, exc)
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _build(path: Path, root: Path, resize: int, files: list[FileStat], workers: int) -> None:
    """Decode every file into the cache at `path`; the stats recorded are those taken before decoding, so a file
    that changes during the build makes the next open rebuild."""
    names = [str(root / name) for name, _, _ in files]
    logger.info("decoding %d images of %s into %s (%d threads)", len(names), root, path, workers)

    def write(handle: IO[bytes]) -> None:
        shapes: list[list[int]] = []
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for first in range(0, len(names), _CHUNK):
                for image in pool.map(lambda name: decode_resized(name, resize), names[first:first + _CHUNK]):
                    handle.write(memoryview(image).cast("B"))
                    shapes.append([int(image.shape[1]), int(image.shape[2])])
        header = json.dumps({"format": FORMAT, "resize": resize, "root": str(root),
                             "files": [list(f) for f in files], "shapes": shapes}).encode()
        handle.write(header)
        handle.write(_FOOTER.pack(len(header), MAGIC))

    write_atomic(path, write, sync=True)
