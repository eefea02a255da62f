"""MLflow as a mirror of the study's Parquet tables: written from a thread of its own, catching up after outages.

The tables are the record; MLflow shows them. Every part file the recorder writes is handed to this mirror, which
sends its rows to MLflow from a background thread: one parent run per study, one nested run per trial (made when the
trial's first row is mirrored, so a trial a crash made Tune forget never gets one), every epoch's metrics with
step = epoch, the trial's params, and its end (status and tags) when its trials row is mirrored. So:

- a slow or unreachable tracking server never blocks Tune's loop nor delays the tables: `written` only enqueues,
  on a bounded queue; when the queue is full, the rows are dropped there and read back from disk later;
- every row reaches MLflow exactly once: the mirror records, per table, the last part it has sent completely
  (STUDY_DIR/mlflow_mirror.json, written atomically); a restarted study resends the parts after it, and MLflow's
  stores keep a metric point logged twice with the same key, step, timestamp and value once, so the resend of a
  part that was half sent doubles nothing;
- a failed request is retried, with backoff, until it succeeds; the end of a run waits `drain_timeout_s` for the
  mirror to finish, then says once what is left: the next `dml-study resume` of the study sends it.

Why not Ray's MLflowLoggerCallback: it makes flat runs, sends one request per metric from Tune's loop, and forgets
its run ids when a study is restored.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dml_core.files import Location, read_text, write_text
from results.parts import PartTable, parse_part
from results.study_dir import EVALUATIONS, EPOCH_TIMING, Status

__all__ = ["MIRRORED_TABLES", "MlflowMirror", "mlflow_metric_name", "run_name"]

log = logging.getLogger(__name__)

# Tags that identify our runs, so a restarted study finds them again.
TAG_STUDY = "dml_study.study_uid"
TAG_TRIAL = "dml_study.trial_id"
TAG_ROLE = "dml_study.role"
# MLflow 3 opens an experiment on its GenAI pages unless told that it holds model-development runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# Stopping early (ASHA) is a normal end of a trial, not a kill: its run is FINISHED, with a stop_reason tag.
_RUN_STATUS = {Status.COMPLETED: "FINISHED", Status.STOPPED: "FINISHED", Status.ERROR: "FAILED"}
# The tables MLflow shows, in the order they are sent (a trial's run ends after its metrics).
MIRRORED_TABLES = ("epochs", "trials", "final")
_MAX_PARAM_LEN = 6000  # MLflow's limit on one parameter value
_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


def mlflow_metric_name(name: str) -> str:
    """MLflow refuses '@' in metric names: recall@1 -> recall_at_1, map@r -> map_at_r."""
    return name.replace("@", "_at_")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run_name(row: Mapping[str, Any]) -> str:
    """A trial run's name as the runs list shows it: the loss, its miner and their sampled values, then the trial
    id (`triplet margin=0.12 · triplet_margin margin=0.05 type_of_triplets=semihard · 3f2a1b0c`)."""
    loss, miner = str(row["loss"]), str(row.get("miner") or "none")
    own = [f"{k.split('.', 1)[1]}={_short(v)}" for k, v in row.items()
           if v is not None and k.startswith(f"{loss}.")]
    parts = [" ".join([loss, *own])]
    if miner != "none":
        mined = [f"{k.rsplit('.', 1)[1]}={_short(v)}" for k, v in row.items()
                 if v is not None and k.startswith(f"miner.{miner}.")]
        parts.append(" ".join([miner, *mined]))
    if row.get("phase") == "final":
        parts.append(f"final run {row.get('final_run', '')}".strip())
    parts.append(str(row["trial_id"])[:8])
    name = " · ".join(parts)
    return name if len(name) <= 250 else name[:247] + "..."


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _MAX_PARAM_LEN else text[:_MAX_PARAM_LEN - 3] + "..."


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class _Stopped(Exception):
    """The driver stopped waiting for the mirror: the thread ends, and the next run of the study catches up."""


@dataclass
class _Part:
    """One part file to mirror, holding the parts lo..hi as written (a compacted part holds several): its rows
    (None: read them from disk, as after a restart or an overflow)."""

    table: str
    lo: int
    hi: int
    path: str
    rows: list[dict[str, Any]] | None = None


class _Gone(Exception):
    """A part to read was replaced by a compaction: the catch-up lists the table again."""


@dataclass
class _Progress:
    """What the mirror has sent completely to one tracking store: per table, the last part (-1: none)."""

    tracking_uri: str
    sent: dict[str, int] = field(default_factory=lambda: {t: -1 for t in MIRRORED_TABLES})
    parent_run_id: str | None = None

    @classmethod
    def load(cls, location: Location, tracking_uri: str) -> _Progress:
        """The progress file's record for `tracking_uri`; a fresh one for another store (a study moved to a
        tracking server gets everything sent there) or for a missing or unreadable file."""
        text = read_text(location)
        if text is None:
            return cls(tracking_uri)
        try:
            raw = json.loads(text)
            if raw.get("tracking_uri") != tracking_uri:
                return cls(tracking_uri)
            return cls(tracking_uri, {t: int(raw.get("sent", {}).get(t, -1)) for t in MIRRORED_TABLES},
                       raw.get("parent_run_id"))
        except (ValueError, TypeError, AttributeError):
            log.warning("%s is unreadable; MLflow will be sent every part again (it keeps each point once)",
                        location)
            return cls(tracking_uri)

    def save(self, location: Location) -> None:
        write_text(location, json.dumps({"tracking_uri": self.tracking_uri, "sent": self.sent,
                                         "parent_run_id": self.parent_run_id}, indent=2))


class MlflowMirror:
    """Sends the study's written rows to MLflow from a background thread; no call raises into the caller."""

    def __init__(self, *, tracking_uri: str, experiment: str, study_uid: str, study_name: str,
                 progress_file: Location, metrics: Sequence[str], params: Mapping[str, Any],
                 head_keys: Sequence[str], artifacts: Sequence[str] = (), artifact_location: str | None = None,
                 drain_timeout_s: float = 60.0, queue_size: int = 64, metric: str = "recall@1",
                 sign: float = 1.0) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.study_uid = study_uid
        self.study_name = study_name
        self.progress_file = progress_file
        self.metrics = list(metrics)
        self.params = dict(params)
        self.head_keys = list(dict.fromkeys(head_keys))  # the row columns logged as a trial run's params
        self.artifacts = list(artifacts)
        self.artifact_location = artifact_location
        self.drain_timeout_s = drain_timeout_s
        self.queue_size = queue_size
        self.metric = metric  # the study's metric: the parent run shows its best, overall and per loss
        self.sign = sign
        self._reset()

    def _reset(self) -> None:
        self._queue: queue.Queue[_Part | None] = queue.Queue(self.queue_size)
        self._thread: threading.Thread | None = None
        self._tables: dict[str, PartTable] = {}
        self._overflow = threading.Event()
        self._client: Any = None
        self._experiment_id: str | None = None
        self._progress = _Progress(self.tracking_uri)
        self._runs: dict[str, str] = {}  # trial id -> run id, for trials whose run has not ended
        self._known: dict[str, str] | None = None  # trial id -> run id of every trial run of the study
        self._outage_since: float | None = None
        self._last_error = ""
        self._stopping = threading.Event()
        self._final_status = "FINISHED"
        self._leaders: dict[str, float] = {}  # loss -> its best trial's sign-normalised value, as mirrored
        self._ended_trials = 0

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles callbacks with the tuner: the settings, not the thread, the queue or the client."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # -- the driver's side: never blocks on MLflow -----------------------------------------------------------

    def start(self, tables: Mapping[str, PartTable]) -> None:
        """Start the thread: it first sends the parts written but not mirrored yet (none for a new study)."""
        if self._thread is not None:
            return
        self._tables = {name: tables[name] for name in MIRRORED_TABLES if name in tables}
        self._thread = threading.Thread(target=self._run, name="mlflow-mirror", daemon=True)
        self._thread.start()

    def written(self, table: str, location: Location | None, rows: list[dict[str, Any]]) -> None:
        """`rows` were just written to `table` as the part at `location`: queue them for MLflow."""
        if table not in MIRRORED_TABLES or location is None or self._thread is None:
            return
        part = parse_part(str(location))
        if part is None:
            return
        try:
            self._queue.put_nowait(_Part(table, part.lo, part.hi, part.path, [dict(r) for r in rows]))
        except queue.Full:
            self._overflow.set()  # the parts are on disk: the thread reads them back when it has caught up

    def close(self, status: str) -> None:
        """End the study's parent run with `status` once everything is sent; wait `drain_timeout_s` at most,
        then say what is left (the next run of the study sends it)."""
        if self._thread is None:
            return
        self._final_status = status
        deadline = time.monotonic() + self.drain_timeout_s
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:
                self._queue.put(None, timeout=max(0.0, min(1.0, deadline - time.monotonic())))
                break
            except queue.Full:
                continue
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._stopping.set()
            self._end_parent_now()
            if self._outage_since is None:
                print(f"dml-study: MLflow at {self.tracking_uri} did not catch up within tracking.drain_timeout_s "
                      f"({self.drain_timeout_s:.0f} s); the Parquet tables are complete, and `dml-study resume` of "
                      f"this study sends MLflow the rest", file=sys.stderr)
                return
            since = time.strftime("%H:%M:%S", time.localtime(self._outage_since))
            print(f"dml-study: MLflow at {self.tracking_uri} has failed since {since} ({self._last_error}); the "
                  f"Parquet tables are complete, and `dml-study resume` of this study sends MLflow what it lacks "
                  f"once it works again", file=sys.stderr)

    def _end_parent_now(self, timeout_s: float = 5.0) -> None:
        """One try, bounded in time, to end the parent run when the mirror could not catch up in time: a study
        that is over must not show as running (its metrics still arrive with the next resume)."""
        ender = threading.Thread(target=self._try_end_parent, name="mlflow-end", daemon=True)
        ender.start()
        ender.join(timeout_s)

    def _try_end_parent(self) -> None:
        try:
            self._end_parent()
        except Exception:  # noqa: BLE001 - the store is down: the next resume ends the run
            log.debug("could not end the parent run", exc_info=True)

    # -- the thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._mirror_until_closed()
        except _Stopped:
            return

    def _mirror_until_closed(self) -> None:
        self._progress = self._retry(lambda: _Progress.load(self.progress_file, self.tracking_uri))
        self._retry(self._ensure_sqlite_store)
        self._retry(self._ensure_parent)
        self._retry(self._load_leaders)
        self._catch_up()
        while not self._stopping.is_set():
            try:
                part = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._catch_up_if_overflowed()
                continue
            if part is None:
                self._catch_up_if_overflowed()
                self._retry(self._end_parent)
                return
            self._send(part)

    def _catch_up_if_overflowed(self) -> None:
        if self._overflow.is_set():
            self._overflow.clear()
            self._catch_up()

    def _catch_up(self) -> None:
        """Send the parts on disk after the last one sent completely, table by table. A compacted part that holds
        parts sent already and some not is sent whole: MLflow keeps a point sent twice once."""
        for name, table in self._tables.items():
            while True:
                try:
                    for part in self._retry(table.parts):
                        if part.hi > self._progress.sent[name]:
                            self._send(_Part(name, part.lo, part.hi, part.path))
                    break
                except _Gone:
                    continue  # compacted while being read: list again

    def _send(self, part: _Part) -> None:
        if part.hi <= self._progress.sent[part.table]:
            return  # sent already (a part queued while the catch-up read it from disk)
        rows = part.rows
        if rows is None:
            rows = self._retry(lambda: self._read(part))
        self._retry(lambda: self._mirror(part.table, rows))
        self._progress.sent[part.table] = part.hi
        self._retry(lambda: self._progress.save(self.progress_file))

    def _read(self, part: _Part) -> list[dict[str, Any]]:
        try:
            return self._tables[part.table].read_part(part.path)
        except FileNotFoundError:
            raise _Gone from None

    def _retry(self, action: Any) -> Any:
        """`action()` until it succeeds (or the run is over): MLflow being down must cost the study nothing."""
        attempt = 0
        while True:
            try:
                result = action()
            except _Gone:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of the tracking store is retried
                if self._stopping.is_set():
                    raise _Stopped from None
                self._last_error = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
                if self._outage_since is None:
                    self._outage_since = time.time()
                    log.warning("MLflow at %s failed (%s); retrying in the background, the Parquet tables are "
                                "not affected", self.tracking_uri, str(exc).splitlines()[0] if str(exc) else exc)
                self._stopping.wait(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
                attempt += 1
                continue
            if self._outage_since is not None:
                log.warning("MLflow at %s is back after %.0f s; catching up", self.tracking_uri,
                            time.time() - self._outage_since)
                self._outage_since = None
            return result

    # -- MLflow --------------------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _experiment(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                self._experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=self.artifact_location, tags=EXPERIMENT_KIND)
            else:
                self._experiment_id = found.experiment_id
                if found.tags.get("mlflow.experimentKind") is None:
                    for key, value in EXPERIMENT_KIND.items():
                        self.client.set_experiment_tag(self._experiment_id, key, value)
        return self._experiment_id

    def _find_run(self, role: str, trial_id: str | None = None) -> str | None:
        """A run of this study made by an earlier run of it (found by its tags)."""
        query = f"tags.`{TAG_STUDY}` = '{self.study_uid}' and tags.`{TAG_ROLE}` = '{role}'"
        if trial_id is not None:
            query += f" and tags.`{TAG_TRIAL}` = '{trial_id}'"
        runs = self.client.search_runs([self._experiment()], filter_string=query, max_results=1)
        return runs[0].info.run_id if runs else None

    def _trial_runs(self) -> dict[str, str]:
        """Trial id -> run id of every trial run of this study already in the store, in one paged search: looking
        each new trial up on its own would cost a search over all the study's runs per trial."""
        query = f"tags.`{TAG_STUDY}` = '{self.study_uid}' and tags.`{TAG_ROLE}` = 'trial'"
        found: dict[str, str] = {}
        token = None
        while True:
            page = self.client.search_runs([self._experiment()], filter_string=query, max_results=10000,
                                           page_token=token)
            found.update({r.data.tags[TAG_TRIAL]: r.info.run_id for r in page if TAG_TRIAL in r.data.tags})
            token = page.token
            if not token:
                return found

    def _ensure_parent(self) -> None:
        if self._progress.parent_run_id is None:
            self._progress.parent_run_id = self._find_run("study")
        if self._progress.parent_run_id is not None:
            self.client.update_run(self._progress.parent_run_id, status="RUNNING")
            return
        from mlflow.entities import Param

        run = self.client.create_run(self._experiment(), run_name=self.study_name,
                                     tags={TAG_STUDY: self.study_uid, TAG_ROLE: "study"})
        params = [Param(str(k), _param_value(v)) for k, v in self.params.items() if v is not None]
        for chunk in _chunks(params, 100):
            self.client.log_batch(run.info.run_id, params=chunk, synchronous=True)
        for path in self.artifacts:
            self.client.log_artifact(run.info.run_id, path)
        self._progress.parent_run_id = run.info.run_id
        self._progress.save(self.progress_file)

    def _ensure_sqlite_store(self) -> None:
        """Create a new sqlite tracking store whole or not at all. MLflow creates one by running its schema
        migrations in place, for seconds; a study killed meanwhile would leave a store MLflow refuses for good
        ("out-of-date database schema"). So a missing store is made under a temporary name and renamed into place."""
        prefix = "sqlite:///"
        if not self.tracking_uri.startswith(prefix):
            return
        path = self.tracking_uri[len(prefix):]
        if not path or path == ":memory:" or os.path.exists(path):
            return
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        os.close(handle)
        os.unlink(temp)  # MLflow creates the file itself
        try:
            store = SqlAlchemyStore(f"{prefix}{temp}", self.artifact_location or "./mlruns")
            store.engine.dispose()
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)

    def _load_leaders(self) -> None:
        """The best of each loss among the trials rows MLflow has already been sent (a restarted study)."""
        table = self._tables.get("trials")
        column = f"best_{self.metric}"
        if table is None or column not in table.schema.names:
            return
        sent = self._progress.sent["trials"]
        # Parts not sent yet are sent, and counted, by the catch-up.
        _, rows = table.snapshot(lambda parts: table.read_parts([p for p in parts if p.hi <= sent], ["loss", column]))
        self._leaders, self._ended_trials = {}, 0
        self._lead(rows.to_pylist())

    def _lead(self, rows: Sequence[Mapping[str, Any]]) -> bool:
        """Count the ended trials and update each loss's best; True when a best changed."""
        changed = False
        for row in rows:
            self._ended_trials += 1
            value = row.get(f"best_{self.metric}")
            if value is None or not math.isfinite(float(value)):
                continue
            score = self.sign * float(value)
            if score > self._leaders.get(str(row["loss"]), -math.inf):
                self._leaders[str(row["loss"])] = score
                changed = True
        return changed

    def _log_leaders(self) -> None:
        """The parent run's metrics: the study's best value and each loss's, stepped by trials ended."""
        from mlflow.entities import Metric

        if self._progress.parent_run_id is None or not self._leaders:
            return
        name = mlflow_metric_name(self.metric)
        millis = int(time.time() * 1000)
        best = max(self._leaders.values())
        entries = [Metric(f"best_{name}", self.sign * best, millis, self._ended_trials)]
        entries += [Metric(f"best_{name}.{loss}", self.sign * score, millis, self._ended_trials)
                    for loss, score in sorted(self._leaders.items())]
        for chunk in _chunks(entries, 1000):
            self.client.log_batch(self._progress.parent_run_id, metrics=chunk, synchronous=True)

    def _end_parent(self) -> None:
        if self._progress.parent_run_id is not None:
            self.client.set_terminated(self._progress.parent_run_id, status=self._final_status)

    def _trial_run(self, row: Mapping[str, Any]) -> str:
        """The run of the row's trial: made when its first row is mirrored, found again by a later run."""
        trial_id = str(row["trial_id"])
        if trial_id in self._runs:
            return self._runs[trial_id]
        if self._known is None:
            self._known = self._trial_runs()
        run_id = self._known.get(trial_id)
        if run_id is None:
            from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

            tags = {MLFLOW_PARENT_RUN_ID: self._progress.parent_run_id, TAG_STUDY: self.study_uid,
                    TAG_ROLE: "trial", TAG_TRIAL: trial_id}
            try:
                run_id = self.client.create_run(self._experiment(), run_name=run_name(row), tags=tags).info.run_id
            except Exception:
                self._known = None  # the store may have made the run before failing: the retry searches again
                raise
            self._known[trial_id] = run_id
        # Every time the run is first met here: logging the same params again is allowed, so a failure between
        # making the run and logging them loses nothing.
        from mlflow.entities import Param

        params = [Param(k, _param_value(row[k])) for k in self.head_keys if row.get(k) is not None]
        for chunk in _chunks(params, 100):
            self.client.log_batch(run_id, params=chunk, synchronous=True)
        self._runs[trial_id] = run_id
        return run_id

    def _mirror(self, table: str, rows: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric, RunTag

        metrics: dict[str, list[Any]] = defaultdict(list)
        for row in rows:
            run_id = self._trial_run(row)
            if table == "epochs":
                millis = int((row.get("timestamp") or 0.0) * 1000)
                names = (*self.metrics, *EPOCH_TIMING)
                metrics[run_id] += [Metric(mlflow_metric_name(n), float(row[n]), millis, int(row["epoch"]))
                                    for n in names if row.get(n) is not None]
            elif table == "final":
                names = [c for c in row if c.startswith(tuple(f"{e}." for e in EVALUATIONS))]
                metrics[run_id] += [Metric(mlflow_metric_name(n), float(row[n]), 0, 0)
                                    for n in names if row.get(n) is not None]
        for run_id, entries in metrics.items():
            for chunk in _chunks(entries, 1000):
                self.client.log_batch(run_id, metrics=chunk, synchronous=True)
        if table == "final":
            for row in rows:
                self._runs.pop(str(row["trial_id"]), None)  # its run ended with its trials row
        if table != "trials":
            return
        for row in rows:
            run_id = self._runs[str(row["trial_id"])]
            status = Status(row["status"])
            tags = [RunTag("status", status.value), RunTag("stop_reason", str(row.get("stop_reason") or ""))]
            if row.get("error"):
                tags.append(RunTag("error", str(row["error"])[:5000]))
            # The trial's best epoch's values as metrics of their own: the runs table sorts by them.
            best = [Metric(f"best_{mlflow_metric_name(m)}", float(row[f"best_{m}"]), 0, int(row.get("best_epoch") or 0))
                    for m in self.metrics if row.get(f"best_{m}") is not None and math.isfinite(row[f"best_{m}"])]
            self.client.log_batch(run_id, metrics=best, tags=tags, synchronous=True)
            self.client.set_terminated(run_id, status=_RUN_STATUS[status])
            self._runs.pop(str(row["trial_id"]), None)  # ended: nothing more to send to it
        self._lead(rows)
        self._log_leaders()
