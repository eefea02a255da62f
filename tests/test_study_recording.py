"""The driver-side recording, without Ray: part tables, the recorder's dedup and flushing, MLflow runs, searchers."""

from __future__ import annotations

import io
import math
import os
import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pyarrow as pa
import pytest

from dml_core.config import TrainConfig
from dml_core.mode import Mode
from results.study_dir import PartTable, Status, epochs_schema
from search_spaces import full_comparison_space, sensitivity_space
from search_spaces.distributions import Choice, LogUniform
from study.config import Algorithm
from study.mlflow_mirror import MlflowMirror, mlflow_metric_name
from study.recorder import StudyRecorder, error_message
from study.records import config_id
from study.searcher import GridSearcher, OptunaSearcher, outcome

METRICS = ["recall@1", "recall@2", "precision@1", "r_precision", "map@r"]
COLUMNS = {"loss": "str", "miner": "str", "triplet.margin": "float", "normalized_softmax.temperature": "float",
           "miner.triplet_margin.type_of_triplets": "str", "train.lr": "float"}


@dataclass
class FakeTrial:
    trial_id: str
    config: dict[str, Any]
    status: str = "RUNNING"
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def get_error(self) -> str | None:
        return self.error


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def result(epoch: int, r1: float) -> dict[str, Any]:
    return {"epoch": epoch, "recall@1": r1, "recall@2": r1 + 0.1, "precision@1": r1, "r_precision": r1 / 2,
            "map@r": r1 / 3, "train_loss": 1.0 / epoch, "train_time_s": 0.5, "eval_time_s": 0.1,
            "epoch_time_s": 0.6, "time_total_s": 0.6 * epoch, "timestamp": 1_700_000_000.0 + epoch}


def recorder(tmp_path, *, clock=None, mlflow=None, interval=1000.0, rows=1000) -> StudyRecorder:
    return StudyRecorder(study="s", results_dir=str(tmp_path / "results"), base=TrainConfig(epochs=3),
                         param_columns=COLUMNS, metrics=METRICS, metric="recall@1", sign=1.0, stop_reason="asha",
                         flush_interval_s=interval, flush_rows=rows, mlflow=mlflow, clock=clock or Clock())


TRIPLET = {"loss": "triplet", "triplet.margin": 0.1, "miner": "triplet_margin",
           "miner.triplet_margin.type_of_triplets": "hard"}
SOFTMAX = {"loss": "normalized_softmax", "normalized_softmax.temperature": 0.05, "miner": "none", "train.lr": 0.01}


def epochs_frame(tmp_path) -> pd.DataFrame:
    return pd.read_parquet(tmp_path / "results" / "epochs.parquet")


# -- records ------------------------------------------------------------------------------------------------


def test_mlflow_names_and_config_ids():
    assert mlflow_metric_name("recall@1") == "recall_at_1"
    assert mlflow_metric_name("map@r") == "map_at_r"
    assert config_id({**TRIPLET, "train.seed": 1}) == config_id({**TRIPLET, "train.seed": 2})
    assert config_id(TRIPLET) != config_id({**TRIPLET, "triplet.margin": 0.2})


def test_error_message_takes_the_exception_line():
    text = ("Failure # 1\nTraceback (most recent call last):\n  File \"x.py\", line 3\n"
            "ray.exceptions.RayTaskError(NonFiniteLossError): ray::ImplicitFunc.train()\n"
            "dml_core.train.NonFiniteLossError: non-finite loss nan at epoch 1, step 3\n")
    assert error_message(text) == "dml_core.train.NonFiniteLossError: non-finite loss nan at epoch 1, step 3"
    assert error_message(None) == "unknown error"


# -- part tables --------------------------------------------------------------------------------------------


def test_part_table_appends_atomic_parts_with_one_schema(tmp_path):
    schema = epochs_schema(COLUMNS, METRICS)
    table = PartTable(str(tmp_path / "t.parquet"), schema)
    assert table.read().num_rows == 0
    table.append([{"study": "s", "trial_id": "a", "loss": "triplet", "triplet.margin": 0.1, "epoch": 1}])
    table.append([{"study": "s", "trial_id": "b", "loss": "normalized_softmax", "normalized_softmax.temperature": 0.05,
                   "epoch": 1, "recall@1": 0.5}])
    assert table.append([]) is None
    files = sorted(os.listdir(tmp_path / "t.parquet"))
    assert len(files) == 2 and all(f.startswith("part-") for f in files)
    frame = pd.read_parquet(tmp_path / "t.parquet")
    assert list(frame.columns) == schema.names
    assert frame.set_index("trial_id").loc["a", "normalized_softmax.temperature"] is None or \
        math.isnan(frame.set_index("trial_id").loc["a", "normalized_softmax.temperature"])
    # A reopened table continues the numbering after the existing parts.
    again = PartTable(str(tmp_path / "t.parquet"), schema)
    again.append([{"study": "s", "trial_id": "c", "epoch": 2}])
    assert sorted(os.listdir(tmp_path / "t.parquet"))[-1].startswith("part-000002-")


def test_part_table_leaves_no_temp_file_when_a_write_fails(tmp_path):
    table = PartTable(str(tmp_path / "t.parquet"), epochs_schema(COLUMNS, METRICS))
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, TypeError)):
        table.append([{"study": "s", "trial_id": "a", "epoch": "not a number"}])
    directory = tmp_path / "t.parquet"
    assert not directory.exists() or os.listdir(directory) == []


