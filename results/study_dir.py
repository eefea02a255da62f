"""The study directory: its files, study.json, the schemas of its two tables and the part files they are made of.

The one owner of the format: the study (study/recorder.py, study/runner.py) writes through this module and the
analysis (results) reads through it. It imports pyarrow and the standard library only, so reading a study needs
neither Ray nor torch. A study directory is a local path or a URI (`s3://bucket/studies/name`, `file:///...`),
as the study's `storage` was.

    STUDY_DIR/
      config.yaml                the resolved study config (what `resume` reads back)
      study.json                 StudyInfo: name, uid, metric, mode, metrics, log_scale, created
      results/epochs.parquet/    one row per trial x epoch        } Parquet datasets: directories of immutable
      results/trials.parquet/    one row per finished trial       } part files, each written atomically
      results/folds.parquet/     reality check: one row per trial x epoch x fold model (its validation metrics)
      results/final.parquet/     reality check: one row per loss x final run (its test metrics, both ways)
      mlflow.db                  the default MLflow tracking store (sqlite)
      mlflow_mirror.json         the last part of each table that MLflow has received (study.mlflow_mirror)
      tune/                      Ray Tune's experiment directory (Tuner.restore reads it)

Why part files and not one file: a study may report millions of epoch rows; rewriting one file per flush would
cost the driver more per result as the study grows. A part is written under a hidden name ('.'-prefixed, which
Parquet readers skip) and renamed into place (dml_core.files.write_atomic), compaction keeps the parts few
(O(log n), results/parts.py), and `pandas.read_parquet(directory)` reads the whole table in one call. Every part
has the schema fixed at the study's start, so dataset discovery (which takes its schema from the first file) never
drops a column.
"""

from __future__ import annotations

import enum
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dml_core.files import Location, join, read_text, write_text
from dml_core.mode import Mode
from results.parts import PartTable

__all__ = [
    "CONFIG_FILE", "EPOCH_TIMING", "EVALUATIONS", "FORMAT_VERSION", "MLFLOW_DB", "REPEAT_COLUMNS", "STUDY_FILE",
    "TUNE_DIR", "PartTable", "Phase", "Status", "StudyInfo", "StudyPaths", "epochs_schema", "final_schema",
    "new_study_info", "read_study_info", "trials_schema", "write_study_info",
]

# Bumped whenever a table's columns or study.json change meaning, so a study is never continued into tables of
# another shape. 2: sampled values named as search_spaces.space says; seed and fold as train.seed, train.fold.
# 3: the phase column; folds.parquet and final.parquet; study.json's protocol.
FORMAT_VERSION = 3
CONFIG_FILE = "config.yaml"
STUDY_FILE = "study.json"
TUNE_DIR = "tune"
MLFLOW_DB = "mlflow.db"
# Per-epoch timings the trainer reports besides the retrieval metrics.
EPOCH_TIMING = ("train_loss", "train_time_s", "eval_time_s", "epoch_time_s")
# The trial's seed and fold (TrainConfig fields, named as sampled values are): in every row of both tables, since
# they tell repeats of one configuration apart even where the search does not sample them.
REPEAT_COLUMNS = ("train.seed", "train.fold")
_ARROW = {"float": pa.float64(), "int": pa.int64(), "str": pa.string(), "bool": pa.bool_()}


@dataclass(frozen=True)
class StudyPaths:
    """Where each file of a study directory is (a local Path or a URI string, as the directory)."""

    root: Location

    @property
    def config(self) -> Location:
        return join(self.root, CONFIG_FILE)

    @property
    def study(self) -> Location:
        return join(self.root, STUDY_FILE)

    @property
    def tune(self) -> Location:
        return join(self.root, TUNE_DIR)

    @property
    def mlflow_progress(self) -> Location:
        """What the MLflow mirror has sent (study.mlflow_mirror): the last part of each table."""
        return join(self.root, "mlflow_mirror.json")

    @property
    def results(self) -> Location:
        return join(self.root, "results")

    @property
    def epochs(self) -> Location:
        return join(self.root, "results", "epochs.parquet")

    @property
    def trials(self) -> Location:
        return join(self.root, "results", "trials.parquet")

    @property
    def folds(self) -> Location:
        return join(self.root, "results", "folds.parquet")

    @property
    def final(self) -> Location:
        return join(self.root, "results", "final.parquet")


