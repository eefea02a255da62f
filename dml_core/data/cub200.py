"""CUB-200-2011 (Wah et al. 2011): 200 bird species, 11,788 images; classes 1-100 train, 101-200 test.

Layout (the official archive's CUB_200_2011/ directory; `root` may also be its parent):

    images.txt             "<image_id> <path relative to images/>" per line
    image_class_labels.txt "<image_id> <class_id 1..200>" per line
    classes.txt            "<class_id> <name>" per line (optional: names default to the image folder's)
    images/<class folder>/<file>.jpg
"""

from __future__ import annotations

from pathlib import Path

from dml_core.data.base import DatasetSplit
from dml_core.data.image_files import files_split, require_file, require_root
from dml_core.data.transforms import ImageOptions

__all__ = ["load_cub200", "CUB_LAYOUT"]

CUB_LAYOUT = "CUB_200_2011 layout: images.txt, image_class_labels.txt, images/"
_TRAIN_CLASSES = 100  # class ids 1..100 train, 101..200 test: the standard DML split


def _read_table(path: Path) -> dict[str, str]:
    """A two-column whitespace-separated file -> {first: second}; a malformed line is a one-line error."""
    table = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2:
            raise ValueError(f"{path}:{number}: expected '<id> <value>', got {line!r}")
        table[fields[0]] = fields[1].strip()
    return table


def _locate(root: Path) -> Path:
    nested = root / "CUB_200_2011"
    return nested if not (root / "images.txt").exists() and (nested / "images.txt").exists() else root


def load_cub200(root: str | Path | None, options: ImageOptions) -> DatasetSplit:
    base = _locate(require_root("cub200", root, CUB_LAYOUT))
    images = _read_table(require_file("cub200", base / "images.txt", CUB_LAYOUT))
    labels = _read_table(require_file("cub200", base / "image_class_labels.txt", CUB_LAYOUT))
    names_file = base / "classes.txt"
    names = _read_table(names_file) if names_file.is_file() else {}
    if not images:
        raise ValueError(f"dataset 'cub200': {base / 'images.txt'} lists no images")
    if images.keys() != labels.keys():
        raise ValueError(f"dataset 'cub200': {base / 'images.txt'} and {base / 'image_class_labels.txt'} "
                         f"list different image ids")
    try:
        ids = sorted(images, key=int)
        class_ids = [int(labels[i]) for i in ids]
    except ValueError as exc:
        raise ValueError(f"dataset 'cub200': ids in {base / 'images.txt'} and {base / 'image_class_labels.txt'} "
                         f"must be integers: {exc}") from None
    if min(class_ids, default=1) < 1:
        raise ValueError(f"dataset 'cub200': class ids in {base / 'image_class_labels.txt'} must start at 1, "
                         f"got {min(class_ids)}")
    num_classes = max(class_ids)
    folder = {c: Path(images[i]).parent.name for i, c in zip(ids, class_ids)}
    classes = [names.get(str(c), folder.get(c, str(c))) for c in range(1, num_classes + 1)]
    return files_split("cub200", [base / "images" / images[i] for i in ids], [c - 1 for c in class_ids], classes,
                       [c <= _TRAIN_CLASSES for c in class_ids], options)
