"""From Tune's results to table rows: the schema of epochs.parquet and trials.parquet, and the per-trial summary.

Pure functions and plain classes, testable without Ray. The column names are the contract with `results/`
(docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dml_core.train import TrainConfig

__all__ = [
    "EPOCH_TIMING",
    "TrialStatus",
    "TrialSummary",
    "config_id",
    "epoch_row",
    "trial_head",
    "epochs_schema",
    "mlflow_metric_name",
    "trial_train_config",
    "trials_schema",
]

# Per-epoch timings the trainer reports besides the retrieval metrics.
EPOCH_TIMING = ("train_loss", "train_time_s", "eval_time_s", "epoch_time_s")
_ARROW = {"float": pa.float64(), "int": pa.int64(), "str": pa.string(), "bool": pa.bool_()}
# Sampled keys that vary between repeats of one configuration, not the configuration itself.
_REPEAT_KEYS = ("train.seed", "train.fold")


class TrialStatus(str, enum.Enum):
    COMPLETED = "completed"  # ran all epochs
    STOPPED = "stopped"  # stopped early by the scheduler (ASHA)
    ERROR = "error"  # raised, e.g. a non-finite loss


def mlflow_metric_name(name: str) -> str:
    """MLflow refuses '@' in metric names: recall@1 -> recall_at_1, map@r -> map_at_r."""
    return name.replace("@", "_at_")


def config_id(sampled: Mapping[str, Any]) -> str:
    """Repeats of one configuration (other seed or fold) share this id."""
    key = {k: v for k, v in sampled.items() if k not in _REPEAT_KEYS}
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def trial_train_config(base: TrainConfig, sampled: Mapping[str, Any]) -> TrainConfig:
    """The base TrainConfig with a trial's sampled loss, miner and training overrides applied."""
    loss_params = {k[len("loss."):]: v for k, v in sampled.items() if k.startswith("loss.")}
    miner_params = {k[len("miner."):]: v for k, v in sampled.items() if k.startswith("miner.")}
    train = {k[len("train."):]: v for k, v in sampled.items() if k.startswith("train.")}
    return dataclasses.replace(base, loss=sampled.get("loss", base.loss), loss_params=loss_params,
                               miner=sampled.get("miner", "none"), miner_params=miner_params, **train)


def _param_fields(param_columns: Mapping[str, str]) -> list[pa.Field]:
    return [pa.field(name, _ARROW[kind]) for name, kind in param_columns.items()
            if name not in ("loss", "miner")]


def epochs_schema(param_columns: Mapping[str, str], metrics: Sequence[str]) -> pa.Schema:
    """One row per trial x epoch; fixed when the study starts so that every part file has the same columns."""
    head = [pa.field(n, pa.string()) for n in ("study", "trial_id", "config_id", "loss", "miner")]
    tail = [pa.field("seed", pa.int64()), pa.field("fold", pa.int64()), pa.field("epoch", pa.int64())]
    tail += [pa.field(m, pa.float64()) for m in metrics]
    tail += [pa.field(n, pa.float64()) for n in (*EPOCH_TIMING, "time_total_s", "timestamp")]
    tail += [pa.field("node_id", pa.string())]
    return pa.schema(head + _param_fields(param_columns) + tail)


def trials_schema(param_columns: Mapping[str, str], metrics: Sequence[str]) -> pa.Schema:
    """One row per finished trial."""
    head = [pa.field(n, pa.string()) for n in ("study", "trial_id", "config_id", "loss", "miner")]
    tail = [pa.field("seed", pa.int64()), pa.field("fold", pa.int64()),
            pa.field("status", pa.string()), pa.field("error", pa.string()), pa.field("stop_reason", pa.string()),
            pa.field("epochs", pa.int64()), pa.field("best_epoch", pa.int64())]
    for prefix in ("best_", "last_"):
        tail += [pa.field(prefix + m, pa.float64()) for m in (*metrics, "train_loss")]
    tail += [pa.field("wall_time_s", pa.float64())]
    return pa.schema(head + _param_fields(param_columns) + tail)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def trial_head(*, study: str, trial_id: str, sampled: Mapping[str, Any], base: TrainConfig) -> dict[str, Any]:
    """The columns that identify a trial and its configuration, shared by both tables."""
    head: dict[str, Any] = {"study": study, "trial_id": trial_id, "config_id": config_id(sampled)}
    head.update(sampled)
    head.setdefault("miner", "none")
    head["seed"] = int(sampled.get("train.seed", base.seed))
    fold = sampled.get("train.fold", base.fold)
    head["fold"] = None if fold is None else int(fold)
    return head


def epoch_row(head: Mapping[str, Any], result: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, Any]:
    """The epochs.parquet row for one reported result."""
    row = dict(head)
    row["epoch"] = int(result["epoch"])
    for name in (*metrics, *EPOCH_TIMING, "time_total_s", "timestamp"):
        row[name] = _finite(result.get(name))
    node = result.get("node_id")
    row["node_id"] = None if node is None else str(node)
    return row


@dataclass
class TrialSummary:
    """What the trials table needs of a running trial: kept small (O(1) per trial) on the driver."""

    head: dict[str, Any]  # study, trial_id, config_id, loss, miner, hyperparameters, seed, fold
    epochs: int = 0
    best_epoch: int | None = None
    best: dict[str, float | None] = field(default_factory=dict)
    last: dict[str, float | None] = field(default_factory=dict)
    best_value: float = -math.inf  # sign-normalised target metric
    wall_time_s: float | None = None

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

    def row(self, status: TrialStatus, *, error: str | None = None, stop_reason: str | None = None,
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
