"""Read the epochs and trials tables of one or several studies into one pandas DataFrame.

Each table is a Parquet dataset (a directory of part files). Dataset discovery takes its schema from the first part,
so columns that only later parts (or other studies) have would vanish: the schemas are unified first, and studies
that sampled other losses concatenate with nulls in the columns they lack.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dml_core.config import TrainConfig
from dml_core.files import Location, is_uri, resolve_filesystem
from results.parts import Part, PartTable
from results.study_dir import StudyInfo, StudyPaths, epochs_schema, final_schema, read_study_info, trials_schema

__all__ = ["PathsLike", "load_epochs", "load_final", "load_folds", "load_trials", "study_dirs"]

PathsLike = Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]]]
# The metrics of a table whose study does not list them (a study.json from before it did): TrainConfig's default.
_DEFAULT_METRICS = TrainConfig().metric_names
_READ_ATTEMPTS = 20  # loads started again at most this often while compactions replace parts under them
# Nullable pandas dtypes keep integer and boolean columns what they are when a study's other losses leave nulls.
_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}


def study_dirs(paths: PathsLike) -> list[Location]:
    """One path or URI or several -> study directories, each checked, duplicates dropped (first kept)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise ValueError("no study directory given; expected one path or several")
    dirs: list[Location] = []
    for item in items:
        path: Location = str(item).rstrip("/") if is_uri(item) else Path(item).expanduser().resolve()
        try:
            # One filesystem per directory: on an object store each resolution can cost a request.
            filesystem, inner = resolve_filesystem(path)
            study = StudyPaths(inner)
            found = any(filesystem.get_file_info(str(where)).type != pafs.FileType.NotFound
                        for where in (study.epochs, study.trials, study.study))
        except (OSError, ValueError) as err:  # an unknown URI scheme, unreachable storage, missing credentials
            raise ValueError(f"{item} cannot be read: {err}".splitlines()[0]) from None
        if not found:
            raise ValueError(f"{item} is not a study directory: expected study.json, results/epochs.parquet or "
                             f"results/trials.parquet inside it")
        if path not in dirs:
            dirs.append(path)
    return dirs


@dataclass(frozen=True)
class _Source:
    info: StudyInfo
    filesystem: pafs.FileSystem
    files: tuple[str, ...]
    schema: pa.Schema


