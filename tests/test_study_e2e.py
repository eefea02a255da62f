"""Tiny real studies on the session's Ray cluster: ASHA, Parquet = MLflow, errors, interruption and resume."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from ray.tune import Callback

from study.cli import main as cli_main
from study.config import parse_config
from study.rerun import rerun_trial
from study.runner import run_study

pytestmark = [pytest.mark.timeout(300), pytest.mark.e2e]

TINY = {
    "dataset": {"name": "glyphs", "options": {"samples_per_face": 1}},
    "model": {"trunk": "small_cnn", "embedding_dim": 16},
    "train": {"epochs": 3, "batch_size": 32, "m_per_class": 4, "batches_per_epoch": 3, "eval_batch_size": 1024},
    "search": {"algorithm": "optuna", "num_samples": 6, "seed": 0,
               "losses": ["contrastive", "normalized_softmax", "multi_similarity"]},
    "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
    "resources": {"cpus_per_trial": 1},
    "results": {"flush_interval_s": 0.5},
}


def tiny(tmp_path: Path, name: str, **changes: Any) -> Any:
    doc = {**TINY, "name": name, "storage": str(tmp_path)}
    for key, value in changes.items():
        doc[key] = {**doc.get(key, {}), **value}
    return parse_config(doc)


def tables(study_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    results = Path(study_dir, "results")
    return pd.read_parquet(results / "epochs.parquet"), pd.read_parquet(results / "trials.parquet")


def mlflow_runs(uri: str) -> tuple[Any, pd.DataFrame]:
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri), mlflow.search_runs(search_all_experiments=True)


def searcher_state(study_dir: str) -> dict[str, Any]:
    """The searcher's state as Tune saved it with the experiment (our OptunaSearcher's get_state())."""
    from ray import cloudpickle

    (path,) = Path(study_dir, "tune").glob("searcher-state-*.pkl")
    with open(path, "rb") as f:
        return cloudpickle.load(f)


def metric_points(client: Any, runs: pd.DataFrame, key: str = "recall_at_1") -> int:
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    return sum(len(client.get_metric_history(run_id, key)) for run_id in children["run_id"])


def test_asha_study_parquet_equals_mlflow(ray_cluster, tmp_path, capsys):
    run = run_study(tiny(tmp_path, "asha"), verbose=0)
    epochs, trials = tables(run.study_dir)
    assert len(trials) == 6
    assert set(trials["status"]) <= {"completed", "stopped"}
    assert (trials["status"] == "stopped").sum() >= 1, "ASHA stopped nothing"
    assert len(epochs) == trials["epochs"].sum()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    stopped = trials[trials.status == "stopped"]
    assert (stopped["epochs"] < 3).all() and (stopped["stop_reason"] == "asha").all()
    assert epochs["recall@1"].between(0, 1).all()
    assert epochs["node_id"].notna().all() and epochs["node_id"].nunique() == 1  # one local node
    # Finished trials' checkpoints are deleted: storage grows with the running trials, not the study.
    assert not list(Path(run.study_dir, "tune").rglob("checkpoint_*"))
    # Conditional columns: a loss's hyperparameters are null for the others.
    softmax = epochs[epochs.loss == "normalized_softmax"]
    if len(softmax):
        assert softmax["normalized_softmax.temperature"].notna().all()
        assert softmax.filter(like="multi_similarity.").isna().all().all()

    # Optuna was told what ASHA did: each stopped trial PRUNED with every epoch's value as an intermediate value
    # (not COMPLETE with its last low-budget value, as Ray's OptunaSearch would), each full run COMPLETE.
    # One Optuna study per loss, its trials joined to ours by the Tune trial id, its parameters named as our
    # columns; and the study that chooses the loss told the same.
    state = searcher_state(run.study_dir)
    told = sorted((t.user_attrs["trial_id"], loss, t.state.name,
                   tuple(v for _, v in sorted(t.intermediate_values.items())),
                   t.value if t.state.name == "COMPLETE" else None)
                  for loss, study in state["studies"].items() for t in study.get_trials())
    expected = []
    for trial in trials.to_dict("records"):
        values = tuple(epochs[epochs.trial_id == trial["trial_id"]].sort_values("epoch")["recall@1"])
        complete = trial["status"] == "completed"
        expected.append((trial["trial_id"], trial["loss"], "COMPLETE" if complete else "PRUNED", values,
                         values[-1] if complete else None))
    assert told == sorted(expected)
    assert sum(told_state == "PRUNED" for _, _, told_state, _, _ in told) == (trials["status"] == "stopped").sum() >= 1
    chosen = {t.user_attrs["trial_id"]: t.params.get("loss") for t in state["chooser"].get_trials()}
    assert chosen == dict(zip(trials["trial_id"], trials["loss"]))
    for loss, study in state["studies"].items():
        params = {name for t in study.get_trials() for name in t.params}
        assert params <= set(trials.columns), params  # Optuna's names are the Parquet columns

    client, runs = mlflow_runs(run.tracking_uri)
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(runs) == 7 and len(children) == 6
    assert children["tags.mlflow.parentRunId"].nunique() == 1
    assert metric_points(client, runs) == len(epochs)
    assert set(children["tags.status"]) == set(trials["status"])

    # rerun: one trial again without Ray gives the recorded metrics on the CPU.
    trial_id = trials.sort_values("epochs").iloc[-1]["trial_id"]
    again = rerun_trial(run.study_dir, trial_id)
    assert len(again.rerun) == len(again.recorded)
    assert again.max_abs_diff() < 1e-6

    # show: trial counts by status and the best trial of each loss, from the tables.
    capsys.readouterr()
    assert cli_main(["show", run.study_dir]) == 0
    shown = capsys.readouterr().out
    counts = ", ".join(f"{k} {v}" for k, v in sorted(trials["status"].value_counts().items()))
    assert f"study asha: 6 finished trials ({counts}), 0 unfinished" in shown
    for loss, group in trials.groupby("loss"):
        best = group.loc[group["best_recall@1"].idxmax()]
        assert f"trial {best['trial_id']}" in shown and f"{best['best_recall@1']:.4f}" in shown

    # report: `dml-study report` on the real study writes report.md with its numbers and valid PNGs.
    out = tmp_path / "report"
    assert cli_main(["report", run.study_dir, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    best = trials.loc[trials["best_recall@1"].idxmax()]
    assert best["trial_id"] in text and f"{best['best_recall@1']:.4f}" in text
    for loss, group in trials.groupby("loss"):  # the best-per-loss table holds every loss's best trial
        best_of_loss = group.loc[group["best_recall@1"].idxmax()]
        assert best_of_loss["trial_id"] in text and f"{best_of_loss['best_recall@1']:.4f}" in text
    # Bad report input: one line on stderr, exit code 2, nothing written.
    capsys.readouterr()
    assert cli_main(["report", str(tmp_path / "nowhere")]) == 2
    assert cli_main(["report", run.study_dir, "--metric", "recall@3", "--out", str(tmp_path / "r2")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "nowhere" in errors[0] and "recall@3" in errors[1], errors
    assert not (tmp_path / "r2").exists()
    pngs = sorted(out.rglob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    for png in pngs:
        assert png.name in text  # embedded in the markdown


def test_interrupted_study_resumes_without_loss_or_doubles(ray_cluster, tmp_path, capsys):
    """The driver crashes (a callback raises) after two trials; `resume` finishes the study."""
    doc = {**TINY, "name": "resume", "storage": str(tmp_path), "scheduler": {"kind": "fifo"},
           "search": {**TINY["search"], "num_samples": 5}}
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": f"{here.parent}{os.pathsep}{here}"}
    crashed = subprocess.run([sys.executable, str(here / "crash_study.py"), json.dumps(doc), "2",
                              str(tmp_path / "marker")], capture_output=True, text=True, env=env, timeout=240)
    assert crashed.returncode != 0 and "simulated driver crash" in crashed.stderr, crashed.stderr[-2000:]
    study_dir = str(tmp_path / "resume")
    # Rows reach the tables once a snapshot knows their trial: a crash may come before any did.
    if Path(study_dir, "results", "trials.parquet").exists():
        epochs_before, trials_before = tables(study_dir)
    else:
        epochs_before, trials_before = pd.DataFrame(columns=["trial_id", "epoch", "recall@1"]), pd.DataFrame()
    assert len(trials_before) < 5

    capsys.readouterr()
    assert cli_main(["resume", study_dir, "--quiet"]) == 0  # the command a user runs
    assert f"results: {study_dir}/results/epochs.parquet" in capsys.readouterr().out
    epochs, trials = tables(study_dir)
    assert trials["trial_id"].is_unique
    # The 5 trials the study asked for completed, and nothing else is in the tables: a trial that began after
    # Tune's last snapshot before the crash is unknown to the restored run (which ran its place again), and its
    # rows never reached the tables.
    assert len(trials) == 5 and (trials["status"] == "completed").all()
    assert set(epochs["trial_id"]) == set(trials["trial_id"])
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert len(epochs) == 5 * 3
    # Rows written before the crash are still there, unchanged.
    merged = epochs_before.merge(epochs, on=["trial_id", "epoch"], suffixes=("_a", "_b"))
    assert len(merged) == len(epochs_before)
    assert (merged["recall@1_a"] == merged["recall@1_b"]).all()

    client, runs = mlflow_runs(f"sqlite:///{study_dir}/mlflow.db")
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(runs) == len(trials) + 1 and len(children) == len(trials)
    assert set(children["tags.dml_study.trial_id"]) == set(trials["trial_id"])
    assert (runs["status"] != "RUNNING").all()
    assert metric_points(client, runs) == len(epochs)


def test_erroring_trials_are_recorded_and_the_study_goes_on(ray_cluster, tmp_path):
    """A diverging trial (non-finite loss) and a raising one (a trunk too deep for 24 px input) are errors with
    their messages in both sinks; the healthy trial completes."""
    config = tiny(tmp_path, "errors", scheduler={"kind": "fifo"},
                  search={"algorithm": "grid", "num_samples": 1, "losses": ["contrastive"], "miners": ["none"],
                          "space": {"contrastive": {"pos_margin": 0.0, "neg_margin": 1.0},
                                    "train": {"optimizer": "sgd", "lr": {"grid": [1.0e-2, 1.0e+30]}},
                                    "model": {"trunk": {"grid": ["small_cnn", "inception_v3"]}}}})
    run = run_study(config)
    epochs, trials = tables(run.study_dir)
    assert len(trials) == 4
    status = {(r["model.trunk"], r["train.lr"]): r for r in trials.to_dict("records")}
    assert status[("small_cnn", 1.0e-2)]["status"] == "completed"
    diverged = status[("small_cnn", 1.0e30)]
    assert diverged["status"] == "error" and "NonFiniteLossError" in diverged["error"]
    for lr in (1.0e-2, 1.0e30):
        raised = status[("inception_v3", lr)]
        assert raised["status"] == "error" and "RuntimeError" in raised["error"], raised["error"]
        assert raised["epochs"] == 0
    assert set(epochs["trial_id"]) <= set(trials["trial_id"])

    _, runs = mlflow_runs(run.tracking_uri)
    failed = runs[runs["tags.status"] == "error"]
    assert len(failed) == 3 and (failed["status"] == "FAILED").all()
    assert failed["tags.error"].str.contains("NonFiniteLossError").sum() == 1
    assert set(failed["tags.error"]) == set(trials["error"].dropna())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def mlflow_server_process(tmp_path):
    """(url, stop, start) of an MLflow server that a test can stop and start again on the same port and store."""
    port = _free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
               "--default-artifact-root", (tmp_path / "artifacts").as_uri(), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    url = f"http://127.0.0.1:{port}"
    process: dict[str, subprocess.Popen[bytes]] = {}

    def start() -> None:
        process["server"] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                             start_new_session=True)
        _wait_for(lambda: _healthy(url), 60, "the mlflow server")

    def stop() -> None:
        os.killpg(process["server"].pid, 9)
        process["server"].wait(timeout=30)

    start()
    yield url, lambda: process["server"].pid, start
    try:
        stop()
    except ProcessLookupError:
        pass


@pytest.fixture()
def mlflow_server(mlflow_server_process):
    """The URL of an MLflow server for the test (stopped after it)."""
    url, _, _ = mlflow_server_process
    return url


def _healthy(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/health", timeout=1)
        return True
    except OSError:
        return False


def test_study_tracks_to_an_mlflow_server(ray_cluster, tmp_path, mlflow_server):
    config = tiny(tmp_path, "server", tracking={"uri": mlflow_server}, scheduler={"kind": "fifo"},
                  search={"num_samples": 2, "algorithm": "random"})
    run = run_study(config, verbose=0)
    epochs, _ = tables(run.study_dir)
    assert not Path(run.study_dir, "mlflow.db").exists()
    client, runs = mlflow_runs(mlflow_server)
    assert len(runs) == 3
    assert metric_points(client, runs) == len(epochs) == 6


def test_study_on_a_two_node_cluster(tmp_path):
    """`ray.address` joins an existing cluster; with one CPU per node, two trials at once means both nodes work."""
    doc = {**TINY, "name": "nodes", "storage": str(tmp_path), "scheduler": {"kind": "fifo"},
           "search": {**TINY["search"], "algorithm": "random", "num_samples": 2}}
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": f"{here.parent}{os.pathsep}{here}"}
    result = subprocess.run([sys.executable, str(here / "multinode_study.py"), json.dumps(doc)],
                            capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    epochs, trials = tables(result.stdout.strip().splitlines()[-1])
    assert len(trials) == 2 and (trials["status"] == "completed").all()
    # One CPU per node and one per trial: the two trials ran on the two nodes, each trial on one node only.
    nodes = epochs.groupby("trial_id")["node_id"].agg(["nunique", "first"])
    assert (nodes["nunique"] == 1).all() and nodes["first"].nunique() == 2, nodes


def test_study_on_uri_storage_resumes_as_a_no_op_when_finished(ray_cluster, tmp_path, capsys):
    """Storage given as a URI goes through pyarrow's filesystems (as s3:// or gs:// would); MLflow then needs
    tracking.uri. Running the finished study again restores it and adds nothing."""
    storage = (tmp_path / "bucket").as_uri()
    config = tiny(tmp_path, "remote", scheduler={"kind": "fifo"}, search={"num_samples": 2, "algorithm": "random"},
                  tracking={"uri": f"sqlite:///{tmp_path}/tracking.db"})
    config = dataclasses.replace(config, storage=storage)
    run = run_study(config, progress=False)
    assert run.study_dir == f"{storage}/remote"
    local_dir = tmp_path / "bucket" / "remote"
    epochs, trials = tables(str(local_dir))
    assert len(trials) == 2 and len(epochs) == 6
    assert (local_dir / "config.yaml").is_file() and (local_dir / "study.json").is_file()

    assert not run.already_complete
    again = run_study(config, progress=False)
    assert again.restored and again.already_complete  # the command line says so before the summary
    epochs_after, trials_after = tables(str(local_dir))
    assert len(epochs_after) == 6 and len(trials_after) == 2
    client, runs = mlflow_runs(f"sqlite:///{tmp_path}/tracking.db")
    assert len(runs) == 3 and metric_points(client, runs) == 6

    # Analysis reads the study where it lives: results, `show`, `report` and `rerun` take the URI.
    import results

    assert results.load_trials(run.study_dir)["trial_id"].tolist() == \
        results.load_trials(local_dir)["trial_id"].tolist()
    capsys.readouterr()
    assert cli_main(["show", run.study_dir]) == 0
    assert "study remote: 2 finished trials (completed 2), 0 unfinished" in capsys.readouterr().out
    assert cli_main(["report", run.study_dir, "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").is_file()
    again = rerun_trial(run.study_dir, trials["trial_id"].iloc[0])
    assert len(again.rerun) == 3 and again.max_abs_diff() < 1e-6


# -- the reality check ----------------------------------------------------------------------------------------

REALITY_CHECK = {
    **TINY,
    "train": {**TINY["train"], "epochs": 2, "batches_per_epoch": 2},
    "search": {"algorithm": "optuna", "seed": 0, "metric": "map@r", "losses": ["contrastive", "normalized_softmax"]},
    "protocol": {"kind": "reality_check", "folds": 2, "trials_per_loss": 3, "final_runs": 2},
}


def _check_reality_check(study_dir: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The protocol's invariants: every loss exactly its search budget and final runs, each row once."""
    epochs, trials = tables(study_dir)
    folds = pd.read_parquet(Path(study_dir, "results", "folds.parquet"))
    final = pd.read_parquet(Path(study_dir, "results", "final.parquet"))
    assert trials["trial_id"].is_unique
    counted = trials
    searched = counted[counted["phase"] == "search"].groupby("loss").size()
    assert searched.to_dict() == {"contrastive": 3, "normalized_softmax": 3}
    assert sorted(zip(final["loss"], final["final_run"])) == [("contrastive", 0), ("contrastive", 1),
                                                              ("normalized_softmax", 0), ("normalized_softmax", 1)]
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert not folds.duplicated(["trial_id", "epoch", "train.fold"]).any()
    # Each epoch row has its two fold rows, and is their mean.
    assert len(folds) == 2 * len(epochs) and set(folds["train.fold"]) == {0, 1}
    mean = folds.groupby(["trial_id", "epoch"])["map@r"].mean()
    assert np.allclose(mean.loc[list(zip(epochs["trial_id"], epochs["epoch"]))].to_numpy(), epochs["map@r"])
    # A loss's final runs rerun its best search configuration (by the best epoch's fold mean) with new seeds.
    search = counted[counted["phase"] == "search"]
    for loss, runs in final.groupby("loss"):
        best = search[search["loss"] == loss].sort_values("best_map@r", ascending=False).iloc[0]
        assert set(runs["config_id"]) == {best["config_id"]}
        assert best["train.seed"] not in set(runs["train.seed"]) and runs["train.seed"].is_unique
    return trials, final, folds


