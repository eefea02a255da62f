"""Cars196 (Krause et al. 2013): 196 car models, 16,185 images; classes 1-98 train, 99-196 test.

Layout (the "all images" release):

    cars_annos.mat   MATLAB struct array `annotations` with fields relative_im_path ('car_ims/000001.jpg'),
                     bbox_x1, bbox_y1, bbox_x2, bbox_y2, class (1..196), test (0/1: the classification split,
                     unused by the DML protocol); cell array `class_names` (optional)
    car_ims/<file>.jpg
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from dml_core.data.base import DatasetSplit
from dml_core.data.image_files import files_split, require_file, require_root
from dml_core.data.transforms import ImageOptions

__all__ = ["load_cars196", "CARS_LAYOUT"]

CARS_LAYOUT = "Cars196 layout: cars_annos.mat, car_ims/"
_TRAIN_CLASSES = 98  # class ids 1..98 train, 99..196 test: the standard DML split


def _annotations(path: Path) -> tuple[list[str], list[int], list[str] | None]:
    """(relative image paths, 1-based class ids, class names or None) from cars_annos.mat."""
    try:
        mat: dict[str, Any] = scipy.io.loadmat(str(path), squeeze_me=True)
        annotations = np.atleast_1d(mat["annotations"])
        relative = [str(p) for p in np.atleast_1d(annotations["relative_im_path"])]
        class_ids = [int(c) for c in np.atleast_1d(annotations["class"])]
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise ValueError(f"dataset 'cars196': {path} is not a cars_annos.mat with an `annotations` struct "
                         f"(fields relative_im_path, class): {exc!r}") from None
    names = [str(n) for n in np.atleast_1d(mat["class_names"])] if "class_names" in mat else None
    return relative, class_ids, names


def load_cars196(root: str | Path | None, options: ImageOptions) -> DatasetSplit:
    base = require_root("cars196", root, CARS_LAYOUT)
    relative, class_ids, names = _annotations(require_file("cars196", base / "cars_annos.mat", CARS_LAYOUT))
    if min(class_ids, default=0) < 1:
        raise ValueError(f"dataset 'cars196': class ids in {base / 'cars_annos.mat'} must start at 1, "
                         f"got {min(class_ids, default=0)}")
    num_classes = max(class_ids)
    classes = names if names is not None and len(names) >= num_classes else [str(c) for c in range(1, num_classes + 1)]
    return files_split("cars196", [base / r for r in relative], [c - 1 for c in class_ids], classes,
                       [c <= _TRAIN_CLASSES for c in class_ids], options)