# -- the recorder -------------------------------------------------------------------------------------------


def test_recorder_buffers_and_flushes_on_interval(tmp_path):
    clock = Clock()
    rec = recorder(tmp_path, clock=clock, interval=10.0)
    rec.setup()
    trial = FakeTrial("t1", TRIPLET)
    rec.on_trial_start(0, [], trial)
    rec.get_state()  # an experiment snapshot lists the trial
    rec.on_trial_result(0, [], trial, result(1, 0.2))
    assert not (tmp_path / "results" / "epochs.parquet").exists()  # buffered
    clock.now = 11.0
    rec.on_step_end(0, [])
    rec.drain()
    assert len(epochs_frame(tmp_path)) == 1


def test_rows_of_a_trial_wait_for_a_snapshot_that_knows_it(tmp_path):
    """A trial begun after Tune's last snapshot would be forgotten by a restore: its rows are held until a snapshot
    lists it, so the tables never hold a trial that a restored study runs again under a new id."""
    rec = recorder(tmp_path, rows=1)
    rec.setup()
    known, new = FakeTrial("k", TRIPLET), FakeTrial("n", SOFTMAX)
    rec.on_trial_start(0, [], known)
    rec.get_state()
    rec.on_trial_start(0, [], new)
    rec.on_trial_result(0, [], known, result(1, 0.2))
    rec.on_trial_result(0, [], new, result(1, 0.3))
    rec.flush(wait=True)
    assert list(epochs_frame(tmp_path)["trial_id"]) == ["k"]
    state = rec.get_state()  # the next snapshot lists the new trial; its buffered row is in the state too
    assert [r["trial_id"] for r in state["pending"]["epochs"]] == ["n"]
    rec.flush(wait=True)
    assert sorted(epochs_frame(tmp_path)["trial_id"]) == ["k", "n"]


def test_recorder_flushes_when_the_buffer_is_full(tmp_path):
    rec = recorder(tmp_path, rows=2)
    rec.setup()
    trial = FakeTrial("t1", TRIPLET)
    rec.on_trial_start(0, [], trial)
    rec.get_state()
    for epoch in (1, 2):
        rec.on_trial_result(0, [], trial, result(epoch, 0.1 * epoch))
    rec.drain()
    assert len(epochs_frame(tmp_path)) == 2


def test_trial_rows_statuses_best_and_last(tmp_path):
    rec = recorder(tmp_path)
    rec.setup()
    done, stopped, failed = FakeTrial("a", TRIPLET), FakeTrial("b", SOFTMAX), FakeTrial("c", SOFTMAX)
    failed.error = "Traceback\nValueError: boom"
    for trial in (done, stopped, failed):
        rec.on_trial_start(0, [], trial)
    for epoch, r1 in ((1, 0.3), (2, 0.6), (3, 0.5)):
        rec.on_trial_result(0, [], done, result(epoch, r1))
    rec.on_trial_result(0, [], stopped, result(1, 0.1))
    rec.on_trial_complete(0, [], done)
    rec.on_trial_complete(0, [], stopped)
    rec.on_trial_error(0, [], failed)
    rec.get_state()  # Tune snapshots before the experiment ends
    rec.on_experiment_end([])
    trials = pd.read_parquet(tmp_path / "results" / "trials.parquet").set_index("trial_id")
    assert trials.loc["a", "status"] == Status.COMPLETED.value
    assert trials.loc["a", "best_recall@1"] == 0.6 and trials.loc["a", "best_epoch"] == 2
    assert trials.loc["a", "last_recall@1"] == 0.5 and trials.loc["a", "epochs"] == 3
    assert trials.loc["b", "status"] == "stopped" and trials.loc["b", "stop_reason"] == "asha"
    assert trials.loc["c", "status"] == "error" and trials.loc["c", "error"] == "ValueError: boom"
    assert trials.loc["c", "epochs"] == 0
    assert trials.loc["b", "normalized_softmax.temperature"] == 0.05 and trials.loc["b", "train.lr"] == 0.01
    assert pd.isna(trials.loc["b", "triplet.margin"])
    # Seed and fold are in every row under their TrainConfig names, from the study's base where not sampled.
    assert (trials["train.seed"] == 0).all() and trials["train.fold"].isna().all()