class Phase(str, enum.Enum):
    """Which part of a study a trial belongs to (the `phase` column of every table)."""

    SEARCH = "search"  # a configuration the searcher chose (all trials of a plain search)
    FINAL = "final"  # reality check: a seeded rerun of a loss's best configuration, scored on the test classes


# The reality check scores each final run twice: the fold models' metrics averaged ("separated"), and the
# metrics of their concatenated embeddings ("concatenated"); final.parquet has `<evaluation>.<metric>` columns.
EVALUATIONS = ("concatenated", "separated")


class Status(str, enum.Enum):
    """A trial's state in the trials table."""

    COMPLETED = "completed"  # ran all its epochs
    STOPPED = "stopped"  # stopped early by the scheduler (ASHA): a normal end, at a smaller budget
    ERROR = "error"  # raised (a non-finite loss, a crash), or was lost in a driver crash
    # Never stored: results gives this status to trials that have epochs but no trials row yet (still running).
    RUNNING = "running"


# ---------------------------------------------------------------------------------------------------------------
# study.json


@dataclass(frozen=True)
class StudyInfo:
    """study.json, with the defaults that a directory without one implies."""

    path: Location
    # The directory name: the study writes into STORAGE/NAME, so it is the name when study.json is missing.
    name: str
    # A random id, unique per study: MLflow runs are tagged with it.
    uid: str = ""
    # The metric the study optimised; recall@1 is the study config's default metric.
    metric: str = "recall@1"
    # Every retrieval metric is larger-is-better.
    mode: Mode = Mode.MAX
    # The metrics every epoch reports, in table order (from train.ks); () when unknown (results then infers them
    # from the columns).
    metrics: tuple[str, ...] = ()
    # Per loss, its sampled columns best read on a log scale; empty: results infers the scale from the values.
    log_scale: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    created: str = ""
    # The directory format it was written in; 1 for a study.json from before formats were numbered.
    format: int = FORMAT_VERSION
    # The protocol section as written when the study started ({"kind": "search"} for a plain search), so that
    # `show` can say how far each loss is without reading the config.
    protocol: Mapping[str, Any] = field(default_factory=lambda: {"kind": "search"})
    # False for a directory without study.json: metric and mode above are defaults, not facts.
    from_file: bool = False

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "uid": self.uid, "format": self.format, "metric": self.metric,
                           "mode": self.mode.value, "metrics": list(self.metrics),
                           "log_scale": {k: list(v) for k, v in self.log_scale.items()},
                           "protocol": dict(self.protocol), "created": self.created}, indent=2)


def new_study_info(study_dir: Location, *, name: str, metric: str, mode: Mode, metrics: Sequence[str],
                   log_scale: Mapping[str, Sequence[str]], protocol: Mapping[str, Any] | None = None) -> StudyInfo:
    """The study.json of a new study: a fresh uid and the creation time."""
    return StudyInfo(path=study_dir, name=name, uid=uuid.uuid4().hex, metric=metric, mode=mode,
                     metrics=tuple(metrics), log_scale={k: tuple(v) for k, v in log_scale.items()},
                     protocol=dict(protocol or {"kind": "search"}), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     from_file=True)


def _name(study_dir: Location) -> str:
    return str(study_dir).rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]


