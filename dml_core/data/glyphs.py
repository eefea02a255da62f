"""The embedded default dataset: printed characters from 16 font faces, generated offline and cached.

Classes are the characters that all 16 faces of matplotlib's bundled fonts cover, minus those that render the same
as an earlier one (`glyph_classes`): 643 classes with matplotlib 3.11's fonts. Every class gets `samples_per_face`
renderings in each face, each with its own random rotation, scale, aspect, shear, shift and stroke weight
(`glyph_augment.Jitter`), drawn from `numpy.random.default_rng(seed)`; grayscale, `image_size` px square, ink
bright on a black background, served as float32 in [0, 1].

Classes are ordered by a hash of the character (`glyph_classes.split_order`): the first half are the training
classes, the second half the test classes, the same for every seed and size. The generated images are cached in
`<cache>/glyphs/glyphs-<key>.npz`, the key hashing every generation parameter; `<cache>` is the `cache_dir`
option, else $DML_STUDY_CACHE, else ~/.cache/dml-study.

At the defaults (32 px, 4 samples per face: 20,544 train and 20,608 test images, 42 MB cached) a random
`small_cnn` (128-d) reaches Recall@1 0.21 on the test classes; trained with batches of 32 classes x 4 images and
Adam (lr 1e-3), it reaches 0.83-0.85 after 3 epochs and 0.87-0.88 after 5 with a normalised-softmax, contrastive
or triplet loss, and the losses' learning curves differ (contrastive 0.76 after one epoch, normalised softmax
0.22). Generating takes about 10 s on one core, a cached load well under a second.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib import ft2font
from matplotlib.ft2font import FT2Font

from dml_core.data.base import DatasetSplit
from dml_core.data.cache import cache_dir as resolve_cache_dir
from dml_core.data.cache import load_arrays, save_arrays
from dml_core.data.glyph_augment import Jitter, sample_warps, warp_glyphs
from dml_core.data.glyph_classes import SAME_CANVAS, distinct_glyphs, split_order
from dml_core.data.glyph_fonts import FONT_FILES, common_codepoints, open_faces, render_glyph
from dml_core.data.in_memory import InMemoryDataset

__all__ = ["GlyphOptions", "GLYPH_FORMAT", "glyph_cache_path", "glyph_classes", "render_samples", "generate_glyphs",
           "load_glyphs"]

# Part of the cache key: bump it whenever the generator's output changes for the same options.
GLYPH_FORMAT = 1
_ARRAYS = ("images", "labels", "faces", "codepoints")


@dataclass(frozen=True)
class GlyphOptions:
    """Options of `load_dataset("glyphs", ...)`; all but `cache_dir` and `num_classes` key the cache."""

    image_size: int = 32  # enough to keep diacritics apart; small enough for a CNN at thousands of images/s on a CPU
    samples_per_face: int = 4  # 64 images per class: the test split then has 63 true neighbours per query
    seed: int = 0  # of the jitter only: the classes and their split never depend on it
    num_classes: int | None = None  # None: all; n: the first n of the split order, halves train/test (fast studies)
    cache_dir: str | None = None  # None: $DML_STUDY_CACHE, else ~/.cache/dml-study
    # Jitter half-ranges; defaults and reasons in glyph_augment.Jitter.
    rotation_deg: float = Jitter.rotation_deg
    log_scale: float = Jitter.log_scale
    log_aspect: float = Jitter.log_aspect
    shear: float = Jitter.shear
    shift: float = Jitter.shift
    stroke: float = Jitter.stroke

    def __post_init__(self) -> None:
        _check_int("image_size", self.image_size, 8, 256)
        _check_int("samples_per_face", self.samples_per_face, 1, 256)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        if self.num_classes is not None:
            _check_int("num_classes", self.num_classes, 4, 1 << 20)
        if self.cache_dir is not None and not isinstance(self.cache_dir, (str, Path)):
            raise ValueError(f"glyphs cache_dir must be a path or None, got cache_dir={self.cache_dir!r}")
        self.jitter()  # validates the jitter values

    def jitter(self) -> Jitter:
        return Jitter(**{f.name: getattr(self, f.name) for f in fields(Jitter)})


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"glyphs {name} must be an integer in [{low}, {high}], got {name}={value!r}")


def glyph_cache_path(options: GlyphOptions) -> Path:
    """Where the images of `options` are cached: the key hashes every parameter the pixels depend on."""
    jitter = {k: float(v) for k, v in asdict(options.jitter()).items()}  # 16 and 16.0 are one dataset
    keyed = {"format": GLYPH_FORMAT, "matplotlib": matplotlib.__version__, "freetype": ft2font.__freetype_version__,
             "fonts": FONT_FILES,
             "image_size": options.image_size, "samples_per_face": options.samples_per_face, "seed": options.seed,
             **jitter}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:20]
    return resolve_cache_dir(options.cache_dir) / "glyphs" / f"glyphs-{key}.npz"


def glyph_classes(faces: list[FT2Font]) -> list[int]:
    """The code points of the distinct characters all `faces` cover, in split order (train half first)."""
    candidates = common_codepoints(faces)
    reference = np.stack([np.stack([render_glyph(face, c, SAME_CANVAS) for c in candidates]) for face in faces])
    return split_order([candidates[k] for k in distinct_glyphs(candidates, reference)])


def render_samples(classes: list[int], faces: list[FT2Font], options: GlyphOptions) -> dict[str, np.ndarray]:
    """images uint8 (N, S, S), labels int32 (N,) indexing `classes`, faces uint8 (N,), codepoints int32 (C,).

    Items are ordered by class, then face, then sample; the jitter comes from `default_rng(options.seed)`.
    """
    canvas = 2 * options.image_size  # warped at 2x and averaged down: the source needs that resolution
    canonical = torch.from_numpy(np.stack([render_glyph(face, c, canvas) for c in classes for face in faces]))
    source = torch.arange(canonical.shape[0]).repeat_interleave(options.samples_per_face)  # (N,) canonical row
    affine, stroke = sample_warps(source.numel(), options.jitter(), np.random.default_rng(options.seed))
    images = warp_glyphs(canonical, source, affine, stroke, options.image_size)
    return {
        "images": images.numpy(),
        "labels": (source // len(faces)).numpy().astype(np.int32),
        "faces": (source % len(faces)).numpy().astype(np.uint8),
        "codepoints": np.asarray(classes, dtype=np.int32),
    }


def generate_glyphs(options: GlyphOptions) -> dict[str, np.ndarray]:
    """The whole dataset for `options` (what the cache holds): `render_samples` of every class."""
    faces = open_faces()
    return render_samples(glyph_classes(faces), faces, options)


def _arrays(options: GlyphOptions) -> dict[str, np.ndarray]:
    path = glyph_cache_path(options)
    arrays = load_arrays(path, _ARRAYS)
    if arrays is None:
        arrays = generate_glyphs(options)
        save_arrays(path, arrays)
    return arrays


def load_glyphs(root: str | Path | None, options: GlyphOptions) -> DatasetSplit:
    if root is not None:
        raise ValueError(f"the glyphs dataset is generated, not read from disk: got root={str(root)!r} "
                         f"(its cache directory is the cache_dir option)")
    arrays = _arrays(options)
    codepoints = arrays["codepoints"].tolist()
    total = len(codepoints) if options.num_classes is None else min(options.num_classes, len(codepoints))
    n_train = total // 2
    labels = torch.from_numpy(arrays["labels"].astype(np.int64))
    images = torch.from_numpy(arrays["images"])[:, None]  # (N, 1, S, S)
    names = [chr(c) for c in codepoints]

    def part(first: int, stop: int, train: bool) -> InMemoryDataset:
        # Items are sorted by class, so a class range is a slice: views, no copy of the images.
        lo, hi = torch.searchsorted(labels, torch.tensor([first, stop])).tolist()
        return InMemoryDataset(images[lo:hi], labels[lo:hi] - first, names[first:stop], mean=(0.0,), std=(1.0,),
                               train=train)

    return DatasetSplit("glyphs", part(0, n_train, True), part(n_train, total, False))
