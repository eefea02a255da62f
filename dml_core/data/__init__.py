"""Datasets: `load_dataset(name, *, root=None, **options) -> DatasetSplit`, an explicit name table, no downloads.

- `glyphs` (default, generated offline from matplotlib's fonts, cached): options in `GlyphOptions`.
- `cub200`, `cars196`, `sop`, `imagefolder` (read from `root`; decoded once into a memory-mapped cache and
  augmented on the device, or decoded per item with `decoded_cache=False`): options in `ImageOptions`.

A `DatasetSplit` has class-disjoint `.train` and `.test` `DMLDataset`s and `.folds(k)`, k class-disjoint
(train, val) splits of the training classes. Unknown names or options raise ValueError listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from dml_core.data.base import DatasetSplit, DMLDataset
from dml_core.data.cars196 import load_cars196
from dml_core.data.cub200 import load_cub200
from dml_core.data.decoded_dataset import DecodedImageDataset
from dml_core.data.glyphs import GlyphOptions, load_glyphs
from dml_core.data.image_files import ImageFileDataset
from dml_core.data.imagefolder import load_imagefolder
from dml_core.data.in_memory import InMemoryDataset
from dml_core.data.serving import BatchSource, serve_batches
from dml_core.data.sop import load_sop
from dml_core.data.transforms import ImageOptions
from dml_core.names import check_known, lookup

__all__ = ["DATASETS", "BatchSource", "DatasetEntry", "DatasetSplit", "DecodedImageDataset", "DMLDataset",
           "GlyphOptions", "ImageFileDataset", "ImageOptions", "InMemoryDataset", "dataset_options", "load_dataset",
           "serve_batches"]


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset's options (a frozen dataclass that validates itself) and its loader."""

    options: type[Any]
    load: Callable[[str | Path | None, Any], DatasetSplit]


DATASETS: dict[str, DatasetEntry] = {
    "glyphs": DatasetEntry(GlyphOptions, load_glyphs),
    "cub200": DatasetEntry(ImageOptions, load_cub200),
    "cars196": DatasetEntry(ImageOptions, load_cars196),
    "sop": DatasetEntry(ImageOptions, load_sop),
    "imagefolder": DatasetEntry(ImageOptions, load_imagefolder),
}


def _entry(name: str) -> DatasetEntry:
    return lookup(DATASETS, name, "dataset")


def dataset_options(name: str) -> dict[str, Any]:
    """The options dataset `name` accepts, with their defaults."""
    return {f.name: f.default for f in fields(_entry(name).options) if f.default is not MISSING}


def load_dataset(name: str, *, root: str | Path | None = None, **options: Any) -> DatasetSplit:
    """Load dataset `name`: `root` is its directory (None for the generated `glyphs`)."""
    entry = _entry(name)
    check_known(options, dataset_options(name), "option(s)", f"dataset {name!r}")
    return entry.load(root, entry.options(**options))