def test_restart_writes_pending_rows_once_and_drops_replayed_epochs(tmp_path):
    """A restored study: rows buffered at the snapshot are written, rows on disk are not doubled, and rows lost
    after the snapshot are written when the resumed trial reports them again."""
    first = recorder(tmp_path)
    first.setup()
    t1, t2 = FakeTrial("t1", TRIPLET), FakeTrial("t2", SOFTMAX)
    first.on_trial_start(0, [], t1)
    first.on_trial_start(0, [], t2)
    first.on_trial_result(0, [], t1, result(1, 0.2))
    first.on_trial_result(0, [], t2, result(1, 0.3))
    first.flush(wait=True)  # t1 and t2 epoch 1 on disk
    first.on_trial_result(0, [], t1, result(2, 0.4))
    state = first.get_state()  # an experiment snapshot: t1 epoch 2 only in the buffer, so in the state
    assert not os.path.exists(tmp_path / "results" / "epochs.parquet") or len(epochs_frame(tmp_path)) == 2
    first.on_trial_result(0, [], t2, result(2, 0.5))
    first.flush(wait=True)  # t2 epoch 2 reaches disk after the snapshot ...
    first.on_trial_result(0, [], t1, result(3, 0.5))  # ... t1 epoch 3 does not: the driver dies here

    second = pickle.loads(pickle.dumps(first))  # Tune restores callbacks from its pickle ...
    second.set_state(state)  # ... and their state from the snapshot
    second.setup()
    for epoch, r1 in ((2, 0.4), (3, 0.5)):  # both trials resume from their epoch-2 checkpoints ...
        second.on_trial_result(0, [], t1, result(epoch, r1))
    second.on_trial_result(0, [], t2, result(2, 0.5))  # ... as the snapshot knew them
    second.on_trial_result(0, [], t2, result(3, 0.6))
    second.on_trial_complete(0, [], t1)
    second.on_trial_complete(0, [], t2)
    second.on_experiment_end([])
    frame = epochs_frame(tmp_path)
    assert sorted(frame[frame.trial_id == "t1"].epoch) == [1, 2, 3]
    assert sorted(frame[frame.trial_id == "t2"].epoch) == [1, 2, 3]
    assert not frame.duplicated(["trial_id", "epoch"]).any()
    trials = pd.read_parquet(tmp_path / "results" / "trials.parquet").set_index("trial_id")
    assert trials.loc["t1", "best_recall@1"] == 0.5 and trials.loc["t2", "best_recall@1"] == 0.6
    assert (trials["status"] == "completed").all()


def test_recorder_pickles_without_runtime_state(tmp_path):
    rec = recorder(tmp_path)
    rec.setup()
    rec.on_trial_result(0, [], FakeTrial("t1", TRIPLET), result(1, 0.2))
    clone = pickle.loads(pickle.dumps(rec))
    assert clone._buffers["epochs"] == [] and clone._tables == {}


# -- MLflow -------------------------------------------------------------------------------------------------


def mirror(tmp_path, uri: str, **changes: Any) -> MlflowMirror:
    settings = dict(tracking_uri=uri, experiment="exp", study_uid="u1", study_name="s",
                    progress_file=tmp_path / "mlflow_mirror.json", metrics=METRICS, params={"train.lr": 0.001},
                    head_keys=["phase", "config_id", "loss", "miner", *COLUMNS, "train.seed", "train.fold"],
                    artifact_location=(tmp_path / "art").as_uri(), drain_timeout_s=30.0)
    return MlflowMirror(**{**settings, **changes})


def test_mlflow_mirrors_the_tables_in_nested_runs_and_finds_them_again(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rec = recorder(tmp_path, mlflow=mirror(tmp_path, uri))
    rec.setup()
    trials = [FakeTrial("a", TRIPLET), FakeTrial("b", SOFTMAX)]
    for trial in trials:
        rec.on_trial_start(0, [], trial)
    state = rec.get_state()
    for trial in trials:
        for epoch in (1, 2):
            rec.on_trial_result(0, [], trial, result(epoch, 0.1 * epoch))
    rec.on_trial_complete(0, [], trials[0])
    rec.on_experiment_end(trials)

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("exp")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the runs, not GenAI pages
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2 and parents[0].data.params == {"train.lr": "0.001"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    for child in children:
        history = client.get_metric_history(child.info.run_id, "recall_at_1")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2]
    a = next(r for r in children if r.data.tags["dml_study.trial_id"] == "a")
    # MLflow params carry the same names as the Parquet columns.
    assert a.data.params["triplet.margin"] == "0.1" and a.data.tags["status"] == "stopped"
    assert a.data.params["miner.triplet_margin.type_of_triplets"] == "hard" and a.data.params["train.seed"] == "0"
    # Two of three epochs: stopped early by ASHA, a normal end: FINISHED, with the reason as a tag, no error tag.
    assert a.info.status == "FINISHED" and a.data.tags["stop_reason"] == "asha" and "error" not in a.data.tags
    b = next(r for r in children if r.data.tags["dml_study.trial_id"] == "b")
    assert b.info.status == "RUNNING"  # not ended yet: the study stopped before it did
    # Runs are named so that the list reads: the loss, its miner and their sampled values, the trial id.
    assert a.info.run_name == "triplet margin=0.1 · triplet_margin type_of_triplets=hard · a"
    assert b.info.run_name == "normalized_softmax temperature=0.05 · b"
    # An ended trial's best epoch's values are metrics of their own (sortable in the runs table), and the parent
    # shows the study's best value and each loss's best, stepped by the trials ended so far.
    assert a.data.metrics["best_recall_at_1"] == pytest.approx(0.2) and "best_recall_at_1" not in b.data.metrics
    parent = client.get_run(parents[0].info.run_id)
    assert parent.data.metrics == {"best_recall_at_1": pytest.approx(0.2),
                                   "best_recall_at_1.triplet": pytest.approx(0.2)}

    # A restarted study finds b's run by its tags instead of making another, and sends only what is new.
    again = pickle.loads(pickle.dumps(rec))
    again.set_state(state)
    again.setup()
    again.on_trial_start(0, [], trials[1])
    again.on_trial_result(0, [], trials[1], result(3, 0.9))
    again.on_trial_complete(0, [], trials[1])
    again.get_state()
    again.on_experiment_end(trials)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 3
    b = next(r for r in runs if r.data.tags.get("dml_study.trial_id") == "b")
    assert len(client.get_metric_history(b.info.run_id, "recall_at_1")) == 3 and b.info.status == "FINISHED"
    # The restarted mirror knew triplet's best from the rows sent before, and counts on from there.
    parent = client.get_run(parents[0].info.run_id)
    assert parent.data.metrics["best_recall_at_1"] == pytest.approx(0.9)
    assert parent.data.metrics["best_recall_at_1.triplet"] == pytest.approx(0.2)
    assert parent.data.metrics["best_recall_at_1.normalized_softmax"] == pytest.approx(0.9)
    steps = client.get_metric_history(parents[0].info.run_id, "best_recall_at_1")
    assert sorted(m.step for m in steps) == [1, 2]


def test_mlflow_catches_up_after_an_outage_and_doubles_nothing(tmp_path, capsys, monkeypatch):
    """The tracking store unreachable for a whole run: the tables are written as usual, the run ends after its
    drain timeout with one message, and the next run of the study sends MLflow everything exactly once."""
    import socket

    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as probe:  # a port nothing listens on: every request is refused
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}"
    rec = recorder(tmp_path, mlflow=mirror(tmp_path, down, drain_timeout_s=1.0), rows=1)
    rec.setup()
    trial = FakeTrial("a", TRIPLET)
    rec.on_trial_start(0, [], trial)
    rec.get_state()
    for epoch in (1, 2, 3):
        rec.on_trial_result(0, [], trial, result(epoch, 0.1 * epoch))
    rec.on_trial_complete(0, [], trial)
    rec.on_experiment_end([trial])
    assert len(epochs_frame(tmp_path)) == 3  # the record is complete whatever MLflow does
    err = capsys.readouterr().err
    assert "has failed since" in err and "API request" in err and err.count("\n") == 1  # once, with its cause

    uri = f"sqlite:///{tmp_path}/mlflow.db"  # the study's tracking store is back (here: another one)
    for _ in range(2):  # twice: the second run finds everything sent and sends nothing again
        later = recorder(tmp_path, mlflow=mirror(tmp_path, uri))
        later.setup()
        later.on_experiment_end([])
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    child = next(r for r in runs if r.data.tags.get("dml_study.trial_id") == "a")
    assert [m.value for m in client.get_metric_history(child.info.run_id, "recall_at_1")] == \
        pytest.approx([0.1, 0.2, 0.3])
    assert child.info.status == "FINISHED" and len(runs) == 2