def read_study_info(study_dir: Location) -> StudyInfo:
    """study.json of `study_dir`, or the defaults when it has none; ValueError naming the file when it is corrupt."""
    file = StudyPaths(study_dir).study
    text = read_text(file)
    if text is None:
        return StudyInfo(path=study_dir, name=_name(study_dir))
    try:
        raw = json.loads(text)
        log_scale = {str(loss): _names(cols, f"log_scale.{loss}")
                     for loss, cols in dict(raw.get("log_scale") or {}).items()}
        return StudyInfo(path=study_dir, name=str(raw.get("name") or _name(study_dir)), uid=str(raw.get("uid") or ""),
                         metric=str(raw.get("metric") or "recall@1"), mode=Mode(raw.get("mode") or "max"),
                         metrics=_names(raw.get("metrics") or [], "metrics"), log_scale=log_scale,
                         protocol=dict(raw.get("protocol") or {"kind": "search"}),
                         created=str(raw.get("created") or ""), format=int(raw.get("format", 1)), from_file=True)
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{file} is not a valid study.json ({type(err).__name__}: {err}); expected "
                         f'{{"name": str, "metric": str, "mode": "max"|"min", "metrics": [str], '
                         f'"log_scale": {{loss: [columns]}}}}') from None


def _names(value: object, key: str) -> tuple[str, ...]:
    """A JSON list of names; a bare string would otherwise be split into its letters."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of names, got {value!r}")
    return tuple(value)


def write_study_info(info: StudyInfo) -> None:
    write_text(StudyPaths(info.path).study, info.to_json())


# ---------------------------------------------------------------------------------------------------------------
# The two tables.


def _head(param_columns: Mapping[str, str]) -> list[pa.Field]:
    """The columns that identify a trial and its configuration, in both tables."""
    fields = [pa.field(n, pa.string()) for n in ("study", "trial_id", "phase", "config_id", "loss", "miner")]
    fields += [pa.field(name, _ARROW[kind]) for name, kind in param_columns.items()
               if name not in ("loss", "miner", *REPEAT_COLUMNS)]
    return fields + [pa.field(name, pa.int64()) for name in REPEAT_COLUMNS]


def epochs_schema(param_columns: Mapping[str, str], metrics: Sequence[str]) -> pa.Schema:
    """One row per trial x epoch. `param_columns`: sampled name -> "float" | "int" | "str" | "bool"."""
    tail = [pa.field("epoch", pa.int64())]
    tail += [pa.field(m, pa.float64()) for m in metrics]
    tail += [pa.field(n, pa.float64()) for n in (*EPOCH_TIMING, "time_total_s", "timestamp")]
    # Where the trial ran: its Ray node, and the GPUs Ray gave it ("0" for each trial packed on GPU 0 with
    # fractional gpus_per_trial; null on CPUs).
    tail += [pa.field("node_id", pa.string()), pa.field("gpu_ids", pa.string())]
    return pa.schema(_head(param_columns) + tail)


def trials_schema(param_columns: Mapping[str, str], metrics: Sequence[str]) -> pa.Schema:
    """One row per finished trial: `best_<m>` at its best epoch by the study metric, `last_<m>` at its last."""
    tail = [pa.field("status", pa.string()), pa.field("error", pa.string()), pa.field("stop_reason", pa.string()),
            pa.field("epochs", pa.int64()), pa.field("best_epoch", pa.int64())]
    for prefix in ("best_", "last_"):
        tail += [pa.field(prefix + m, pa.float64()) for m in (*metrics, "train_loss")]
    tail += [pa.field("wall_time_s", pa.float64())]
    return pa.schema(_head(param_columns) + tail)


def final_schema(param_columns: Mapping[str, str], metrics: Sequence[str]) -> pa.Schema:
    """One row per final run of the reality check: `final_run` (0-based, per loss), the epoch of each fold
    model's best validation (comma-separated, fold order), and every metric on the test classes, both ways."""
    tail = [pa.field("final_run", pa.int64()), pa.field("best_epochs", pa.string())]
    for evaluation in EVALUATIONS:
        tail += [pa.field(f"{evaluation}.{m}", pa.float64()) for m in metrics]
    tail += [pa.field("wall_time_s", pa.float64())]
    return pa.schema(_head(param_columns) + tail)
