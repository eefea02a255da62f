"""Synthetic studies for the results tests, written in the real study-directory format: tables built trial by
trial from a known structure, then written through results.study_dir (the format's one owner, which the study
writes through too) as Parquet datasets of part files, with study.json beside them.

The structure: a loss's final recall@1 is a known function of its hyperparameters (normalized_softmax peaks at
temperature 0.1; `train.weight_decay` never matters), each epoch approaches it, and the last epoch of a completed
trial dips slightly, so a trial's best epoch is not always its last. Columns are named as search_spaces.space
names sampled values: `<loss>.<hparam>`, `miner.<miner>.<hparam>`, `train.<field>`; seed and fold are
`train.seed` and `train.fold`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib.image
import numpy as np
import pandas as pd
import pyarrow as pa

from dml_core.mode import Mode
from results.study_dir import (
    PartTable,
    StudyInfo,
    StudyPaths,
    epochs_schema,
    new_study_info,
    trials_schema,
    write_study_info,
)

__all__ = [
    "EVAL_METRICS",
    "LOG_SCALE",
    "PNG_SIGNATURE",
    "assert_valid_png",
    "hand_ci",
    "metrics_for",
    "peak_recall",
    "study_frames",
    "temperature_trials",
    "write_part",
    "write_study",
]


def metrics_for(ks: Sequence[int]) -> tuple[str, ...]:
    """The metrics a study with `train.ks = ks` reports, in table order; written out here rather than taken from
    TrainConfig.metric_names, so the tests do not assume what they check."""
    return (*(f"recall@{k}" for k in ks), "precision@1", "r_precision", "map@r")


# The eval metrics of a study with the default train.ks (1, 2, 4, 8).
EVAL_METRICS = metrics_for((1, 2, 4, 8))
# What study.json's log_scale says for the synthetic losses.
LOG_SCALE = {"normalized_softmax": ["normalized_softmax.temperature", "train.lr"], "triplet": ["train.lr"],
             "contrastive": ["train.lr"]}


def peak_recall(temperature: np.ndarray | float) -> np.ndarray:
    """recall@1 of normalized_softmax against temperature: a parabola in log10(T) with its top at T = 0.1."""
    return 0.62 - 0.08 * (np.log10(temperature) + 1.0) ** 2


def temperature_trials(rng: np.random.Generator, n: int, *, grid: Sequence[float] | None = None,
                       noise: float = 0.005, study: str = "synthetic") -> pd.DataFrame:
    """A trials table of `n` completed normalized_softmax trials: recall@1 = peak_recall(T) + noise, with
    `train.weight_decay` (uniform, no effect) and `train.batch_size` (constant) beside the temperature."""
    temperature = (rng.choice(np.asarray(grid, dtype=float), size=n) if grid is not None
                   else 10 ** rng.uniform(-3, 0, size=n))
    recall = peak_recall(temperature) + rng.normal(0.0, noise, size=n)
    return pd.DataFrame({
        "study": study, "trial_id": [f"{study}_{i:05d}" for i in range(n)],
        "config_id": [f"c{i:05d}" for i in range(n)], "loss": "normalized_softmax", "miner": "none",
        "normalized_softmax.temperature": temperature, "train.weight_decay": rng.uniform(0.0, 1e-3, size=n),
        "train.batch_size": pd.array([32] * n, dtype="Int64"), "train.seed": pd.array([0] * n, dtype="Int64"),
        "train.fold": pd.array([None] * n, dtype="Int64"), "status": "completed", "best_recall@1": recall,
    })


def _normalized_softmax(rng: np.random.Generator) -> tuple[dict[str, Any], float]:
    t = float(10 ** rng.uniform(-2.3, 0))
    return {"miner": "none", "normalized_softmax.temperature": t}, float(peak_recall(t))


def _triplet(rng: np.random.Generator) -> tuple[dict[str, Any], float]:
    margin = float(rng.uniform(0.01, 0.5))
    params: dict[str, Any] = {"triplet.margin": margin, "miner": str(rng.choice(["none", "triplet_margin"]))}
    if params["miner"] == "triplet_margin":  # conditional columns: null for the trials without this miner
        params["miner.triplet_margin.margin"] = float(rng.uniform(0.05, 0.5))
        params["miner.triplet_margin.type_of_triplets"] = str(rng.choice(["all", "semihard", "hard"]))
    return params, 0.55 - 0.3 * abs(margin - 0.1)


def _contrastive(rng: np.random.Generator) -> tuple[dict[str, Any], float]:
    pos, neg = float(rng.uniform(0.0, 0.3)), float(rng.uniform(0.3, 1.0))
    return {"miner": "none", "contrastive.pos_margin": pos, "contrastive.neg_margin": neg}, 0.5 - 0.2 * abs(neg - 0.5)


_SAMPLERS: Mapping[str, Callable[[np.random.Generator], tuple[dict[str, Any], float]]] = {
    "normalized_softmax": _normalized_softmax, "triplet": _triplet, "contrastive": _contrastive}


def _status(index: int) -> str:
    """A fixed pattern, so every study with a dozen trials or more has all three statuses."""
    return "error" if index % 9 == 4 else "stopped" if index % 5 == 2 else "completed"


def _epoch_metrics(final: float, epoch: int, ks: Sequence[int]) -> dict[str, float]:
    """recall@1 approaches `final`; recall@K grows with K (a larger neighbourhood finds a match more often)."""
    r1 = final * (1.0 - 0.6 ** epoch)
    recalls = {f"recall@{k}": r1 + (1 - r1) * (1 - 0.65 ** math.log2(k)) for k in ks}
    return {**recalls, "precision@1": r1, "r_precision": 0.55 * r1, "map@r": 0.45 * r1}


def study_frames(rng: np.random.Generator, *, study: str, losses: Sequence[str], configs_per_loss: int = 4,
                 repeats: int = 3, epochs: int = 5, repeat_by: str = "train.seed",
                 ks: Sequence[int] = (1, 2, 4, 8)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(epochs, trials) tables of a synthetic study: each loss's configurations, each run `repeats` times (other
    `train.seed`, or other `train.fold` with `repeat_by="train.fold"`). Statuses follow `_status`; a stopped trial
    runs fewer epochs, an errored one fewer (maybe none) and has an error message. The metric columns are
    `metrics_for(ks)`, as for a study whose train.ks is `ks`; the best epoch is chosen by recall@1, so 1 must be
    among `ks`."""
    if repeat_by not in ("train.seed", "train.fold"):
        raise ValueError(f"repeat_by must be 'train.seed' or 'train.fold', got {repeat_by=}")
    epoch_rows: list[dict[str, Any]] = []
    trial_rows: list[dict[str, Any]] = []
    for loss in losses:
        for c in range(configs_per_loss):
            params, final = _SAMPLERS[loss](rng)
            params["train.lr"] = float(10 ** rng.uniform(-5, -3))
            params["train.weight_decay"] = float(rng.uniform(0, 1e-4))
            config = f"{study}-{loss}-{c}"
            for r in range(repeats):
                index = len(trial_rows)
                head = {"study": study, "trial_id": f"{study}_{index:05d}", "config_id": config, "loss": loss,
                        **params, "train.seed": r if repeat_by == "train.seed" else 0,
                        "train.fold": r if repeat_by == "train.fold" else None}
                trial, rows = _run(head, final + float(rng.normal(0, 0.01)), _status(index), epochs, ks, rng)
                epoch_rows += rows
                trial_rows.append(trial)
    return _typed(pd.DataFrame(epoch_rows)), _typed(pd.DataFrame(trial_rows))