def test_a_part_sent_twice_reaches_mlflow_once(tmp_path):
    """A crash between sending a part and recording it as sent: the next run sends it again; MLflow keeps each
    point once (same key, step, timestamp and value)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rec = recorder(tmp_path, mlflow=mirror(tmp_path, uri), rows=1)
    rec.setup()
    trial = FakeTrial("a", TRIPLET)
    rec.on_trial_start(0, [], trial)
    rec.get_state()
    for epoch in (1, 2):
        rec.on_trial_result(0, [], trial, result(epoch, 0.1 * epoch))
    rec.on_experiment_end([])
    (tmp_path / "mlflow_mirror.json").unlink()  # as if nothing had been recorded as sent
    again = recorder(tmp_path, mlflow=mirror(tmp_path, uri))
    again.setup()
    again.on_experiment_end([])
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert len(runs) == 2  # the parent and the trial's run, found again by their tags
    child = next(r for r in runs if r.data.tags.get("dml_study.trial_id") == "a")
    assert len(client.get_metric_history(child.info.run_id, "recall_at_1")) == 2


# -- searchers ----------------------------------------------------------------------------------------------


def test_outcome_tells_early_stopped_trials_as_pruned():
    State = optuna.trial.TrialState
    assert outcome({"epoch": 4, "recall@1": 0.5}, error=False, max_epochs=4, metric="recall@1") == \
        (State.COMPLETE, 0.5)
    assert outcome({"epoch": 1, "recall@1": 0.5}, error=False, max_epochs=4, metric="recall@1") == \
        (State.PRUNED, None)
    assert outcome({"epoch": 1}, error=True, max_epochs=4, metric="recall@1") == (State.FAIL, None)
    assert outcome(None, error=False, max_epochs=4, metric="recall@1") == (State.FAIL, None)
    assert outcome({"epoch": 4, "recall@1": float("nan")}, error=False, max_epochs=4,
                   metric="recall@1")[0] is State.FAIL


def _space(**train: Any) -> Any:
    return sensitivity_space("triplet", "margin", [0.01, 0.1, 0.5], train=train) if train else \
        full_comparison_space(["triplet"], ["none"], loss_params={"triplet": {"margin": LogUniform(0.01, 0.5)}})


def test_optuna_searcher_reports_intermediate_values_and_prunes():
    searcher = OptunaSearcher(_space(), metric="recall@1", mode=Mode.MAX, max_epochs=3, algorithm=Algorithm.OPTUNA)
    config = searcher.suggest("t1")
    assert 0.01 <= config["triplet.margin"] <= 0.5
    searcher.on_trial_result("t1", {"epoch": 1, "recall@1": 0.2})
    searcher.on_trial_result("t1", {"epoch": 1, "recall@1": 0.2})  # replayed after a restore: ignored
    searcher.on_trial_complete("t1", {"epoch": 1, "recall@1": 0.2})
    searcher.suggest("t2")
    for epoch, value in ((1, 0.1), (2, 0.2), (3, 0.3)):
        searcher.on_trial_result("t2", {"epoch": epoch, "recall@1": value})
    searcher.on_trial_complete("t2", {"epoch": 3, "recall@1": 0.3})
    searcher.suggest("t3")
    searcher.on_trial_complete("t3", None, error=True)
    trials = searcher.studies["triplet"].get_trials()
    assert [t.state.name for t in trials] == ["PRUNED", "COMPLETE", "FAIL"]
    assert trials[0].intermediate_values == {1: 0.2}
    assert trials[1].value == pytest.approx(0.3) and trials[1].intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}
    assert [t.user_attrs["trial_id"] for t in trials] == ["t1", "t2", "t3"]


def test_optuna_searcher_judges_completion_by_a_sampled_epoch_count():
    """With train.epochs in the space, a trial that ran all of its own epochs is complete, not pruned."""
    searcher = OptunaSearcher(_space(epochs=Choice((2,))), metric="recall@1", mode=Mode.MAX, max_epochs=4)
    assert searcher.suggest("t1")["train.epochs"] == 2
    searcher.on_trial_complete("t1", {"epoch": 2, "recall@1": 0.5})
    assert searcher.studies["triplet"].get_trials()[0].state.name == "COMPLETE"


def test_optuna_searcher_state_round_trip(tmp_path):
    searcher = OptunaSearcher(_space(), metric="recall@1", mode=Mode.MIN, max_epochs=2, algorithm=Algorithm.RANDOM,
                              seed=3)
    searcher.suggest("t1")
    searcher.on_trial_result("t1", {"epoch": 1, "recall@1": 0.2})
    path = str(tmp_path / "s.pkl")
    searcher.save(path)
    other = OptunaSearcher(_space(), metric="recall@1", mode=Mode.MIN, max_epochs=2)
    other.restore(path)
    other.on_trial_complete("t1", {"epoch": 2, "recall@1": 0.4})
    study = other.studies["triplet"]
    told = study.get_trials()[0]
    assert told.state.name == "COMPLETE" and told.intermediate_values == {1: 0.2, 2: 0.4}
    assert study.direction.name == "MINIMIZE"


def test_grid_searcher_repeats_with_distinct_seeds():
    searcher = GridSearcher([{"loss": "a"}, {"loss": "b"}], metric="recall@1", mode=Mode.MAX, repeats=2,
                            base_seed=10)
    configs = [searcher.suggest(str(i)) for i in range(5)]
    assert configs[:4] == [{"loss": "a", "train.seed": 10}, {"loss": "b", "train.seed": 10},
                           {"loss": "a", "train.seed": 11}, {"loss": "b", "train.seed": 11}]
    assert configs[4] == GridSearcher.FINISHED


def test_optuna_searcher_covers_every_loss_first_then_learns_per_loss():
    """The first trials take each loss once; every loss has its own Optuna study whose parameters carry the
    columns' names (`miner` included), so Optuna's trials table joins with the study's tables."""
    space = full_comparison_space(["triplet", "contrastive", "normalized_softmax"], ["none", "triplet_margin"])
    searcher = OptunaSearcher(space, metric="recall@1", mode=Mode.MAX, max_epochs=1, seed=0)
    first = [searcher.suggest(str(i)) for i in range(3)]
    assert sorted(c["loss"] for c in first) == ["contrastive", "normalized_softmax", "triplet"]
    for i in range(3, 12):
        searcher.suggest(str(i))
    for i in range(12):
        searcher.on_trial_complete(str(i), {"epoch": 1, "recall@1": 0.1 * (i % 5)})
    tables = []
    for loss, study in searcher.studies.items():
        frame = study.trials_dataframe()
        assert len(frame) >= 1 and (frame["state"] == "COMPLETE").all()
        params = {c.removeprefix("params_") for c in frame.columns if c.startswith("params_")}
        assert params <= {*space_columns(space), "miner"}, params
        assert all(p.startswith((f"{loss}.", "miner")) for p in params), (loss, params)
        tables.append(frame.assign(loss=loss))
    assert sum(len(t) for t in tables) == 12
    # Joined on the Tune trial id, Optuna's values equal the configurations the searcher handed out.
    joined = pd.concat(tables).set_index("user_attrs_trial_id")
    assert set(joined.index) == {str(i) for i in range(12)}
    triplet = joined[joined["loss"] == "triplet"]
    assert triplet["params_triplet.margin"].between(0.01, 0.3).all()


