"""Synthetic studies for the results tests, in the format of docs/architecture.md ("Parquet tables", "Study
directory"): tables built trial by trial from a known structure, then written as Parquet datasets of part files.

The structure: a loss's final recall@1 is a known function of its hyperparameters (normalized_softmax peaks at
temperature 0.1; `train.weight_decay` never matters), each epoch approaches it, and the last epoch of a completed
trial dips slightly, so a trial's best epoch is not always its last.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "EVAL_METRICS",
    "PNG_SIGNATURE",
    "assert_valid_png",
    "LOG_SCALE",
    "peak_recall",
    "study_frames",
    "temperature_trials",
    "hand_ci",
    "write_study",
]

# The eval metrics of both tables (docs/architecture.md), written out here rather than imported from results.
EVAL_METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "precision@1", "r_precision", "map@r")
# What study.json's log_scale says for the synthetic losses.
LOG_SCALE = {"normalized_softmax": ["loss.temperature", "train.lr"], "triplet": ["train.lr"],
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
        "loss.temperature": temperature, "train.weight_decay": rng.uniform(0.0, 1e-3, size=n),
        "train.batch_size": pd.array([32] * n, dtype="Int64"), "seed": pd.array([0] * n, dtype="Int64"),
        "fold": pd.array([None] * n, dtype="Int64"), "status": "completed", "best_recall@1": recall,
    })


def _normalized_softmax(rng: np.random.Generator) -> tuple[dict[str, Any], float]:
    t = float(10 ** rng.uniform(-2.3, 0))
    return {"miner": "none", "loss.temperature": t}, float(peak_recall(t))


def _triplet(rng: np.random.Generator) -> tuple[dict[str, Any], float]:
    margin = float(rng.uniform(0.01, 0.5))
    params: dict[str, Any] = {"loss.margin": margin, "miner": str(rng.choice(["none", "triplet_margin"]))}
    if params["miner"] == "triplet_margin":  # conditional columns: null for the trials without this miner
        params["miner.margin"] = float(rng.uniform(0.05, 0.5))
        params["miner.type_of_triplets"] = str(rng.choice(["all", "semihard", "hard"]))
    return params, 0.55 - 0.3 * abs(margin - 0.1)


def _contrastive(rng: np.random.Generator) -> tuple[dict[str, Any], float]:
    pos, neg = float(rng.uniform(0.0, 0.3)), float(rng.uniform(0.3, 1.0))
    return {"miner": "none", "loss.pos_margin": pos, "loss.neg_margin": neg}, 0.5 - 0.2 * abs(neg - 0.5)


_SAMPLERS: Mapping[str, Callable[[np.random.Generator], tuple[dict[str, Any], float]]] = {
    "normalized_softmax": _normalized_softmax, "triplet": _triplet, "contrastive": _contrastive}


def _status(index: int) -> str:
    """A fixed pattern, so every study with a dozen trials or more has all three statuses."""
    return "error" if index % 9 == 4 else "stopped" if index % 5 == 2 else "completed"


def _epoch_metrics(final: float, epoch: int) -> dict[str, float]:
    r1 = final * (1.0 - 0.6 ** epoch)
    return {"recall@1": r1, "recall@2": r1 + (1 - r1) * 0.35, "recall@4": r1 + (1 - r1) * 0.6,
            "recall@8": r1 + (1 - r1) * 0.8, "precision@1": r1, "r_precision": 0.55 * r1, "map@r": 0.45 * r1}


def study_frames(rng: np.random.Generator, *, study: str, losses: Sequence[str], configs_per_loss: int = 4,
                 repeats: int = 3, epochs: int = 5, repeat_by: str = "seed",
                 finished: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(epochs, trials) tables of a synthetic study: each loss's configurations, each run `repeats` times (other
    seed, or other fold with `repeat_by="fold"`). Statuses follow `_status`; a stopped trial runs fewer epochs, an
    errored one fewer (maybe none) and has an error message. `finished=False` leaves the trials table empty, as a
    study whose trials are all still running."""
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
                        **params, "seed": r if repeat_by == "seed" else 0,
                        "fold": r if repeat_by == "fold" else None}
                trial, rows = _run(head, final + float(rng.normal(0, 0.01)), _status(index), epochs, rng)
                epoch_rows += rows
                trial_rows.append(trial)
    epochs_table = _typed(pd.DataFrame(epoch_rows))
    trials_table = _typed(pd.DataFrame(trial_rows))
    return epochs_table, (trials_table if finished else trials_table.iloc[0:0])


