"""The driver-side Tune callback that records a study: rows to the Parquet tables, runs to MLflow.

Cost per reported result is constant and nothing blocks Tune's loop on storage: rows are buffered and, on an
interval or when the buffer is full, handed to a writer thread (study.part_writer) that writes them as new part
files and compacts them (results.parts), never rewriting a whole table. The tables are the record, exactly once through a crash of
the driver at any moment:

- a row is written only once the trial it belongs to is in one of Tune's experiment snapshots (the recorder's
  state is saved with each, see get_state). A restored study knows every trial of its snapshot, so no trial with
  rows on disk is ever forgotten; a trial begun after the last snapshot leaves nothing in the tables if the driver
  dies, and the restored study runs its place again as a new trial: work is redone, never recorded twice;
- the rows still buffered at a snapshot are part of it, so a restored study writes them; rows reported after the
  last snapshot are reported again by the trials, which resume from checkpoints that snapshot knew;
- a row is written only if its (trial, epoch) is not on disk yet: on start-up the written epochs are read back
  from the Parquet parts (two small columns), so epochs that reached disk after the snapshot are not doubled; a
  trial whose trials row is on disk takes no more epoch rows (a restored study may run it on, from the snapshot's
  view of it: that work is not recorded);
- MLflow receives exactly the rows that Parquet receives: each part written is handed to the mirror
  (study.mlflow_mirror), which sends it from a thread of its own and catches up after an outage or a restart;
- the per-trial summary (best and last metrics) is updated idempotently and saved in the callback state.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow.compute as pc
from ray.tune import Callback, Stopper

from dml_core.config import TrainConfig
from results.study_dir import (EVALUATIONS, PartTable, Phase, Status, epochs_schema, final_schema,
                               trials_schema)
from search_spaces.space import to_train_config
from study.mlflow_mirror import MlflowMirror
from study.part_writer import FAULT_PAUSE_ENV, PartWriter
from study.records import FINAL_RUN_KEY, TrialSummary, epoch_row, phase_of, sampled_values, trial_head

__all__ = ["FAULT_PAUSE_ENV", "ClosedTrialStopper", "StudyRecorder", "error_message"]

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


# The tables of a study, in the order a flush writes them: a trial's row never reaches disk before its epochs.
_TABLES = ("epochs", "folds", "trials", "final")


class StudyRecorder(Callback):
    """Writes the study's tables (epochs, trials; folds and final for a reality check) and its MLflow runs."""

    def __init__(self, *, study: str, results_dir: str, base: TrainConfig, param_columns: Mapping[str, str],
                 metrics: Sequence[str], metric: str, sign: float, stop_reason: str, cross_validate: bool = False,
                 flush_interval_s: float = 10.0, flush_rows: int = 5000, mlflow: MlflowMirror | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.study = study
        self.results_dir = results_dir
        self.base = base
        self.cross_validate = cross_validate  # a reality check: per-fold rows and final runs
        self.param_columns = dict(param_columns)
        self.metrics = list(metrics)
        self.metric = metric
        self.sign = sign
        self.stop_reason = stop_reason
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self.mlflow = mlflow
        self.clock = clock
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self._tables: dict[str, PartTable] = {}
        self._writer: PartWriter | None = None
        self._buffers: dict[str, list[dict[str, Any]]] = {name: [] for name in _TABLES}
        self._written_epoch: dict[str, int] = {}  # trial id -> highest epoch written or buffered
        self._written_fold_epoch: dict[str, int] = {}  # the same for its fold rows (a crash may fall between)
        self._written_trials: set[str] = set()
        self._written_finals: set[tuple[str, int]] = set()  # (loss, final run) written or buffered
        # Trials first seen since the last snapshot: their rows wait in the buffers until one includes them.
        self._unsnapshotted: set[str] = set()
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
        self._written_epoch, self._written_fold_epoch = {}, {}
        self._written_trials, self._written_finals = set(), set()
        schemas = {"epochs": epochs_schema, "trials": trials_schema}
        if self.cross_validate:
            schemas |= {"folds": epochs_schema, "final": final_schema}  # a fold row is a single-fold epoch row
        self._tables = {name: PartTable(f"{self.results_dir}/{name}.parquet", schema(self.param_columns, self.metrics))
                        for name, schema in schemas.items()}
        if self._writer is not None:
            self._writer.close()  # a second start-up (set_state after setup): the first writer finishes first
        self._load_written()
        if self.mlflow is not None:
            self.mlflow.start(self._tables)  # in the background: it first sends what it has not yet
        self._writer = PartWriter(self._tables, results_dir=self.results_dir,
                                  written=self.mlflow.written if self.mlflow is not None else None)
        self._writer.start()
        self._ready = True
        replay, self._replay = self._replay, {}
        folds: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for row in replay.get("folds", []):
            folds.setdefault((row["trial_id"], row["epoch"]), []).append(row)
        for row in replay.get("epochs", []):
            self._admit_epoch(row, folds.get((row["trial_id"], row["epoch"]), []))
        for row in replay.get("trials", []):
            self._admit_trial(row)
        for row in replay.get("final", []):
            self._admit_final(row)

    def _last_epochs(self, table: str) -> dict[str, int]:
        """Trial id -> the last epoch of it that `table` holds."""
        done = self._tables[table].read(["trial_id", "epoch"])
        if not done.num_rows:
            return {}
        grouped = done.group_by("trial_id").aggregate([("epoch", "max")])
        return dict(zip(grouped["trial_id"].to_pylist(), grouped["epoch_max"].to_pylist()))

    def _load_written(self) -> None:
        """What earlier runs of this study already wrote (empty for a new study)."""
        self._written_epoch = self._last_epochs("epochs")
        if "folds" in self._tables:
            self._written_fold_epoch = self._last_epochs("folds")
        finished = self._tables["trials"].read(["trial_id"])
        self._written_trials = set(pc.unique(finished["trial_id"]).to_pylist()) if finished.num_rows else set()
        if "final" in self._tables:
            final = self._tables["final"].read(["loss", "final_run"])
            self._written_finals = set(zip(final["loss"].to_pylist(), final["final_run"].to_pylist()))
        if self._written_epoch or self._written_trials:
            self._restored = True

    # -- Tune events -----------------------------------------------------------------------------------------

    def _head(self, trial: Any) -> dict[str, Any]:
        return trial_head(study=self.study, trial_id=trial.trial_id, sampled=trial.config, base=self.base)

    def _summary(self, trial: Any) -> TrialSummary:
        summary = self._summaries.get(trial.trial_id)
        if summary is None:
            summary = self._summaries[trial.trial_id] = TrialSummary(head=self._head(trial))
            self._unsnapshotted.add(trial.trial_id)
        return summary

    def closed(self, trial_id: str) -> bool:
        """Whether the trial's trials row is written or buffered: its record is final."""
        return trial_id in self._written_trials

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._open()
        self._summary(trial)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        if "epoch" not in result:
            return
        self._open()
        summary = self._summary(trial)
        row = epoch_row(summary.head, result, self.metrics)
        summary.update(row, metric=self.metric, sign=self.sign, metrics=self.metrics)
        if "test" in result:  # a final run's last epoch: its scores on the test classes
            summary.test = {"test": result["test"], "best_epochs": list(result.get("best_epochs", []))}
        folds = [epoch_row({**summary.head, "train.fold": i}, {**fold, "timestamp": result.get("timestamp")},
                           self.metrics) for i, fold in enumerate(result.get("folds", []))]
        self._admit_epoch(row, folds)
        self._maybe_flush()

    def _admit_epoch(self, row: dict[str, Any], folds: Sequence[dict[str, Any]] = ()) -> None:
        """The epoch row and, for a cross-validated trial, its fold models' rows: each once per (trial, epoch)
        (rows already written or buffered are a resumed trial re-reporting epochs after its checkpoint)."""
        trial_id, epoch = row["trial_id"], row["epoch"]
        if trial_id in self._written_trials:
            # Its record is closed: a trial that ended after Tune's last snapshot is run on by the restored study
            # (the snapshot still had it running). That work is redone, but its trials row stays the record.
            return
        if epoch > self._written_epoch.get(trial_id, 0):
            self._written_epoch[trial_id] = epoch
            self._buffers["epochs"].append(row)
        if folds and "folds" in self._tables and epoch > self._written_fold_epoch.get(trial_id, 0):
            self._written_fold_epoch[trial_id] = epoch
            self._buffers["folds"].extend(folds)

    def _admit_trial(self, row: dict[str, Any]) -> None:
        trial_id = row["trial_id"]
        if trial_id in self._written_trials:
            return  # finished in an earlier run of this study, replayed by a restore
        self._written_trials.add(trial_id)
        self._buffers["trials"].append(row)

    def _admit_final(self, row: dict[str, Any]) -> None:
        """A final run's test scores, once per (loss, final run): a run redone after a crash is not counted twice."""
        key = (row["loss"], row["final_run"])
        if key in self._written_finals:
            return
        self._written_finals.add(key)
        self._buffers["final"].append(row)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        summary = self._summary(trial)
        max_epochs = to_train_config(self.base, sampled_values(trial.config)).epochs
        if summary.epochs >= max_epochs:
            self._finish(trial, Status.COMPLETED, stop_reason="max_epochs")
        else:
            self._finish(trial, Status.STOPPED, stop_reason=self.stop_reason)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finish(trial, Status.ERROR, stop_reason="error", error=error_message(_error_text(trial)))

    def _finish(self, trial: Any, status: Status, *, stop_reason: str, error: str | None = None) -> None:
        self._open()
        summary = self._summaries.pop(trial.trial_id, None)
        if summary is None:  # ended before its first result (an error at start-up, say)
            summary = TrialSummary(head=self._head(trial))
            self._unsnapshotted.add(trial.trial_id)
        if (status is Status.COMPLETED and phase_of(trial.config) is Phase.FINAL and summary.test is not None
                and "final" in self._tables):
            self._admit_final(self._final_row(summary, int(trial.config[FINAL_RUN_KEY])))
        self._admit_trial(summary.row(status, error=error, stop_reason=stop_reason, metrics=self.metrics))
        self._maybe_flush()

    def _final_row(self, summary: TrialSummary, final_run: int) -> dict[str, Any]:
        assert summary.test is not None
        row = {**summary.head, "final_run": final_run, "wall_time_s": summary.wall_time_s, "epochs": summary.epochs,
               "best_epochs": ",".join(map(str, summary.test["best_epochs"]))}
        for evaluation in EVALUATIONS:
            for name, value in summary.test["test"][evaluation].items():
                row[f"{evaluation}.{name}"] = value
        return row

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self._maybe_flush()

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        # Tune snapshots before this call when the study ends or is interrupted; after a crash it does not, and
        # the rows of trials begun since the last snapshot stay unwritten (a restore runs them again).
        unfinished = any(t.status not in ("TERMINATED", "ERROR") for t in trials)
        self.flush()
        if self._writer is not None:
            self._writer.close()  # everything flushed is on disk before the run ends
        if self.mlflow is not None:
            self.mlflow.close("KILLED" if unfinished else "FINISHED")

    # -- writing ---------------------------------------------------------------------------------------------

    def _maybe_flush(self) -> None:
        buffered = sum(len(rows) for rows in self._buffers.values())
        if buffered and (buffered >= self.flush_rows or self.clock() - self._last_flush >= self.flush_interval_s):
            self.flush()

    def flush(self, *, wait: bool = False) -> None:
        """Hand the buffered rows of trials the last snapshot knew to the writer thread, in _TABLES order (a trial
        row never precedes its epochs on disk); with `wait`, return once they are on disk."""
        if not self._ready or self._writer is None:
            return
        for name in _TABLES:
            rows = self._buffers[name]
            ready = [r for r in rows if r["trial_id"] not in self._unsnapshotted]
            self._buffers[name] = [r for r in rows if r["trial_id"] in self._unsnapshotted]
            if name in self._tables and ready:
                self._writer.submit(name, ready)
        self._last_flush = self.clock()
        if wait:
            self.drain()

    def drain(self) -> None:
        """Wait until every row handed to the writer thread is on disk (tests and tools; the study never waits
        but at its end)."""
        if self._writer is not None:
            self._writer.drain()

    # -- experiment checkpoints ------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Saved with every experiment snapshot: small (running trials, the unflushed buffer), never a flush. Every
        trial seen so far is in this snapshot (Tune lists a trial before any callback hears of it), so from now
        on its rows may be written."""
        self._unsnapshotted.clear()
        # Rows handed to the writer but not on disk yet are pending too (before the buffer: they came first).
        in_flight = self._writer.in_flight() if self._writer is not None else {}
        pending = {name: [*in_flight.get(name, []), *self._buffers[name]] for name in _TABLES}
        return {
            "summaries": {tid: s.to_state() for tid, s in self._summaries.items()},
            "pending": {name: rows for name, rows in pending.items() if rows},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._summaries = {tid: TrialSummary.from_state(s) for tid, s in state.get("summaries", {}).items()}
        self._restored = True
        self._replay = dict(state.get("pending", {}))
        if self._ready:  # Tune restores callback state before setup; this covers any other order
            self._ready = False
            self._open()


class ClosedTrialStopper(Stopper):
    """Stops a trial whose trials row is already written, at its first result: a restored study resumes a trial
    that ended after Tune's last snapshot (the snapshot still had it running); its record is closed, so running it
    on would only be wasted work. Holds the study's recorder (Tune pickles both in one tuner, which keeps them the
    same object after a restore)."""

    def __init__(self, recorder: StudyRecorder) -> None:
        self.recorder = recorder

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.recorder.closed(trial_id)

    def stop_all(self) -> bool:
        return False