def space_columns(space: Any) -> list[str]:
    from search_spaces import columns

    return list(columns(space))


def test_searcher_seeds_are_reproducible_and_per_loss():
    space = full_comparison_space(["triplet", "contrastive"], ["none"])
    runs = []
    for _ in range(2):
        searcher = OptunaSearcher(space, metric="recall@1", mode=Mode.MAX, max_epochs=1, seed=7)
        runs.append([searcher.suggest(str(i)) for i in range(6)])
    assert runs[0] == runs[1]


def test_trials_begun_after_the_last_snapshot_leave_nothing_behind_a_crash(tmp_path):
    """Trials that began after Tune's last snapshot are unknown to the restored run (it runs their places again as
    new trials): their rows never reached the tables, and MLflow never heard of them."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = recorder(tmp_path, mlflow=mirror(tmp_path, uri))
    first.setup()
    known, lost, empty = FakeTrial("k", TRIPLET), FakeTrial("lost", SOFTMAX), FakeTrial("empty", SOFTMAX)
    first.on_trial_start(0, [], known)
    first.on_trial_result(0, [], known, result(1, 0.2))
    state = first.get_state()  # the snapshot knows only trial k ...
    for trial in (lost, empty):
        first.on_trial_start(0, [], trial)
    first.on_trial_result(0, [], lost, result(1, 0.3))
    first.on_trial_result(0, [], lost, result(2, 0.4))
    first.on_trial_complete(0, [], lost)
    first.flush(wait=True)  # ... "lost" even finished afterwards, and the flush held its rows: then the crash
    first.mlflow.close("KILLED")

    second = pickle.loads(pickle.dumps(first))
    second.set_state(state)
    second.setup()
    for epoch in (2, 3):
        second.on_trial_result(0, [], known, result(epoch, 0.5))
    second.on_trial_complete(0, [], known)
    known.status = "TERMINATED"
    second.get_state()
    second.on_experiment_end([known])

    trials = pd.read_parquet(tmp_path / "results" / "trials.parquet").set_index("trial_id")
    assert list(trials.index) == ["k"] and trials.loc["k", "status"] == "completed"
    assert set(epochs_frame(tmp_path)["trial_id"]) == {"k"}

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    by_trial = {r.data.tags.get("dml_study.trial_id"): r for r in runs}
    assert set(by_trial) == {None, "k"}  # the parent and k: no run was ever made for the forgotten trials
    assert all(r.info.status != "RUNNING" for r in runs)
    assert len(client.get_metric_history(by_trial["k"].info.run_id, "recall_at_1")) == 3


# -- the reality check: searcher and recorder ---------------------------------------------------------------


def _reality_check(trials_per_loss: int = 3, final_runs: int = 2) -> Any:
    from study.searcher import RealityCheckSearcher

    space = full_comparison_space(["triplet", "contrastive", "normalized_softmax"], ["none"])
    return RealityCheckSearcher(space, metric="recall@1", mode=Mode.MAX, max_epochs=2, trials_per_loss=trials_per_loss,
                                final_runs=final_runs, base_seed=5, seed=0)


def test_reality_check_gives_every_loss_exactly_its_budget_evenly():
    searcher = _reality_check(trials_per_loss=3)
    handed = [searcher.suggest(f"s{i}") for i in range(9)]
    assert all(c["phase"] == "search" for c in handed)
    losses = [c["loss"] for c in handed]
    # Evenly while the cluster is busy: every loss once before any loss twice.
    assert [sorted(losses[i:i + 3]) for i in (0, 3, 6)] == [["contrastive", "normalized_softmax", "triplet"]] * 3
    # Every search trial is out and none has ended: nothing to hand out yet, but not finished either.
    assert searcher.suggest("wait") is None
    for i in range(9):
        searcher.on_trial_complete(f"s{i}", {"epoch": 2, "recall@1": 0.1})
    assert sum(len(s.get_trials()) for s in searcher.studies.values()) == 9
    assert all(len(s.get_trials()) == 3 for s in searcher.studies.values())


def test_a_loss_whose_search_ended_gets_its_best_configuration_rerun_with_new_seeds():
    searcher = _reality_check(trials_per_loss=2, final_runs=3)
    configs = {f"s{i}": searcher.suggest(f"s{i}") for i in range(6)}
    triplet = [tid for tid, c in configs.items() if c["loss"] == "triplet"]
    # The better triplet trial peaked at epoch 1 (its best epoch counts, not its last).
    searcher.on_trial_result(triplet[0], {"epoch": 1, "recall@1": 0.9})
    searcher.on_trial_complete(triplet[0], {"epoch": 2, "recall@1": 0.2})
    assert searcher.phase_of("triplet").value == "search"
    searcher.on_trial_complete(triplet[1], {"epoch": 2, "recall@1": 0.5})
    assert searcher.phase_of("triplet").value == "final"
    finals = [searcher.suggest(f"f{i}") for i in range(3)]  # ahead of the other losses' remaining work
    best = {k: v for k, v in configs[triplet[0]].items() if k != "phase"}
    for run, final in enumerate(finals):
        assert final["phase"] == "final" and final["final_run"] == run
        assert {k: v for k, v in final.items() if k not in ("phase", "final_run", "train.seed")} == \
            {k: v for k, v in best.items() if k != "train.seed"}
    assert [f["train.seed"] for f in finals] == [6, 7, 8]  # new seeds after the study's seed 5
    assert searcher.suggest("x") is None  # the others still search
    for tid, config in configs.items():
        if config["loss"] != "triplet":
            searcher.on_trial_complete(tid, {"epoch": 2, "recall@1": 0.3})
    rest = [searcher.suggest(f"g{i}") for i in range(6)]
    assert sorted(c["loss"] for c in rest) == ["contrastive"] * 3 + ["normalized_softmax"] * 3
    for i in range(3):  # final runs are never reported to Optuna
        searcher.on_trial_complete(f"f{i}", {"epoch": 2, "recall@1": 0.8})
    assert searcher.suggest("end") == OptunaSearcher.FINISHED
    assert all(len(s.get_trials()) == 2 for s in searcher.studies.values())


def test_a_loss_whose_every_trial_errored_gets_no_final_runs():
    searcher = _reality_check(trials_per_loss=1, final_runs=2)
    configs = {f"s{i}": searcher.suggest(f"s{i}") for i in range(3)}
    for tid, config in configs.items():
        errored = config["loss"] == "triplet"
        searcher.on_trial_complete(tid, None if errored else {"epoch": 2, "recall@1": 0.3}, error=errored)
    finals = [searcher.suggest(f"f{i}") for i in range(4)]
    assert sorted(c["loss"] for c in finals) == ["contrastive"] * 2 + ["normalized_softmax"] * 2
    assert searcher.suggest("end") == OptunaSearcher.FINISHED


def test_reality_check_searcher_state_round_trip(tmp_path):
    searcher = _reality_check(trials_per_loss=1, final_runs=2)
    configs = {f"s{i}": searcher.suggest(f"s{i}") for i in range(3)}
    searcher.on_trial_complete("s0", {"epoch": 2, "recall@1": 0.4})
    path = str(tmp_path / "s.pkl")
    searcher.save(path)
    other = _reality_check(trials_per_loss=1, final_runs=2)
    other.restore(path)
    loss = configs["s0"]["loss"]
    queued = [other.suggest("f0"), other.suggest("f1")]
    assert [c["loss"] for c in queued] == [loss, loss] and other.suggest("x") is None
    for tid in ("s1", "s2"):
        other.on_trial_complete(tid, {"epoch": 2, "recall@1": 0.1})
    assert len([other.suggest(f"g{i}") for i in range(4)]) == 4


def test_recorder_writes_fold_rows_and_one_final_row_per_loss_and_run(tmp_path):
    rec = StudyRecorder(study="s", results_dir=str(tmp_path / "results"), base=TrainConfig(epochs=2, num_folds=2),
                        param_columns=COLUMNS, metrics=METRICS, metric="recall@1", sign=1.0, stop_reason="asha",
                        cross_validate=True, flush_interval_s=1000.0, clock=Clock())
    rec.setup()
    search = FakeTrial("a", {"phase": "search", **SOFTMAX})
    final = FakeTrial("b", {"phase": "final", "final_run": 0, **SOFTMAX, "train.seed": 3})
    redo = FakeTrial("c", {"phase": "final", "final_run": 0, **SOFTMAX, "train.seed": 3})  # the same run again
    test = {"separated": {m: 0.1 for m in METRICS}, "concatenated": {m: 0.2 for m in METRICS}}
    for trial in (search, final, redo):
        rec.on_trial_start(0, [], trial)
        rec.get_state()
        for epoch in (1, 2):
            report = {**result(epoch, 0.3), "folds": [result(epoch, 0.2), result(epoch, 0.4)]}
            if trial is not search and epoch == 2:
                report |= {"test": test, "best_epochs": [2, 1]}
            rec.on_trial_result(0, [], trial, report)
        rec.on_trial_complete(0, [], trial)
    rec.on_experiment_end([])
    folds = pd.read_parquet(tmp_path / "results" / "folds.parquet")
    assert len(folds) == 3 * 2 * 2 and sorted(set(folds["train.fold"])) == [0, 1]
    assert np.allclose(folds.groupby(["trial_id", "epoch"])["recall@1"].mean(), 0.3)  # the epoch row: their mean
    final_rows = pd.read_parquet(tmp_path / "results" / "final.parquet")
    assert len(final_rows) == 1  # (loss, final run) once, whichever trial ran it
    row = final_rows.iloc[0]
    assert row["trial_id"] == "b" and row["final_run"] == 0 and row["best_epochs"] == "2,1"
    assert row["concatenated.map@r"] == 0.2 and row["separated.recall@1"] == 0.1 and row["phase"] == "final"
    trials = pd.read_parquet(tmp_path / "results" / "trials.parquet").set_index("trial_id")
    assert list(trials["phase"]) == ["search", "final", "final"]
    assert trials["config_id"].nunique() == 1  # a final run is the same configuration


def test_a_trial_whose_record_is_closed_is_stopped_at_its_first_result(tmp_path):
    """After a restore, Tune resumes a trial that ended after its last snapshot; the stopper ends it at once, and
    after a pickle round trip (Tune pickles the tuner) it still consults the same recorder."""
    from study.recorder import ClosedTrialStopper

    rec = recorder(tmp_path)
    stopper = ClosedTrialStopper(rec)
    rec.setup()
    done, running = FakeTrial("done", TRIPLET), FakeTrial("running", SOFTMAX)
    for trial in (done, running):
        rec.on_trial_start(0, [], trial)
    rec.on_trial_result(0, [], done, result(1, 0.2))
    rec.on_trial_complete(0, [], done)
    assert stopper("done", result(2, 0.3)) and not stopper("running", result(1, 0.1)) and not stopper.stop_all()
    rec2, stopper2 = pickle.loads(pickle.dumps((rec, stopper)))
    assert stopper2.recorder is rec2


def test_a_closed_trial_run_on_after_a_restore_adds_no_rows(tmp_path):
    """kill -9 after a trial's trials row reached disk but before a snapshot saw it end: the restored study resumes
    it from the snapshot's checkpoint and it reports epochs past its record; the tables keep it as it ended."""
    first = recorder(tmp_path)
    first.setup()
    trial = FakeTrial("t", TRIPLET)
    first.on_trial_start(0, [], trial)
    first.on_trial_result(0, [], trial, result(1, 0.2))
    state = first.get_state()  # the snapshot: t running at epoch 1
    first.on_trial_result(0, [], trial, result(2, 0.3))
    first.on_trial_complete(0, [], trial)  # stopped by ASHA at epoch 2 ...
    first.flush(wait=True)  # ... and recorded: then the crash

    second = pickle.loads(pickle.dumps(first))
    second.set_state(state)
    second.setup()
    for epoch in (2, 3, 4):  # resumed from its epoch-1 checkpoint, it runs on
        second.on_trial_result(0, [], trial, result(epoch, 0.9))
    second.on_trial_complete(0, [], trial)
    second.get_state()
    second.on_experiment_end([trial])
    epochs = epochs_frame(tmp_path)
    trials = pd.read_parquet(tmp_path / "results" / "trials.parquet")
    assert sorted(epochs["epoch"]) == [1, 2] and list(trials["epochs"]) == [2]
    assert list(trials["best_recall@1"]) == [0.3]


