"""Stanford Online Products (Oh Song et al. 2016): 22,634 products, 120,053 images; the official split
(11,318 training classes in Ebay_train.txt, 11,316 test classes in Ebay_test.txt).

Layout:

    Ebay_train.txt, Ebay_test.txt   header "image_id class_id super_class_id path", then one image per line,
                                    path relative to the root ("bicycle_final/111085122871_0.JPG")
    <super class>_final/<file>.JPG
"""

from __future__ import annotations

from pathlib import Path

from dml_core.data.base import DatasetSplit
from dml_core.data.image_files import files_split, require_file, require_root
from dml_core.data.transforms import ImageOptions

__all__ = ["load_sop", "SOP_LAYOUT"]

SOP_LAYOUT = "Stanford Online Products layout: Ebay_train.txt, Ebay_test.txt, <category>_final/ image folders"


def _read_split(path: Path) -> list[tuple[int, str]]:
    """(class_id, relative path) per image of one Ebay_*.txt file."""
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines[1:], start=2):  # line 1 is the header
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 4 or not fields[1].isdigit():
            raise ValueError(f"{path}:{number}: expected 'image_id class_id super_class_id path', got {line!r}")
        rows.append((int(fields[1]), fields[3]))
    return rows


def load_sop(root: str | Path | None, options: ImageOptions) -> DatasetSplit:
    base = require_root("sop", root, SOP_LAYOUT)
    train = _read_split(require_file("sop", base / "Ebay_train.txt", SOP_LAYOUT))
    test = _read_split(require_file("sop", base / "Ebay_test.txt", SOP_LAYOUT))
    overlap = {c for c, _ in train} & {c for c, _ in test}
    if overlap:
        raise ValueError(f"dataset 'sop': Ebay_train.txt and Ebay_test.txt share {len(overlap)} class id(s), "
                         f"e.g. {min(overlap)}; the split must be class-disjoint")
    rows = train + test
    class_ids = sorted({c for c, _ in rows})
    index = {c: i for i, c in enumerate(class_ids)}
    return files_split("sop", [base / p for _, p in rows], [index[c] for c, _ in rows], [str(c) for c in class_ids],
                       [True] * len(train) + [False] * len(test), options)