def load_epochs(paths: PathsLike, *, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per trial x epoch of every study in `paths` (one study directory or several).

    `columns`: names or fnmatch patterns (`"loss.*"`) to read, the rest are not read at all; `study` is always
    read; a name no study has raises ValueError, a pattern may match nothing. The frame's `attrs` carry what
    study.json says: `log_scale`, and `metric` and `mode` when the studies agree on them.
    """
    return _load(paths, lambda d: StudyPaths(d).epochs, epochs_schema, columns)


def load_trials(paths: PathsLike, *, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per finished trial of every study in `paths`; empty (with the fixed columns) while none finished."""
    return _load(paths, lambda d: StudyPaths(d).trials, trials_schema, columns)


def load_folds(paths: PathsLike, *, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Reality check: one row per trial x epoch x fold model, its validation metrics (`train.fold` is the fold);
    the epochs table holds their mean. Empty for a plain search."""
    return _load(paths, lambda d: StudyPaths(d).folds, epochs_schema, columns)


def load_final(paths: PathsLike, *, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Reality check: one row per loss x final run, its test-class metrics as `concatenated.<metric>` and
    `separated.<metric>`. Empty until a loss's final runs finish (and for a plain search)."""
    return _load(paths, lambda d: StudyPaths(d).final, final_schema, columns)


def _load(paths: PathsLike, where: Callable[[Location], Location], schema: Callable[..., pa.Schema],
          columns: Sequence[str] | None) -> pd.DataFrame:
    infos = [read_study_info(d) for d in study_dirs(paths)]
    for _ in range(_READ_ATTEMPTS):
        try:
            return _load_once(infos, where, schema, columns)
        except FileNotFoundError:
            continue  # a compaction replaced parts between listing and reading: list again
    raise OSError(f"the tables of {', '.join(str(i.path) for i in infos)} kept changing under {_READ_ATTEMPTS} reads")


def _load_once(infos: list[StudyInfo], where: Callable[[Location], Location], schema: Callable[..., pa.Schema],
               columns: Sequence[str] | None) -> pd.DataFrame:
    sources = [s for s in (_source(info, where(info.path)) for info in infos) if s is not None]
    # The columns an empty table still has (a running study has no trials.parquet yet), so code downstream
    # finds them.
    empty = schema({}, _metrics(infos) or _DEFAULT_METRICS)
    names = _selected(columns, [s.schema for s in sources] or [empty])
    tables = [_read(source, names) for source in sources]
    if tables:
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise ValueError(f"the studies' tables do not combine: {err}".splitlines()[0]) from None
    else:
        table = empty.empty_table().select([n for n in names if n in empty.names])
    frame = table.to_pandas(types_mapper=_PANDAS_TYPES.get)
    frame.attrs.update(_attrs(infos))
    return frame


def _source(info: StudyInfo, dataset: Location) -> _Source | None:
    """The live part files of one table (a consistent set while the study writes and compacts, results.parts)
    and their unified schema; None while the table has no part yet."""
    filesystem, inner = resolve_filesystem(dataset)
    if filesystem.get_file_info(inner).type == pafs.FileType.NotFound:
        return None
    parts, schema = PartTable(dataset, pa.schema([])).snapshot(lambda parts: _unified(dataset, filesystem, parts))
    if not parts:
        return None
    return _Source(info=info, filesystem=filesystem, files=tuple(p.path for p in parts), schema=schema)


def _unified(dataset: Location, filesystem: pafs.FileSystem, parts: Sequence[Part]) -> pa.Schema | None:
    try:
        return pa.unify_schemas([pq.read_schema(p.path, filesystem=filesystem) for p in parts],
                                promote_options="permissive") if parts else None
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(f"the part files of {dataset} do not combine: {err}".splitlines()[0]) from None


def _selected(columns: Sequence[str] | None, schemas: list[pa.Schema]) -> list[str]:
    """All columns of all studies in first-seen order, or the ones `columns` names (plus `study`)."""
    available = list(dict.fromkeys(name for schema in schemas for name in schema.names))
    if columns is None:
        return available
    if isinstance(columns, str):
        columns = [columns]
    # A plain name must exist somewhere; a pattern ("loss.*") may match nothing (a study without such columns).
    unmatched = [c for c in columns if c not in available and not _is_pattern(c)]
    if unmatched:
        raise ValueError(f"column(s) {', '.join(map(repr, unmatched))} are in no study table; "
                         f"available: {', '.join(available)}")
    picked = [name for name in available if name == "study" or any(fnmatch.fnmatchcase(name, c) for c in columns)]
    return picked if "study" in picked else ["study", *picked]


def _is_pattern(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def _read(source: _Source, names: list[str]) -> pa.Table:
    present = [n for n in names if n in source.schema.names]
    table = ds.dataset(list(source.files), schema=source.schema, format="parquet",
                       filesystem=source.filesystem).to_table(columns=present)
    # A table without a study column (or with gaps in it) gets the study's name, so studies stay apart.
    if "study" in table.column_names:
        return table.set_column(table.column_names.index("study"), "study",
                                pc.fill_null(table["study"].cast(pa.string()), source.info.name))
    return table.add_column(0, "study", pa.array([source.info.name] * table.num_rows, pa.string()))


def _attrs(infos: list[StudyInfo]) -> dict[str, object]:
    """study.json facts for downstream defaults: the metric and mode only when every study agrees on them."""
    known = [i for i in infos if i.from_file]
    targets = {i.metric for i in known}
    modes = {i.mode.value for i in known}
    log_scale: dict[str, list[str]] = {}
    for info in infos:
        for loss, cols in info.log_scale.items():
            log_scale.setdefault(loss, [])
            log_scale[loss] += [c for c in cols if c not in log_scale[loss]]
    attrs: dict[str, object] = {"studies": [i.name for i in infos], "log_scale": log_scale}
    reported = _metrics(infos)
    if reported:
        attrs["metrics"] = reported
    if len(targets) == 1 and len(modes) == 1:
        attrs["metric"], attrs["mode"] = targets.pop(), modes.pop()
    return attrs


def _metrics(infos: list[StudyInfo]) -> list[str]:
    """Every metric some study lists, in first-seen order (empty when no study.json lists them)."""
    return list(dict.fromkeys(m for info in infos for m in info.metrics))
