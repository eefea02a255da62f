"""The driver-side Tune callback that records a study: epoch and trial rows to Parquet, runs to MLflow.

Cost per reported result is constant: rows are buffered and flushed as new part files on an interval or when
the buffer is full, never rewriting what is on disk. Nothing is lost or doubled across a restore:

- the rows still buffered are part of the callback state that Tune saves with every experiment snapshot, so a
  restored study writes them; rows reported after the last snapshot are reported again by the trials, which
  resume from checkpoints that snapshot knew;
- a row is written only if its (trial, epoch) is not on disk yet: on start-up the written epochs are read back
  from the Parquet parts (two small columns), so epochs that reached disk after the snapshot are not doubled;
- MLflow receives exactly the rows that Parquet receives, at the same flushes;
- the per-trial summary (best and last metrics) is updated idempotently and saved in the callback state.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from ray.tune import Callback

from dml_core.config import TrainConfig
from results.study_dir import EPOCH_TIMING, REPEAT_COLUMNS, PartTable, Status, epochs_schema, trials_schema
from search_spaces.space import to_train_config
from study.mlflow_sink import MlflowSink
from study.records import TrialSummary, epoch_row, trial_head

__all__ = ["LOST_MESSAGE", "StudyRecorder", "error_message"]

LOST_MESSAGE = ("lost: the driver stopped after this trial began and before Tune saved the study's state; "
                "the resumed study sampled its place again as a new trial")

log = logging.getLogger(__name__)
_EXCEPTION_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Interrupt)[\w.]*)(: .*)?$")


def error_message(text: str | None) -> str:
    """The last `SomeError: message` line of a traceback text (Ray wraps the trial's exception in its own)."""
    if not text:
        return "unknown error"
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line[:2000]
    return lines[-1][:2000] if lines else "unknown error"


def _error_text(trial: Any) -> str | None:
    """The trial's traceback: Tune writes it to the trial's local directory before telling callbacks, and syncs it
    to the storage path later, so the local file is read first."""
    path = getattr(trial, "error_file", None)
    try:
        if path and os.path.exists(path):
            with open(path) as f:
                return f.read()
        return trial.get_error()  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - the message is a courtesy; the status is what matters
        log.debug("could not read the error of trial %s", trial.trial_id, exc_info=True)
        return None


class StudyRecorder(Callback):
    """Writes epochs.parquet, trials.parquet and the MLflow runs of one study, from the driver."""

    def __init__(self, *, study: str, results_dir: str, base: TrainConfig, param_columns: Mapping[str, str],
                 metrics: Sequence[str], metric: str, sign: float, stop_reason: str,
                 flush_interval_s: float = 10.0, flush_rows: int = 5000, mlflow: MlflowSink | None = None,
                 mlflow_study_params: Mapping[str, Any] | None = None, mlflow_artifacts: Sequence[str] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.study = study
        self.results_dir = results_dir
        self.base = base
        self.param_columns = dict(param_columns)
        self.metrics = list(metrics)
        self.metric = metric
        self.sign = sign
        self.stop_reason = stop_reason
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self.mlflow = mlflow
        self.mlflow_study_params = dict(mlflow_study_params or {})
        self.mlflow_artifacts = list(mlflow_artifacts)
        self.clock = clock
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self._epochs: PartTable | None = None
        self._trials: PartTable | None = None
        self._epoch_buffer: list[dict[str, Any]] = []
        self._trial_buffer: list[dict[str, Any]] = []
        self._written_epoch: dict[str, int] = {}  # trial id -> highest epoch written or buffered
        self._written_trials: set[str] = set()
        self._summaries: dict[str, TrialSummary] = {}  # running trials only
        self._replay: dict[str, list[dict[str, Any]]] = {}  # buffered rows of a saved state, admitted on start-up
        self._restored = False
        self._last_flush = self.clock()
        self._ready = False

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles callbacks with the tuner: keep the configuration, not the open tables and buffers."""
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_runtime()

    # -- start-up --------------------------------------------------------------------------------------------

    def setup(self, **info: Any) -> None:
        self._open()

    def _open(self) -> None:
        if self._ready:
            return
        self._written_epoch, self._written_trials = {}, set()
        self._epochs = PartTable(f"{self.results_dir}/epochs.parquet",
                                 epochs_schema(self.param_columns, self.metrics))
        self._trials = PartTable(f"{self.results_dir}/trials.parquet",
                                 trials_schema(self.param_columns, self.metrics))
        self._load_written()
        if self.mlflow is not None:
            self.mlflow.start_study(name=self.study, params=self.mlflow_study_params,
                                    artifacts=self.mlflow_artifacts, restored=self._restored)
            self.mlflow.flush()
        self._ready = True
        replay, self._replay = self._replay, {}
        for row in replay.get("epochs", []):
            self._admit_epoch(row)
        for row in replay.get("trials", []):
            self._admit_trial(row)

    def _load_written(self) -> None:
        """What earlier runs of this study already wrote (empty for a new study)."""
        assert self._epochs is not None and self._trials is not None
        done = self._epochs.read(["trial_id", "epoch"])
        if done.num_rows:
            grouped = done.group_by("trial_id").aggregate([("epoch", "max")])
            self._written_epoch = dict(zip(grouped["trial_id"].to_pylist(), grouped["epoch_max"].to_pylist()))
        finished = self._trials.read(["trial_id"])
        self._written_trials = set(pc.unique(finished["trial_id"]).to_pylist()) if finished.num_rows else set()
        if self._written_epoch or self._written_trials:
            self._restored = True

    # -- Tune events -----------------------------------------------------------------------------------------

    def _head(self, trial: Any) -> dict[str, Any]:
        return trial_head(study=self.study, trial_id=trial.trial_id, sampled=trial.config, base=self.base)

    def _summary(self, trial: Any) -> TrialSummary:
        summary = self._summaries.get(trial.trial_id)
        if summary is None:
            summary = self._summaries[trial.trial_id] = TrialSummary(head=self._head(trial))
        return summary

    def _start_mlflow_run(self, trial_id: str, head: Mapping[str, Any]) -> None:
        if self.mlflow is None or trial_id in self._written_trials:
            return
        params = {k: head[k] for k in self._head_keys(head)}
        self.mlflow.start_trial(trial_id, name=f"{trial_id}-{head['loss']}", params=params, restored=self._restored)

    def _head_keys(self, row: Mapping[str, Any]) -> list[str]:
        """The trial-identifying columns of a row: its configuration, seed and fold (MLflow params)."""
        return [k for k in row if k in ("config_id", "loss", "miner", *REPEAT_COLUMNS) or k in self.param_columns]

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._open()
        self._start_mlflow_run(trial.trial_id, self._summary(trial).head)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        if "epoch" not in result:
            return
        self._open()
        summary = self._summary(trial)
        row = epoch_row(summary.head, result, self.metrics)
        summary.update(row, metric=self.metric, sign=self.sign, metrics=self.metrics)
        self._admit_epoch(row)
        self._maybe_flush()

    def _admit_epoch(self, row: dict[str, Any]) -> None:
        trial_id = row["trial_id"]
        if row["epoch"] <= self._written_epoch.get(trial_id, 0):
            return  # already written or buffered: a resumed trial re-reporting epochs after its checkpoint
        self._written_epoch[trial_id] = row["epoch"]
        self._epoch_buffer.append(row)
        if self.mlflow is not None:
            self._start_mlflow_run(trial_id, row)
            values = {m: row[m] for m in (*self.metrics, *EPOCH_TIMING)}
            self.mlflow.log_epoch(trial_id, row["epoch"], values, row["timestamp"] or time.time())

    def _admit_trial(self, row: dict[str, Any]) -> None:
        trial_id = row["trial_id"]
        if trial_id in self._written_trials:
            return  # finished in an earlier run of this study, replayed by a restore
        if self.mlflow is not None:
            self._start_mlflow_run(trial_id, row)  # a trial can fail before its first result
            self.mlflow.end_trial(trial_id, Status(row["status"]), stop_reason=row["stop_reason"],
                                  error=row["error"])
        self._written_trials.add(trial_id)
        self._trial_buffer.append(row)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        summary = self._summary(trial)
        max_epochs = to_train_config(self.base, trial.config).epochs
        if summary.epochs >= max_epochs:
            self._finish(trial, Status.COMPLETED, stop_reason="max_epochs")
        else:
            self._finish(trial, Status.STOPPED, stop_reason=self.stop_reason)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finish(trial, Status.ERROR, stop_reason="error", error=error_message(_error_text(trial)))

    def _finish(self, trial: Any, status: Status, *, stop_reason: str, error: str | None = None) -> None:
        self._open()
        summary = self._summaries.pop(trial.trial_id, None) or TrialSummary(head=self._head(trial))
        self._admit_trial(summary.row(status, error=error, stop_reason=stop_reason, metrics=self.metrics))
        self._maybe_flush()

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self._maybe_flush()

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        unfinished = any(t.status not in ("TERMINATED", "ERROR") for t in trials)
        if self._restored and not unfinished:
            self._close_lost({t.trial_id for t in trials})
        self.flush()
        if self.mlflow is not None:
            self.mlflow.end_study("KILLED" if unfinished else "FINISHED")

    def _close_lost(self, known: set[str]) -> None:
        """Trials that ran before a driver crash but after Tune's last snapshot are unknown to the restored run
        (their configurations were sampled again as new trials). Their epochs stay, with an error row that says
        what happened; their MLflow runs end as failed (or, with no epoch logged, are deleted)."""
        lost = sorted(t for t in self._written_epoch if t not in known and t not in self._written_trials)
        if lost:
            assert self._epochs is not None
            self.flush()
            table = self._epochs.read()
            rows = table.filter(pc.is_in(table["trial_id"], value_set=pa.array(lost))).to_pylist()
            for trial_id in lost:
                mine = sorted((r for r in rows if r["trial_id"] == trial_id), key=lambda r: r["epoch"])
                head = {k: mine[0][k] for k in self._head_keys(mine[0])} | {"study": self.study,
                                                                            "trial_id": trial_id}
                summary = TrialSummary(head=head)
                for row in mine:
                    summary.update(row, metric=self.metric, sign=self.sign, metrics=self.metrics)
                self._admit_trial(summary.row(Status.ERROR, error=LOST_MESSAGE, stop_reason="lost",
                                              metrics=self.metrics))
        if self.mlflow is not None:
            self.flush()
            self.mlflow.close_lost_runs(known | self._written_trials, message=LOST_MESSAGE)

    # -- writing ---------------------------------------------------------------------------------------------

    def _maybe_flush(self) -> None:
        buffered = len(self._epoch_buffer) + len(self._trial_buffer)
        if buffered and (buffered >= self.flush_rows or self.clock() - self._last_flush >= self.flush_interval_s):
            self.flush()

    def flush(self) -> None:
        """Write buffered rows as new parts (epochs first: a trial row never precedes its epochs on disk)."""
        if not self._ready:
            return
        assert self._epochs is not None and self._trials is not None
        self._epochs.append(self._epoch_buffer)
        self._epoch_buffer = []
        self._trials.append(self._trial_buffer)
        self._trial_buffer = []
        if self.mlflow is not None:
            self.mlflow.flush()
        self._last_flush = self.clock()

    # -- experiment checkpoints ------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Saved with every experiment snapshot: small (running trials, the unflushed buffer), never a flush."""
        return {
            "summaries": {tid: s.to_state() for tid, s in self._summaries.items()},
            "pending": {"epochs": list(self._epoch_buffer), "trials": list(self._trial_buffer)},
            "mlflow": self.mlflow.state() if self.mlflow is not None else None,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._summaries = {tid: TrialSummary.from_state(s) for tid, s in state.get("summaries", {}).items()}
        if self.mlflow is not None and state.get("mlflow"):
            self.mlflow.load_state(state["mlflow"])
        self._restored = True
        self._replay = dict(state.get("pending", {}))
        if self._ready:  # Tune restores callback state before setup; this covers any other order
            self._ready = False
            self._open()