def _run(head: dict[str, Any], final: float, status: str, epochs: int, ks: Sequence[int],
         rng: np.random.Generator) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    count = {"completed": epochs, "stopped": int(rng.integers(1, epochs)),
             "error": int(rng.integers(0, epochs))}[status]
    rows = []
    for epoch in range(1, count + 1):
        values = _epoch_metrics(final, epoch, ks)
        if status == "completed" and epoch == epochs and epochs > 1:
            values = {k: v - 0.01 for k, v in _epoch_metrics(final, epoch - 1, ks).items()}  # the last epoch dips
        rows.append({**head, "epoch": epoch, **values, "train_loss": 1.0 / epoch, "epoch_time_s": 1.5,
                     "time_total_s": 1.5 * epoch, "timestamp": 1.7e9 + epoch})
    trial = {**head, "status": status, "error": "NonFiniteLossError: loss is nan" if status == "error" else None,
             "epochs": count}
    # The best epoch by recall@1, the earliest of equal values; every metric is read at that epoch.
    best = max(rows, key=lambda row: (row["recall@1"], -row["epoch"])) if rows else None
    trial["best_epoch"] = best["epoch"] if best else None
    for name in (*metrics_for(ks), "train_loss"):
        trial[f"best_{name}"] = best[name] if best else None
        trial[f"last_{name}"] = rows[-1][name] if rows else None
    trial["wall_time_s"] = 1.5 * count
    return trial, rows


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The table's integer columns as nullable int64 (the Parquet schema's int64 with nulls)."""
    for name in ("train.seed", "train.fold", "epoch", "epochs", "best_epoch"):
        if name in frame.columns:
            frame[name] = pd.array(frame[name].tolist(), dtype="Int64")
    for name in frame.columns:
        if name.startswith(("best_", "last_")) and name != "best_epoch":
            frame[name] = frame[name].astype("float64")
    return frame


# ---------------------------------------------------------------------------------------------------------------
# Writing study directories through results.study_dir.

Table = Literal["epochs", "trials"]


def _kind(values: pd.Series) -> str:
    """A sampled column's kind as study_dir's schemas take it."""
    if pd.api.types.is_bool_dtype(values):
        return "bool"
    if pd.api.types.is_integer_dtype(values):
        return "int"
    if pd.api.types.is_float_dtype(values):
        return "float"
    return "str"


def _schema(frame: pd.DataFrame, table: Table, metrics: Sequence[str], omit: Sequence[str]) -> pa.Schema:
    """The table's schema as the study fixes it at its start (its sampled columns are the frame's dotted ones),
    without the columns in `omit` (a part written by an older study, or one that lacks a column)."""
    params = {c: _kind(frame[c]) for c in frame.columns if "." in c or c in ("loss", "miner")}
    schema = (epochs_schema if table == "epochs" else trials_schema)(params, metrics)
    # PartTable takes rows as dicts: a key the schema lacks would vanish silently, so the frame must fit.
    extra = [c for c in frame.columns if c not in schema.names]
    assert not extra, f"columns {extra} are not in the {table} schema of metrics {list(metrics)}"
    for name in omit:
        if name in schema.names:
            schema = schema.remove(schema.get_field_index(name))
    return schema


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as the study hands them to PartTable: plain dicts, None where a value is missing."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def write_part(location: Path | str, frame: pd.DataFrame, *, table: Table, metrics: Sequence[str] = EVAL_METRICS,
               omit: Sequence[str] = ()) -> None:
    """Append `frame` as one part file to the Parquet dataset at `location` through PartTable, with the schema of
    the frame's own columns (`omit` left out of it)."""
    PartTable(location, _schema(frame, table, metrics, omit)).append(_rows(frame))


