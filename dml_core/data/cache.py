"""The on-disk cache of generated datasets: where it lives, and how its array files are written and read.

Cache files are written atomically (dml_core.files): concurrent trials that generate the same file at once each
write their own temporary, and whichever replace comes last leaves an identical, complete file.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from dml_core.files import write_atomic

__all__ = ["CACHE_ENV", "cache_dir", "save_arrays", "load_arrays"]

CACHE_ENV = "DML_STUDY_CACHE"


def cache_dir(override: str | os.PathLike[str] | None) -> Path:
    """The cache root: `override`, else $DML_STUDY_CACHE, else ~/.cache/dml-study."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "dml-study"


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an uncompressed .npz atomically (uncompressed: loading is then a memory copy, not a decode)."""
    write_atomic(path, lambda handle: np.savez(handle, **arrays), sync=True)


def load_arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays `names` of a cache file, or None when it is missing or unreadable (then it is regenerated)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in names}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None
