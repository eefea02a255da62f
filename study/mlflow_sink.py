"""MLflow from the study driver: one parent run per study, one nested run per trial, batched writes.

Why not Ray's MLflowLoggerCallback: it makes flat runs, sends one request per metric, and forgets its run ids when
a study is restored. Here every write is buffered and sent with `log_batch` (up to 1,000 metrics a request) when
the study flushes; the run ids live in the callback's state, and a restored study also finds its runs again by
their tags, so it continues the same runs instead of opening new ones.

Only the driver writes, so the default sqlite store never sees concurrent writers ("database is locked").
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from results.study_dir import Status

__all__ = ["MlflowSink", "mlflow_metric_name"]

log = logging.getLogger(__name__)

# Tags that identify our runs, so a restored study can find them again.
TAG_STUDY = "dml_study.study_uid"
TAG_TRIAL = "dml_study.trial_id"
TAG_ROLE = "dml_study.role"
_RUN_STATUS = {Status.COMPLETED: "FINISHED", Status.STOPPED: "KILLED", Status.ERROR: "FAILED"}
_MAX_PARAM_LEN = 6000  # MLflow's limit on one parameter value


def mlflow_metric_name(name: str) -> str:
    """MLflow refuses '@' in metric names: recall@1 -> recall_at_1, map@r -> map_at_r."""
    return name.replace("@", "_at_")


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _MAX_PARAM_LEN else text[:_MAX_PARAM_LEN - 3] + "..."


class MlflowSink:
    """Buffers runs' metrics, params and tags; `flush` sends them. The client is created lazily (picklable)."""

    def __init__(self, *, tracking_uri: str, experiment: str, study_uid: str,
                 artifact_location: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.study_uid = study_uid
        self.artifact_location = artifact_location
        self.parent_run_id: str | None = None
        self.trial_runs: dict[str, str] = {}
        self._client: Any = None
        self._experiment_id: str | None = None
        self._metrics: dict[str, list[Any]] = defaultdict(list)
        self._params: dict[str, list[Any]] = defaultdict(list)
        self._tags: dict[str, list[Any]] = defaultdict(list)
        self._terminate: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_client=None, _experiment_id=None, _metrics=defaultdict(list), _params=defaultdict(list),
                     _tags=defaultdict(list), _terminate={})
        return state

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                self._experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=self.artifact_location)
            else:
                self._experiment_id = found.experiment_id
        return self._experiment_id

    def _find_run(self, role: str, trial_id: str | None = None) -> str | None:
        """A run of this study made before a restore (its id may postdate the last saved callback state)."""
        query = f"tags.`{TAG_STUDY}` = '{self.study_uid}' and tags.`{TAG_ROLE}` = '{role}'"
        if trial_id is not None:
            query += f" and tags.`{TAG_TRIAL}` = '{trial_id}'"
        runs = self.client.search_runs([self.experiment_id()], filter_string=query, max_results=1)
        return runs[0].info.run_id if runs else None

    def start_study(self, *, name: str, params: Mapping[str, Any], artifacts: list[str], restored: bool) -> str:
        """Create (or, on restore, find) the parent run; log the study config as params and files."""
        if self.parent_run_id is None and restored:
            self.parent_run_id = self._find_run("study")
        if self.parent_run_id is not None:
            self.client.update_run(self.parent_run_id, status="RUNNING")
            return self.parent_run_id
        run = self.client.create_run(self.experiment_id(), run_name=name,
                                     tags={TAG_STUDY: self.study_uid, TAG_ROLE: "study"})
        self.parent_run_id = run.info.run_id
        self._params[self.parent_run_id] += self._param_entities(params)
        for path in artifacts:
            self.client.log_artifact(self.parent_run_id, path)
        return self.parent_run_id

    def start_trial(self, trial_id: str, *, name: str, params: Mapping[str, Any], restored: bool) -> str:
        """The trial's nested run: created once, found again after a restore."""
        if trial_id in self.trial_runs:
            return self.trial_runs[trial_id]
        run_id = self._find_run("trial", trial_id) if restored else None
        if run_id is None:
            from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

            if self.parent_run_id is None:
                raise RuntimeError("start_study must run before start_trial")
            tags = {MLFLOW_PARENT_RUN_ID: self.parent_run_id, TAG_STUDY: self.study_uid, TAG_ROLE: "trial",
                    TAG_TRIAL: trial_id, "status": "running"}
            run_id = self.client.create_run(self.experiment_id(), run_name=name, tags=tags).info.run_id
            self._params[run_id] += self._param_entities(params)
        self.trial_runs[trial_id] = run_id
        return run_id

    # -- buffered writes ------------------------------------------------------------------------------------

    @staticmethod
    def _param_entities(params: Mapping[str, Any]) -> list[Any]:
        from mlflow.entities import Param

        return [Param(str(k), _param_value(v)) for k, v in params.items() if v is not None]

    def log_epoch(self, trial_id: str, epoch: int, values: Mapping[str, float | None], timestamp: float) -> None:
        from mlflow.entities import Metric

        run_id = self.trial_runs[trial_id]
        millis = int(timestamp * 1000)
        self._metrics[run_id] += [Metric(mlflow_metric_name(k), float(v), millis, epoch)
                                  for k, v in values.items() if v is not None]

    def end_trial(self, trial_id: str, status: Status, *, stop_reason: str | None,
                  error: str | None) -> None:
        from mlflow.entities import RunTag

        run_id = self.trial_runs.get(trial_id)
        if run_id is None:
            return
        tags = {"status": status.value, "stop_reason": stop_reason or "", "error": (error or "")[:5000]}
        self._tags[run_id] += [RunTag(k, v) for k, v in tags.items()]
        self._terminate[run_id] = _RUN_STATUS[status]

    def flush(self) -> None:
        """Send everything buffered: log_batch per run and chunk, then the run terminations.

        A failed request (a server restarting, say) keeps that run's unsent entries for the next flush.
        """
        for run_id in set(self._metrics) | set(self._params) | set(self._tags):
            self._send(run_id)
        ended = []
        for run_id, status in list(self._terminate.items()):
            if run_id in self._metrics or run_id in self._params or run_id in self._tags:
                continue  # entries still pending: end the run after they are sent
            self.client.set_terminated(run_id, status=status, end_time=int(time.time() * 1000))
            del self._terminate[run_id]
            ended.append(run_id)
        if ended:
            # Ended runs leave the state (it is saved with every experiment checkpoint, so it must stay small);
            # a restore finds them again by their tags if it needs them.
            gone = set(ended)
            self.trial_runs = {t: r for t, r in self.trial_runs.items() if r not in gone}

    def _send(self, run_id: str) -> None:
        pending = [("params", self._params.pop(run_id, []), 100), ("tags", self._tags.pop(run_id, []), 100),
                   ("metrics", self._metrics.pop(run_id, []), 1000)]
        for position, (kind, items, size) in enumerate(pending):
            sent = 0
            try:
                for chunk in _chunks(items, size):
                    self.client.log_batch(run_id, **{kind: chunk}, synchronous=True)
                    sent += len(chunk)
            except Exception as exc:  # noqa: BLE001 - tracking must not kill the study; retried next flush
                log.warning("MLflow write to run %s failed (%s); will retry at the next flush", run_id, exc)
                self._buffer(kind)[run_id] += items[sent:]
                for later_kind, later_items, _ in pending[position + 1:]:
                    self._buffer(later_kind)[run_id] += later_items
                return

    def _buffer(self, kind: str) -> dict[str, list[Any]]:
        return {"params": self._params, "tags": self._tags, "metrics": self._metrics}[kind]

    def close_lost_runs(self, keep: set[str], *, message: str) -> None:
        """End this study's trial runs still marked running whose trial is not in `keep` (lost in a driver crash):
        failed with `message`, or deleted when they never logged a metric (nothing of them is anywhere else)."""
        query = (f"tags.`{TAG_STUDY}` = '{self.study_uid}' and tags.`{TAG_ROLE}` = 'trial' "
                 f"and attributes.status = 'RUNNING'")
        for run in self.client.search_runs([self.experiment_id()], filter_string=query, max_results=10_000):
            if run.data.tags.get(TAG_TRIAL) in keep:
                continue
            if not run.data.metrics:
                self.client.delete_run(run.info.run_id)
                continue
            from mlflow.entities import RunTag

            tags = [RunTag("status", Status.ERROR.value), RunTag("stop_reason", "lost"), RunTag("error", message)]
            self.client.log_batch(run.info.run_id, tags=tags, synchronous=True)
            self.client.set_terminated(run.info.run_id, status="FAILED")

    def end_study(self, status: str = "FINISHED") -> None:
        self.flush()
        if self.parent_run_id is not None:
            self.client.set_terminated(self.parent_run_id, status=status)

    def state(self) -> dict[str, Any]:
        return {"parent_run_id": self.parent_run_id, "trial_runs": dict(self.trial_runs)}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.parent_run_id = state.get("parent_run_id")
        self.trial_runs = dict(state.get("trial_runs", {}))
