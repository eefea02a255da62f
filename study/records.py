"""From Tune's results to table rows: the identifying head of a trial, epoch rows and the per-trial summary.

Pure functions and plain classes, testable without Ray. The tables' schemas and the meaning of their columns are
results.study_dir's (the format's one owner); this module fills them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dml_core.config import TrainConfig
from results.study_dir import EPOCH_TIMING, Phase, Status
from search_spaces.registry import NO_MINER
from search_spaces.space import MINER, REPEAT_NAMES

__all__ = ["FINAL_RUN_KEY", "PHASE_KEY", "TrialSummary", "config_id", "epoch_row", "phase_of", "sampled_values",
           "trial_head"]

# Keys the reality-check searcher adds to a trial's configuration besides the sampled values: which phase the
# trial belongs to (results.study_dir.Phase; absent in a plain search), and a final run's number within its loss.
PHASE_KEY = "phase"
FINAL_RUN_KEY = "final_run"


def sampled_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's configuration without the protocol's keys: what search_spaces.to_train_config takes."""
    return {k: v for k, v in config.items() if k not in (PHASE_KEY, FINAL_RUN_KEY)}


def phase_of(config: Mapping[str, Any]) -> Phase:
    return Phase(config.get(PHASE_KEY, Phase.SEARCH.value))


def config_id(sampled: Mapping[str, Any]) -> str:
    """Repeats of one configuration (other seed or fold, a final run of it) share this id."""
    key = {k: v for k, v in sampled_values(sampled).items() if k not in REPEAT_NAMES}
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def trial_head(*, study: str, trial_id: str, sampled: Mapping[str, Any], base: TrainConfig) -> dict[str, Any]:
    """The columns that identify a trial and its configuration, shared by all tables: its phase, the sampled
    values, and the seed and fold the trial ran with (sampled, else the study's)."""
    head: dict[str, Any] = {"study": study, "trial_id": trial_id, PHASE_KEY: phase_of(sampled).value,
                            "config_id": config_id(sampled)}
    head.update(sampled_values(sampled))
    head.setdefault(MINER, NO_MINER)
    head["train.seed"] = int(sampled.get("train.seed", base.seed))
    fold = sampled.get("train.fold", base.fold)
    head["train.fold"] = None if fold is None else int(fold)
    return head


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def epoch_row(head: Mapping[str, Any], result: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, Any]:
    """The epochs.parquet row for one reported result."""
    row = dict(head)
    row["epoch"] = int(result["epoch"])
    for name in (*metrics, *EPOCH_TIMING, "time_total_s", "timestamp"):
        row[name] = _finite(result.get(name))
    node = result.get("node_id")
    row["node_id"] = None if node is None else str(node)
    gpus = result.get("gpu_ids")
    row["gpu_ids"] = str(gpus) if gpus else None
    return row


@dataclass
class TrialSummary:
    """What the trials table needs of a running trial: kept small (O(1) per trial) on the driver."""

    head: dict[str, Any]  # trial_head's columns
    epochs: int = 0
    best_epoch: int | None = None
    best: dict[str, float | None] = field(default_factory=dict)
    last: dict[str, float | None] = field(default_factory=dict)
    best_value: float = -math.inf  # sign-normalised target metric
    wall_time_s: float | None = None
    # A final run of the reality check, once its last epoch is in: {"test": {"separated": {...},
    # "concatenated": {...}}, "best_epochs": [epoch of each fold model's best validation]}.
    test: dict[str, Any] | None = None

    def update(self, row: Mapping[str, Any], *, metric: str, sign: float,
               metrics: Sequence[str]) -> None:
        """Idempotent: a re-reported epoch (after a restore) changes nothing it has already seen."""
        values = {m: row.get(m) for m in (*metrics, "train_loss")}
        epoch = int(row["epoch"])
        if epoch >= self.epochs:
            self.epochs = epoch
            self.last = values
            self.wall_time_s = row.get("time_total_s")
        target = row.get(metric)
        if target is not None and (sign * target > self.best_value
                                   or (sign * target == self.best_value and self.best_epoch is not None
                                       and epoch < self.best_epoch)):
            self.best_value = sign * target
            self.best_epoch = epoch
            self.best = values

    def row(self, status: Status, *, error: str | None = None, stop_reason: str | None = None,
            metrics: Sequence[str]) -> dict[str, Any]:
        out = dict(self.head)
        out.update(status=status.value, error=error, stop_reason=stop_reason, epochs=self.epochs,
                   best_epoch=self.best_epoch, wall_time_s=self.wall_time_s)
        for m in (*metrics, "train_loss"):
            out["best_" + m] = self.best.get(m)
            out["last_" + m] = self.last.get(m)
        return out

    def to_state(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TrialSummary:
        return cls(**state)