def _run(head: dict[str, Any], final: float, status: str, epochs: int,
         rng: np.random.Generator) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    count = {"completed": epochs, "stopped": int(rng.integers(1, epochs)),
             "error": int(rng.integers(0, epochs))}[status]
    rows = []
    for epoch in range(1, count + 1):
        values = _epoch_metrics(final, epoch)
        if status == "completed" and epoch == epochs and epochs > 1:
            values = {k: v - 0.01 for k, v in _epoch_metrics(final, epoch - 1).items()}  # the last epoch dips
        rows.append({**head, "epoch": epoch, **values, "train_loss": 1.0 / epoch, "epoch_time_s": 1.5,
                     "time_total_s": 1.5 * epoch, "timestamp": 1.7e9 + epoch})
    trial = {**head, "status": status, "error": "NonFiniteLossError: loss is nan" if status == "error" else None,
             "epochs": count}
    # The best epoch by recall@1, the earliest of equal values; every metric is read at that epoch.
    best = max(rows, key=lambda row: (row["recall@1"], -row["epoch"])) if rows else None
    trial["best_epoch"] = best["epoch"] if best else None
    for name in (*EVAL_METRICS, "train_loss"):
        trial[f"best_{name}"] = best[name] if best else None
        trial[f"last_{name}"] = rows[-1][name] if rows else None
    trial["wall_time_s"] = 1.5 * count
    return trial, rows


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The table's integer columns as nullable int64 (the Parquet schema's int64 with nulls)."""
    for name in ("seed", "fold", "epoch", "epochs", "best_epoch"):
        if name in frame.columns:
            frame[name] = pd.array(frame[name].tolist(), dtype="Int64")
    for name in frame.columns:
        if name.startswith(("best_", "last_")) and name != "best_epoch":
            frame[name] = frame[name].astype("float64")
    return frame


def write_study(root: Path, name: str, epochs: pd.DataFrame, trials: pd.DataFrame | None, *, parts: int = 3,
                study_json: Mapping[str, Any] | bool = True,
                drop_from_first_part: Sequence[str] = ()) -> Path:
    """Write STUDY_DIR = root/name: results/{epochs,trials}.parquet as `parts` part files each (the columns in
    `drop_from_first_part` absent from the first part of both), a hidden half-written part that readers must skip,
    and study.json (True: the default one; a mapping: that content; False: none). `trials=None` writes no trials
    table (a study whose first trial has not finished)."""
    study_dir = root / name
    _write_dataset(study_dir / "results" / "epochs.parquet", epochs, parts, drop_from_first_part)
    if trials is not None:
        _write_dataset(study_dir / "results" / "trials.parquet", trials, parts, drop_from_first_part)
    if study_json:
        content = study_json if isinstance(study_json, Mapping) else {
            "name": name, "metric": "recall@1", "mode": "max", "log_scale": LOG_SCALE}
        (study_dir / "study.json").write_text(json.dumps(content))
    return study_dir


def _write_dataset(path: Path, frame: pd.DataFrame, parts: int, drop: Sequence[str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(frame), max(1, parts) + 1).round().astype(int)
    for seq, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        chunk = frame.iloc[start:stop]
        if seq == 0:
            chunk = chunk.drop(columns=[c for c in drop if c in chunk.columns])
        table = pa.Table.from_pandas(chunk, preserve_index=False)
        pq.write_table(table, path / f"part-{seq:05d}-{uuid.uuid4().hex}.parquet")
    # A part still being written: the study writes under a hidden name and renames it when complete.
    (path / f".part-{len(bounds):05d}-{uuid.uuid4().hex}.parquet.tmp").write_bytes(b"PAR1 half written")


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
