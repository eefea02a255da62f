"""What results needs of a study directory: where its tables are and what study.json says about it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from results._schema import Mode

__all__ = ["PathsLike", "StudyInfo", "epochs_path", "read_study_info", "study_dirs", "trials_path"]

PathsLike = Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]]]


@dataclass(frozen=True)
class StudyInfo:
    """study.json, with the defaults that a study written before study.json existed implies."""

    path: Path
    # The directory name: the study writes into STORAGE/NAME, so it is the name when study.json is missing.
    name: str
    # The metric the study optimised; recall@1 is the study config's default metric.
    metric: str = "recall@1"
    # Every retrieval metric is larger-is-better.
    mode: Mode = Mode.MAX
    # No log-scaled columns known: results then infers the scale from the values.
    log_scale: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # False for a study written before study.json: its metric and mode above are defaults, not facts.
    from_file: bool = False


def epochs_path(study_dir: Path) -> Path:
    return study_dir / "results" / "epochs.parquet"


def trials_path(study_dir: Path) -> Path:
    return study_dir / "results" / "trials.parquet"


def study_dirs(paths: PathsLike) -> list[Path]:
    """One path or several -> study directories, each checked, duplicates dropped (first kept)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise ValueError("no study directory given; expected one path or several")
    dirs: list[Path] = []
    for item in items:
        path = Path(item).expanduser().resolve()
        if not (epochs_path(path).exists() or trials_path(path).exists()):
            raise ValueError(f"{item} is not a study directory: expected results/epochs.parquet or "
                             f"results/trials.parquet inside it")
        if path not in dirs:
            dirs.append(path)
    return dirs


def read_study_info(study_dir: Path) -> StudyInfo:
    """study.json of `study_dir`, or the defaults when it has none."""
    file = study_dir / "study.json"
    if not file.exists():
        return StudyInfo(path=study_dir, name=study_dir.name)
    try:
        raw = json.loads(file.read_text())
        log_scale = {str(loss): tuple(map(str, cols)) for loss, cols in dict(raw.get("log_scale") or {}).items()}
        return StudyInfo(path=study_dir, name=str(raw.get("name") or study_dir.name),
                         metric=str(raw.get("metric") or "recall@1"), mode=Mode(raw.get("mode") or "max"),
                         log_scale=log_scale, from_file=True)
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{file} is not a valid study.json ({type(err).__name__}: {err}); expected "
                         f'{{"name": str, "metric": str, "mode": "max"|"min", "log_scale": {{loss: [columns]}}}}'
                         ) from None