def test_reality_check_gives_each_loss_its_budget_then_final_runs(ray_cluster, tmp_path, capsys):
    doc = {**REALITY_CHECK, "name": "rc", "storage": str(tmp_path)}
    run = run_study(parse_config(doc), progress=False)
    trials, final, folds = _check_reality_check(run.study_dir)
    # Final runs train their full budget (ASHA never stops them) and never reach Optuna.
    assert (trials[trials["phase"] == "final"]["status"] == "completed").all()
    studies = searcher_state(run.study_dir)["studies"]
    assert {loss: len(study.get_trials()) for loss, study in studies.items()} == \
        {"contrastive": 3, "normalized_softmax": 3}
    assert final[[c for c in final.columns if c.startswith(("concatenated.", "separated."))]].notna().all().all()
    # The test classes are scored only by final runs; search trials see validation folds only.
    assert set(folds["phase"]) == {"search", "final"}

    capsys.readouterr()
    assert cli_main(["show", run.study_dir]) == 0
    shown = capsys.readouterr().out
    assert "reality check: 2 folds, 3 search trials and 2 final runs per loss" in shown
    assert "contrastive         done" in shown and "normalized_softmax  done" in shown
    out = tmp_path / "report"
    assert cli_main(["report", run.study_dir, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "## Reality check: the test classes" in text and (out / "reality_check.png").is_file()
    import results

    table = results.reality_check_table(run.study_dir)
    assert list(table["n"]) == [2, 2]
    for row in table.to_dict("records"):
        assert f"{row['concatenated.map@r']:.4f}" in text


def test_reality_check_resumes_after_a_kill_in_the_final_phase(ray_cluster, tmp_path, capsys):
    """kill -9 of the driver while a final run trains; `resume` finishes with no run lost or counted twice."""
    doc = {**REALITY_CHECK, "name": "killed", "storage": str(tmp_path)}
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": f"{here.parent}{os.pathsep}{here}"}
    killed = subprocess.Popen([sys.executable, str(here / "kill_study.py"), json.dumps(doc), str(tmp_path / "marker")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        _, stderr = killed.communicate(timeout=240)
    finally:
        try:  # the killed driver's own Ray processes: nothing shut them down
            os.killpg(killed.pid, 9)
        except ProcessLookupError:
            pass
    assert killed.returncode == -9, stderr[-2000:]
    study_dir = str(tmp_path / "killed")
    capsys.readouterr()
    assert cli_main(["resume", study_dir, "--quiet"]) == 0
    _check_reality_check(study_dir)


# -- faults: an interrupt, damaged or missing files, a tracking server that goes away -------------------------


def _cli_process(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": str(here.parent)}
    return subprocess.Popen([sys.executable, "-m", "study.cli", *args], env=env, cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_ctrl_c_then_resume_finishes_every_trial(ray_cluster, tmp_path, capsys):
    """SIGINT while trials run and hold checkpoints: the resumed study continues them from those checkpoints
    (Tune's final snapshot names them; they must survive the end of the interrupted run)."""
    doc = {**TINY, "name": "interrupted", "storage": str(tmp_path), "scheduler": {"kind": "fifo"},
           "train": {**TINY["train"], "epochs": 6}, "search": {**TINY["search"], "num_samples": 4},
           "ray": {"num_cpus": 2}}
    config = tmp_path / "study.yaml"
    config.write_text(json.dumps(doc))  # JSON is YAML
    study_dir = tmp_path / "interrupted"
    process = _cli_process(["run", str(config), "--quiet"], tmp_path)
    try:
        _wait_for(lambda: len(list((study_dir / "tune").glob("*/checkpoint_000001"))) >= 2, 180,
                  "two trials with two checkpoints")
        os.killpg(process.pid, 2)  # Ctrl-C reaches the whole foreground group
        _, stderr = process.communicate(timeout=120)
    finally:
        try:
            os.killpg(process.pid, 9)
        except ProcessLookupError:
            pass
    assert process.returncode == 130, stderr[-2000:]
    assert "dml-study resume" in stderr
    assert cli_main(["resume", str(study_dir), "--quiet"]) == 0
    epochs, trials = tables(str(study_dir))
    assert len(trials) == 4 and (trials["status"] == "completed").all(), trials[["trial_id", "status", "error"]]
    assert len(epochs) == 4 * 6 and not epochs.duplicated(["trial_id", "epoch"]).any()


def test_resume_refuses_a_damaged_part_or_a_missing_study_json(ray_cluster, tmp_path, capsys):
    config = tiny(tmp_path, "damaged", scheduler={"kind": "fifo"}, search={"num_samples": 2, "algorithm": "random"})
    run = run_study(config, progress=False)
    study_dir = Path(run.study_dir)
    part = sorted((study_dir / "results" / "epochs.parquet").glob("part-*.parquet"))[0]
    intact = part.read_bytes()
    part.write_bytes(intact[: len(intact) // 2])  # truncated by something outside the study
    capsys.readouterr()
    assert cli_main(["resume", str(study_dir)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and part.name in error and "move it out" in error, error
    part.write_bytes(intact)

    (study_dir / "study.json").unlink()
    before = sorted(p.name for p in study_dir.rglob("*") if p.is_file())
    for command in (["resume", str(study_dir)], ["run", str(tmp_path / "study.yaml")]):
        (tmp_path / "study.yaml").write_text(json.dumps({**TINY, "name": "damaged", "storage": str(tmp_path)}))
        assert cli_main(command) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "study.json" in error and "is missing" in error, error
    assert sorted(p.name for p in study_dir.rglob("*") if p.is_file()) == before  # no second study started


def test_show_works_from_the_first_second(ray_cluster, tmp_path, capsys):
    """`show` on a study that has written nothing but its config and study.json (before its first flush)."""
    doc = {**TINY, "name": "young", "storage": str(tmp_path)}
    config = tmp_path / "study.yaml"
    config.write_text(json.dumps(doc))
    process = _cli_process(["run", str(config), "--quiet"], tmp_path)
    try:
        _wait_for(lambda: (tmp_path / "young" / "study.json").exists(), 120, "study.json")
        capsys.readouterr()
        assert cli_main(["show", str(tmp_path / "young")]) == 0
        assert "study young: 0 finished trials (none)" in capsys.readouterr().out
    finally:
        os.killpg(process.pid, 9)
        process.communicate(timeout=60)


class _KillAtFirstResult(Callback):
    """SIGKILLs a process group at the first result (picklable: Tune pickles its callbacks)."""

    def __init__(self, pgid: int) -> None:
        self.pgid, self.done = pgid, False

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        if not self.done:
            self.done = True
            os.killpg(self.pgid, 9)


def test_a_tracking_server_that_goes_away_costs_the_study_nothing(ray_cluster, tmp_path, mlflow_server_process):
    """The MLflow server dies mid-study: the study completes with complete tables and one message; when the
    server is back, `resume` of the finished study sends MLflow every row it lacks, once, and ends every run."""
    url, pgid, start = mlflow_server_process
    config = tiny(tmp_path, "outage", tracking={"uri": url, "drain_timeout_s": 3}, scheduler={"kind": "fifo"},
                  search={"num_samples": 4, "algorithm": "random"}, train={"epochs": 3})
    run = run_study(config, callbacks=[_KillAtFirstResult(pgid())], progress=False)
    epochs, trials = tables(run.study_dir)
    assert run.complete and len(trials) == 4 and len(epochs) == 12 and (trials["status"] == "completed").all()
    assert not _healthy(url)
    start()
    # The study's drain is 3 s: on a loaded machine one resume may not send everything in it, and then says so;
    # the next resume sends the rest (never a point twice).
    for _ in range(3):
        assert cli_main(["resume", run.study_dir, "--quiet"]) == 0
        client, runs = mlflow_runs(url)
        children = runs[runs["tags.mlflow.parentRunId"].notna()]
        if len(children) == 4 and (runs["status"] == "FINISHED").all() and metric_points(client, runs) == len(epochs):
            break
    assert len(children) == 4 and (runs["status"] == "FINISHED").all()
    assert metric_points(client, runs) == len(epochs)


def test_fractional_gpus_pack_two_trials_on_one_gpu(tmp_path):
    """`gpus_per_trial: 0.5` on a node with one GPU: Ray gives every trial GPU 0 and runs two at a time, never more
    (a CPU machine declares the GPU with `ray.num_gpus`; torch finds no CUDA there, so the trials train on the
    CPU: this is the Ray side of packing; benchmarks/bench_gpu.py measures the CUDA side)."""
    doc = {**TINY, "name": "packed", "storage": str(tmp_path), "scheduler": {"kind": "fifo"},
           "search": {**TINY["search"], "algorithm": "random", "num_samples": 4},
           "resources": {"cpus_per_trial": 0.5, "gpus_per_trial": 0.5},
           "ray": {"num_cpus": 2, "num_gpus": 1}, "tracking": {"enabled": False}}
    config = tmp_path / "packed.yaml"
    config.write_text(json.dumps(doc))  # JSON is YAML
    command = Path(sys.executable).parent / "dml-study"
    result = subprocess.run([str(command), "run", str(config)], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    epochs, trials = tables(str(tmp_path / "packed"))
    assert len(trials) == 4 and (trials["status"] == "completed").all()
    assert (epochs["gpu_ids"] == "0").all(), epochs["gpu_ids"].unique()
    # Two ran at once: some two trials' spans (first epoch's start to last report) overlap. Tune's timestamps are
    # whole seconds, so spans are taken a second wide at each end: "no three at once" is Ray's to keep, and
    # cannot be told apart at this resolution.
    spans = epochs.groupby("trial_id").agg(first=("timestamp", "min"), last=("timestamp", "max"))
    starts, ends = spans["first"].to_numpy() - 1, spans["last"].to_numpy() + 1
    overlapping = [(i, j) for i in range(4) for j in range(i + 1, 4) if starts[i] < ends[j] and starts[j] < ends[i]]
    assert overlapping, spans
