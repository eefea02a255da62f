"""What results needs of a study directory: where its tables are and what study.json says about it.

A study directory is a local path or a URI (`s3://bucket/studies/name`, `gs://...`, `file:///...`) as the study's
`storage` was: URIs are read through pyarrow's filesystems, the same ones the study wrote them with.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import pyarrow.fs as pafs

from results._schema import Mode

__all__ = ["Location", "PathsLike", "StudyInfo", "epochs_path", "filesystem_of", "read_study_info",
           "study_dirs", "trials_path"]

PathsLike = Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]]]
# A local directory, or a URI string for object stores and other pyarrow filesystems.
Location = Union[Path, str]


def _is_uri(item: object) -> bool:
    return isinstance(item, str) and "://" in item


def filesystem_of(location: Location) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path within it) of a local path or a URI."""
    if _is_uri(location):
        return pafs.FileSystem.from_uri(str(location))
    return pafs.LocalFileSystem(), str(location)


def _exists_in(filesystem: pafs.FileSystem, inner: str) -> bool:
    return filesystem.get_file_info(inner).type != pafs.FileType.NotFound


def _join(location: Location, *parts: str) -> Location:
    if isinstance(location, Path):
        return location.joinpath(*parts)
    return "/".join([location.rstrip("/"), *parts])


@dataclass(frozen=True)
class StudyInfo:
    """study.json, with the defaults that a study written before study.json existed implies."""

    path: Location
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


def epochs_path(study_dir: Location) -> Location:
    return _join(study_dir, "results", "epochs.parquet")


def trials_path(study_dir: Location) -> Location:
    return _join(study_dir, "results", "trials.parquet")


def study_dirs(paths: PathsLike) -> list[Location]:
    """One path or URI or several -> study directories, each checked, duplicates dropped (first kept)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise ValueError("no study directory given; expected one path or several")
    dirs: list[Location] = []
    for item in items:
        path: Location = str(item).rstrip("/") if _is_uri(item) else Path(item).expanduser().resolve()
        try:
            # One filesystem per directory: on an object store each resolution can cost a request.
            filesystem, inner = filesystem_of(path)
            found = any(_exists_in(filesystem, str(where(inner))) for where in (epochs_path, trials_path))
        except (OSError, ValueError) as err:  # an unknown URI scheme, unreachable storage, missing credentials
            raise ValueError(f"{item} cannot be read: {err}".splitlines()[0]) from None
        if not found:
            raise ValueError(f"{item} is not a study directory: expected results/epochs.parquet or "
                             f"results/trials.parquet inside it")
        if path not in dirs:
            dirs.append(path)
    return dirs


def _name(study_dir: Location) -> str:
    return study_dir.name if isinstance(study_dir, Path) else study_dir.rstrip("/").rsplit("/", 1)[-1]


def _read_text(location: Location) -> str | None:
    """The file's text, or None when it does not exist."""
    filesystem, inner = filesystem_of(location)
    if not _exists_in(filesystem, inner):
        return None
    with filesystem.open_input_stream(inner) as stream:
        return bytes(stream.readall()).decode()


def read_study_info(study_dir: Location) -> StudyInfo:
    """study.json of `study_dir`, or the defaults when it has none."""
    file = _join(study_dir, "study.json")
    name = _name(study_dir)
    text = _read_text(file)
    if text is None:
        return StudyInfo(path=study_dir, name=name)
    try:
        raw = json.loads(text)
        log_scale = {str(loss): tuple(map(str, cols)) for loss, cols in dict(raw.get("log_scale") or {}).items()}
        return StudyInfo(path=study_dir, name=str(raw.get("name") or name),
                         metric=str(raw.get("metric") or "recall@1"), mode=Mode(raw.get("mode") or "max"),
                         log_scale=log_scale, from_file=True)
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{file} is not a valid study.json ({type(err).__name__}: {err}); expected "
                         f'{{"name": str, "metric": str, "mode": "max"|"min", "log_scale": {{loss: [columns]}}}}'
                         ) from None