def write_study(root: Path, name: str, epochs: pd.DataFrame, trials: pd.DataFrame | None, *, parts: int = 3,
                metrics: Sequence[str] = EVAL_METRICS, study_json: StudyInfo | Mapping[str, Any] | bool = True,
                omit: Sequence[str] = (), drop_from_first_part: Sequence[str] = ()) -> Path:
    """Write STUDY_DIR = root/name as the study does: results/{epochs,trials}.parquet as `parts` part files each
    (PartTable, schemas from epochs_schema / trials_schema with `metrics`), and study.json.

    `study_json`: True writes the study's own (new_study_info: metric recall@1, mode max, `metrics`, LOG_SCALE); a
    StudyInfo that one (its path set to the directory); a mapping that raw content, as an older or a hand-edited
    study.json; False none. `omit`: columns absent from every part (a table written without them);
    `drop_from_first_part`: columns absent from the first part of both tables only. `trials=None` writes no
    trials table (a study whose first trial has not finished). Each table also gets a hidden half-written part
    that readers must skip.
    """
    study_dir = root / name
    paths = StudyPaths(study_dir)
    tables: list[tuple[Table, Path, pd.DataFrame]] = [("epochs", paths.epochs, epochs)]
    if trials is not None:
        tables.append(("trials", paths.trials, trials))
    for table, location, frame in tables:
        bounds = np.linspace(0, len(frame), max(1, parts) + 1).round().astype(int)
        for seq, (start, stop) in enumerate(itertools.pairwise(bounds)):
            dropped = [*omit, *(drop_from_first_part if seq == 0 else ())]
            write_part(location, frame.iloc[start:stop], table=table, metrics=metrics, omit=dropped)
        # A part still being written: write_atomic writes under a hidden name and renames it when complete.
        location.mkdir(parents=True, exist_ok=True)
        (location / ".part-000099-unfinished.parquet.tmp").write_bytes(b"PAR1 half written")
    if isinstance(study_json, StudyInfo):
        write_study_info(dataclasses.replace(study_json, path=study_dir))
    elif isinstance(study_json, Mapping):
        (study_dir / "study.json").write_text(json.dumps(study_json))
    elif study_json:
        write_study_info(new_study_info(study_dir, name=name, metric="recall@1", mode=Mode.MAX, metrics=metrics,
                                        log_scale=LOG_SCALE))
    return study_dir


def hand_ci(values: Sequence[float], t_quantile: float) -> tuple[float, float]:
    """Mean and t-interval half-width written out: mean, then t * sqrt(sum((x - mean)^2) / (n - 1)) / sqrt(n)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile * sd / math.sqrt(n)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path: Path) -> np.ndarray:
    """`path` starts with the PNG signature, matplotlib reads it back as an image, and no temp file is left
    beside it (the writer renames a hidden temp file into place)."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, image.shape
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    return image