def test_fold_rows_are_written_once_even_when_a_crash_split_them_from_their_epoch(tmp_path):
    """The epochs part of a flush reached disk, its folds part did not: the restored study writes the fold rows
    (once), although their epoch rows are on disk already."""
    def make() -> StudyRecorder:
        return StudyRecorder(study="s", results_dir=str(tmp_path / "results"), base=TrainConfig(epochs=2,
                             num_folds=2), param_columns=COLUMNS, metrics=METRICS, metric="recall@1", sign=1.0,
                             stop_reason="asha", cross_validate=True, flush_interval_s=1000.0, clock=Clock())

    first = make()
    first.setup()
    trial = FakeTrial("a", {"phase": "search", **SOFTMAX})
    first.on_trial_start(0, [], trial)
    first.get_state()
    report = {**result(1, 0.3), "folds": [result(1, 0.2), result(1, 0.4)]}
    first.on_trial_result(0, [], trial, report)
    state = first.get_state()  # the snapshot holds epoch 1 and its fold rows, unwritten
    first._tables["epochs"].append(first._buffers["epochs"])  # noqa: SLF001 - the flush got this far ...
    # ... and died before the folds part.

    second = pickle.loads(pickle.dumps(first))
    second.set_state(state)
    second.setup()
    second.on_trial_result(0, [], trial, report)  # re-reported after the resume
    second.get_state()
    second.flush(wait=True)
    folds = pd.read_parquet(tmp_path / "results" / "folds.parquet")
    assert sorted(folds["train.fold"]) == [0, 1] and len(epochs_frame(tmp_path)) == 1


