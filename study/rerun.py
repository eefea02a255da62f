"""Run one recorded trial again without Ray, from its recorded configuration and seed.

On the CPU the rerun reproduces the recorded metrics: the trainer is deterministic for a seed, and the rerun uses
the trial's thread count (float reductions depend on it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from dml_core.errors import ConfigError
from dml_core.files import resolve_filesystem
from results import is_hyperparameter
from results.parts import Part, PartTable
from results.study_dir import REPEAT_COLUMNS, StudyPaths
from study.runner import load_study_config

__all__ = ["RerunResult", "recorded_trial", "rerun_trial"]


@dataclass(frozen=True)
class RerunResult:
    trial_id: str
    sampled: dict[str, Any]
    recorded: list[dict[str, float]]
    rerun: list[dict[str, float]]
    metrics: list[str]

    def max_abs_diff(self) -> float:
        diffs = [abs(a[m] - b[m]) for a, b in zip(self.recorded, self.rerun) for m in self.metrics
                 if a.get(m) is not None and b.get(m) is not None]
        return max(diffs, default=0.0)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def recorded_trial(study_dir: str | Path, trial_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(sampled configuration, epoch rows in order) of one trial, read from epochs.parquet."""
    path = StudyPaths(str(study_dir)).epochs
    filesystem, inner = resolve_filesystem(path)  # a local path or the study's storage URI
    if filesystem.get_file_info(inner).type == pafs.FileType.NotFound:
        raise ConfigError(str(study_dir), "no results/epochs.parquet: not a study directory, or no epoch finished")

    def read(parts: list[Part]) -> tuple[list[dict[str, Any]], list[str]]:
        dataset = pads.dataset([p.path for p in parts], format="parquet", filesystem=filesystem)
        rows = dataset.to_table(filter=pads.field("trial_id") == trial_id).to_pylist()
        return rows, [] if rows else dataset.to_table(columns=["trial_id"])["trial_id"].unique().to_pylist()

    # A consistent set of parts while the study writes and compacts (results.parts).
    _, (rows, known) = PartTable(path, pa.schema([])).snapshot(read)
    rows = sorted(rows, key=lambda r: r["epoch"])
    if not rows:
        sample = ", ".join(sorted(known)[:5])
        raise ConfigError("TRIAL_ID", f"no trial {trial_id!r} in {path} (trials include: {sample}, ...)")
    first = rows[0]
    # The sampled values (dotted columns and the two choices) and the seed and fold the trial ran with.
    sampled = {k: _plain(v) for k, v in first.items() if v is not None
               and (k in ("loss", *REPEAT_COLUMNS) or is_hyperparameter(k))}
    return sampled, rows


def rerun_trial(study_dir: str | Path, trial_id: str, *, device: str = "cpu") -> RerunResult:
    import torch

    from dml_core.train import train
    from search_spaces.space import to_train_config

    config = load_study_config(study_dir)
    sampled, rows = recorded_trial(study_dir, trial_id)
    train_config = to_train_config(config.train, sampled).replace(device=device)
    epochs_recorded = len(rows)
    metrics = train_config.metric_names

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(config.resources.cpus_per_trial)))
    try:
        summary = train(train_config, on_epoch=lambda epoch, m, c: epoch >= epochs_recorded)
    finally:
        torch.set_num_threads(threads)
    recorded = [{m: r.get(m) for m in metrics} for r in rows]
    rerun = [{m: float(h[m]) for m in metrics if m in h and math.isfinite(h[m])} for h in summary.history]
    return RerunResult(trial_id=trial_id, sampled=sampled, recorded=recorded, rerun=rerun, metrics=metrics)
