"""Any image collection with one folder per class: root/<class>/<image>. The sorted class names are split in
halves: the first half trains, the second half tests (with an odd count the test half has one more)."""

from __future__ import annotations

from pathlib import Path

from dml_core.data.base import DatasetSplit
from dml_core.data.image_files import files_split, require_root
from dml_core.data.transforms import ImageOptions

__all__ = ["load_imagefolder", "IMAGE_EXTENSIONS", "FOLDER_LAYOUT"]

FOLDER_LAYOUT = "one sub-directory of images per class: root/<class>/<image>"
# Formats Pillow decodes out of the box; matched case-insensitively.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def load_imagefolder(root: str | Path | None, options: ImageOptions) -> DatasetSplit:
    base = require_root("imagefolder", root, FOLDER_LAYOUT)
    folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = {f.name: sorted(p for p in f.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
             for f in folders}
    classes = [name for name, images in files.items() if images]  # empty folders are not classes
    if len(classes) < 2:
        raise ValueError(f"dataset 'imagefolder': {base} has {len(classes)} class folder(s) with images; "
                         f"need at least 2 ({FOLDER_LAYOUT})")
    n_train = len(classes) // 2
    paths, labels = [], []
    for label, name in enumerate(classes):
        paths += files[name]
        labels += [label] * len(files[name])
    return files_split("imagefolder", paths, labels, classes, [label < n_train for label in labels], options)