def test_progress_lines_say_how_a_trial_ended_and_its_best_value_once():
    import io

    from study.progress import ProgressPrinter

    out = io.StringIO()
    printer = ProgressPrinter(total=3, metric="recall@1", sign=1.0, max_epochs=3, stream=out)
    full, stopped, failed = FakeTrial("full", TRIPLET), FakeTrial("stop", SOFTMAX), FakeTrial("bad", SOFTMAX)
    for epoch, value in ((1, 0.2), (2, 0.5), (3, 0.4)):
        printer.on_trial_result(0, [], full, {"epoch": epoch, "recall@1": value})
    printer.on_trial_complete(0, [], full)
    printer.on_trial_result(0, [], stopped, {"epoch": 1, "recall@1": 0.1})
    printer.on_trial_complete(0, [], stopped)
    printer.on_trial_error(0, [], failed)
    lines = out.getvalue().splitlines()
    assert "completed 3 epochs" in lines[0] and "best recall@1 0.5000 (epoch 2)" in lines[0]
    assert "0.4000" not in lines[0]  # one value per trial: its best epoch's, labelled
    assert "stopped at 1/3 epochs" in lines[1] and "(study best 0.5000)" in lines[1]
    assert "error at epoch 1" in lines[2] and "best recall@1 -" in lines[2]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_status_is_redrawn_on_a_terminal_and_appended_sparingly_in_a_log():
    from study.progress import ProgressPrinter

    clock = Clock()
    log = io.StringIO()
    printer = ProgressPrinter(total=4, metric="recall@1", sign=1.0, max_epochs=8, stream=log, every_s=30.0,
                              clock=clock)
    printer.setup()
    running, done = FakeTrial("r1", TRIPLET), FakeTrial("d1", SOFTMAX)
    running.status, done.status = "RUNNING", "TERMINATED"
    printer.on_trial_result(0, [], running, {"epoch": 3, "recall@1": 0.3})
    printer.on_trial_result(0, [], done, {"epoch": 2, "recall@1": 0.6})
    printer.on_trial_complete(0, [], done)
    clock.now = 40.0
    for step in range(50):  # many loop steps, one status line
        printer.on_step_end(step, [running, done])
    clock.now = 80.0
    printer.on_step_end(50, [running, done])
    status = [line for line in log.getvalue().splitlines() if line.startswith("status")]
    assert len(status) == 2 and "\r" not in log.getvalue()
    assert "1/4 done (1 stopped)" in status[0] and "1 running: triplet 3/8" in status[0]
    assert "best recall@1 0.6000" in status[0] and "elapsed 40s" in status[0] and "~2m00s left" in status[0]
    assert log.getvalue().splitlines()[0].startswith("study of 4 trials started")

    terminal = _Terminal()
    printer = ProgressPrinter(total=4, metric="recall@1", sign=1.0, max_epochs=8, stream=terminal, clock=clock)
    printer.setup()
    printer.on_trial_result(0, [], running, {"epoch": 3, "recall@1": 0.3})
    clock.now = 82.0
    printer.on_step_end(0, [running])
    printer.on_trial_complete(0, [], running)  # a finished trial's line replaces the status line, then it returns
    clock.now = 84.0
    printer.on_step_end(1, [])
    printer.on_experiment_end([])
    text = terminal.getvalue()
    assert text.count("\r\x1b[K") == 4 and text.endswith("\r\x1b[K")  # drawn, cleared, drawn, cleared at the end
    assert "stopped at 3/8 epochs" in text.split("\r\x1b[K")[2]
