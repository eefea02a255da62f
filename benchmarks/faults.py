"""The fault suite: real studies hit by real faults at random moments, then resumed; a checker holds them to the
exactly-once invariants and the tally says what was lost or doubled (the goal: nothing).

Each experiment runs a small study (4 losses, ASHA, 2 CPUs) with `dml-study run` in a process group of its own,
injects its fault, runs `dml-study resume` until the study completes (faults may hit the resumes too), and checks:

- Tune's state (ExperimentAnalysis over STUDY_DIR/tune): every trial it knows ended, the same ids as trials.parquet;
- trials.parquet: every trial once, as many as the study asks for; its `epochs` equal to the trial's rows in
  epochs.parquet, which are epochs 1..E, each once; no epoch row without a trials row;
- MLflow (the study's sqlite store, or the server of the outage experiment): one parent run, one run per trial,
  each with exactly its epochs' points (recall_at_1), no run left RUNNING.

Experiments (`--experiments`, default all): kill9 (SIGKILL of the driver at a random moment), sigint (Ctrl-C at a
random moment), flush (SIGKILL while a part is being written: the recorder pauses there when
DML_STUDY_FAULT_PAUSE_IN_FLUSH is set), twice (two kills in a row, the second early in the resume), worker
(SIGKILL of a trial's worker process; the study retries trials), node (the study on a two-node cluster,
`ray.cluster_utils.Cluster`, loses its second node at a random moment, which comes back later), mlflow (the MLflow
server killed at a random moment and started again at another, possibly after the study has ended).

    python benchmarks/faults.py --repeats 4 --seed 0          # about 20 driver kills in all
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NUM_SAMPLES = 10
STUDY = {
    "dataset": {"name": "glyphs", "options": {"samples_per_face": 1}},
    "model": {"trunk": "small_cnn", "embedding_dim": 16},
    "train": {"epochs": 4, "batch_size": 32, "m_per_class": 4, "batches_per_epoch": 4, "eval_batch_size": 1024},
    "search": {"algorithm": "optuna", "num_samples": NUM_SAMPLES, "seed": 0,
               "losses": ["contrastive", "triplet", "normalized_softmax", "multi_similarity"]},
    "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
    "resources": {"cpus_per_trial": 1},
    "results": {"flush_interval_s": 1.0},
    "tracking": {"drain_timeout_s": 20},
    "ray": {"num_cpus": 2},
}


@dataclass
class Tally:
    faults: int = 0
    studies: int = 0
    completed: int = 0
    problems: Counter[str] = field(default_factory=Counter)

    def add(self, problems: dict[str, int]) -> None:
        self.problems.update({k: v for k, v in problems.items() if v})


# -- running and hurting a study --------------------------------------------------------------------------------


def _start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "study.cli", *args, "--quiet"], cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def _finish(process: subprocess.Popen[bytes], timeout: float = 600) -> int:
    try:
        process.wait(timeout=timeout)
    finally:
        _kill_group(process)  # whatever Ray left of a killed driver
    return process.returncode


def _hit_at_random(process: subprocess.Popen[bytes], rng: random.Random, sig: int, window: tuple[float, float]) -> bool:
    """Send `sig` to the study's group at a random moment of `window` seconds; False if it ended before."""
    deadline = time.time() + rng.uniform(*window)
    while time.time() < deadline:
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    _kill_group(process, sig)
    return True


def _hit_in_flush(process: subprocess.Popen[bytes], marker: Path, rng: random.Random) -> bool:
    """SIGKILL while the recorder pauses between two parts of a flush (the k-th part, k random)."""
    target = rng.randint(1, 4)  # a study of this size writes 5-10 parts
    while process.poll() is None:
        if marker.exists() and len(marker.read_text().splitlines()) >= target:
            _kill_group(process)
            return True
        time.sleep(0.02)
    return False


def _workers(session: int) -> list[int]:
    """The study's trial workers: Ray gives each worker a process group of its own, but they stay in the session
    the driver was started in (start_new_session: its id is the driver's pid)."""
    out = subprocess.run(["ps", "-eo", "pid,sid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()[1:]
            if len(line.split()) > 2 and int(line.split()[1]) == session and "ray::ImplicitFunc" in line]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_CLUSTER = """
import sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
node = cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
for line in sys.stdin:
    if line.strip() == "remove" and node is not None:
        cluster.remove_node(node, allow_graceful=False)
        node = None
    elif line.strip() == "add" and node is None:
        node = cluster.add_node(num_cpus=1)
    print("ok", flush=True)
cluster.shutdown()
"""


class TwoNodeCluster:
    """A head node and a second node on this machine, in a process of their own; the second can be removed (as a
    machine that dies) and added again."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", _CLUSTER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.process.stdout is not None
        self.address = self.process.stdout.readline().strip()

    def command(self, word: str) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()
        self.process.stdout.readline()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        finally:
            _kill_group(self.process)  # type: ignore[arg-type]


class MlflowServer:
    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                        f"sqlite:///{directory}/server.db", "--default-artifact-root",
                        (directory / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(self.port),
                        "--workers", "1"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=1)
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("the mlflow server did not start")

    def stop(self) -> None:
        if self.process is not None:
            _kill_group(self.process)
            self.process.wait(timeout=30)
            self.process = None


# -- the checker -------------------------------------------------------------------------------------------------


def check(study_dir: Path, tracking_uri: str) -> dict[str, int]:
    """Counts of every way the study's record breaks the invariants (all zero: exactly once)."""
    import logging

    import pandas as pd
    from ray.tune import ExperimentAnalysis

    # The study writes its own tables, not Tune's result.json files: the analysis would warn once per trial.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)

    problems: Counter[str] = Counter()
    epochs = pd.read_parquet(study_dir / "results" / "epochs.parquet")
    trials = pd.read_parquet(study_dir / "results" / "trials.parquet")
    problems["trial rows doubled"] = int(trials["trial_id"].duplicated().sum())
    problems["trials missing"] = max(0, NUM_SAMPLES - trials["trial_id"].nunique())
    problems["trials beyond the budget"] = max(0, trials["trial_id"].nunique() - NUM_SAMPLES)
    problems["epoch rows doubled"] = int(epochs.duplicated(["trial_id", "epoch"]).sum())
    problems["epoch rows without a trial row"] = int((~epochs["trial_id"].isin(trials["trial_id"])).sum())
    counts = epochs.groupby("trial_id")["epoch"].agg(["count", "max"])
    for row in trials.to_dict("records"):
        have = counts.loc[row["trial_id"]] if row["trial_id"] in counts.index else None
        rows, last = (0, 0) if have is None else (int(have["count"]), int(have["max"]))
        problems["epoch rows lost"] += max(0, int(row["epochs"]) - rows)
        problems["epoch rows beyond the trial's record"] += max(0, last - int(row["epochs"]))
    analysis = ExperimentAnalysis(str(study_dir / "tune"))
    tune_ids = {t.trial_id for t in analysis.trials}
    problems["Tune trials not ended"] = sum(t.status not in ("TERMINATED", "ERROR") for t in analysis.trials)
    problems["Tune trials without a trials row"] = len(tune_ids - set(trials["trial_id"]))
    problems["trials rows Tune does not know"] = len(set(trials["trial_id"]) - tune_ids)
    problems.update(_check_mlflow(tracking_uri, epochs, trials))
    return dict(problems)


def _check_mlflow(uri: str, epochs: Any, trials: Any) -> Counter[str]:
    from mlflow.tracking import MlflowClient

    problems: Counter[str] = Counter()
    client = MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id], max_results=5000)]
    parents = [r for r in runs if r.data.tags.get("dml_study.role") == "study"]
    children = {r.data.tags.get("dml_study.trial_id"): r for r in runs if r.data.tags.get("dml_study.role") == "trial"}
    problems["MLflow parent runs not 1"] = abs(len(parents) - 1)
    problems["MLflow runs left RUNNING"] = sum(r.info.status == "RUNNING" for r in runs)
    problems["MLflow runs of unknown trials"] = len(set(children) - set(trials["trial_id"]))
    per_trial = epochs.groupby("trial_id").size()
    for trial_id in trials["trial_id"]:
        run = children.get(trial_id)
        expected = int(per_trial.get(trial_id, 0))
        if run is None:
            problems["MLflow points missing"] += expected
            continue
        points = len(client.get_metric_history(run.info.run_id, "recall_at_1"))
        problems["MLflow points missing"] += max(0, expected - points)
        problems["MLflow points doubled"] += max(0, points - expected)
    return problems


# -- the experiments --------------------------------------------------------------------------------------------


def _inject(kind: str, attempt: int, process: subprocess.Popen[bytes], rng: random.Random, study_dir: Path) -> bool:
    """The experiment's fault in this run of the study (True if it was injected before the run ended)."""
    # A run of the study takes 20-30 s on 2 loaded cores (start-up included): a moment anywhere in it.
    if kind == "kill9":
        return _hit_at_random(process, rng, signal.SIGKILL, (2.0, 22.0))
    if kind == "twice":  # anywhere in the first run, early in the resume
        return _hit_at_random(process, rng, signal.SIGKILL, (2.0, 22.0) if attempt == 1 else (1.0, 8.0))
    if kind == "sigint":
        return _hit_at_random(process, rng, signal.SIGINT, (2.0, 22.0))
    if kind == "flush":
        return _hit_in_flush(process, study_dir / ".fault-in-flush", rng)
    if kind == "worker":
        return _kill_a_worker(process, rng)
    raise ValueError(f"unknown experiment {kind!r}")


# Faults per study: how many runs of it are hit before it may finish.
_HITS = {"kill9": (2, 4), "twice": (2, 2), "sigint": (1, 2), "flush": (1, 2), "worker": (1, 1)}


def run_experiment(kind: str, rng: random.Random, directory: Path, tally: Tally) -> None:
    name = f"{kind}-{rng.randrange(10**6)}"
    doc = {**STUDY, "name": name, "storage": str(directory)}
    server = None
    if kind == "mlflow":
        server = MlflowServer(directory / f"{name}-server")
        server.start()
        doc["tracking"] = {**doc["tracking"], "uri": server.url}
    if kind in ("worker", "node"):
        doc["failure"] = {"max_failures": 3}  # a lost worker is retried from the trial's last checkpoint
    cluster = None
    if kind == "node":
        cluster = TwoNodeCluster()
        doc["ray"] = {"address": cluster.address}
    config = directory / f"{name}.yaml"
    config.write_text(json.dumps(doc))
    study_dir = directory / name
    tracking_uri = server.url if server else f"sqlite:///{study_dir}/mlflow.db"
    env = {"DML_STUDY_FAULT_PAUSE_IN_FLUSH": "0.5"} if kind == "flush" else {}
    tally.studies += 1
    hits = rng.randint(*_HITS.get(kind, (0, 0)))
    attempt, code = 0, -1
    while attempt <= 12:
        attempt += 1
        command = ["resume", str(study_dir)] if (study_dir / "study.json").exists() else ["run", str(config)]
        process = _start(command, directory, env)
        hurt = False
        if kind == "mlflow" and attempt == 1 and server is not None:
            hurt = _mlflow_outage(process, server, rng)
        elif kind == "node" and attempt == 1 and cluster is not None:
            hurt = _lose_a_node(process, cluster, rng)
        elif hits > 0:
            hurt = _inject(kind, attempt, process, rng, study_dir)
            hits -= int(hurt)
        tally.faults += int(hurt)
        code = _finish(process)
        if code == 0 and (kind in ("worker", "mlflow", "node") or not hurt):
            if kind == "mlflow" and attempt == 1:
                continue  # the server is back: a resume sends MLflow what it missed
            break
    problems = check(study_dir, tracking_uri)
    tally.completed += int(code == 0 and not problems.get("trials missing"))
    tally.add(problems)
    shown = ", ".join(f"{k} {v}" for k, v in problems.items() if v) or "all invariants hold"
    print(f"  {name}: {attempt} run(s), last exit {code}; {shown}", flush=True)
    if server is not None:
        server.stop()
    if cluster is not None:
        cluster.close()


def _lose_a_node(process: subprocess.Popen[bytes], cluster: TwoNodeCluster, rng: random.Random) -> bool:
    """The second node dies at a random moment (its trials are retried on the head) and comes back later."""
    deadline = time.time() + rng.uniform(3.0, 30.0)
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    if process.poll() is not None:
        return False
    cluster.command("remove")
    deadline = time.time() + rng.uniform(5.0, 30.0)
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    cluster.command("add")
    return True


def _mlflow_outage(process: subprocess.Popen[bytes], server: MlflowServer, rng: random.Random) -> bool:
    """Kill the tracking server at a random moment of the run and start it again after a random time (often after
    the study has ended): the study must finish regardless, the resume then catches MLflow up."""
    deadline = time.time() + rng.uniform(3.0, 30.0)
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    server.stop()
    down_until = time.time() + rng.uniform(5.0, 60.0)
    process.wait(timeout=600)
    time.sleep(max(0.0, down_until - time.time()))
    server.start()
    return True


def _kill_a_worker(process: subprocess.Popen[bytes], rng: random.Random) -> bool:
    """SIGKILL of one trial worker at a random moment while trials run (they run for a few seconds only)."""
    while process.poll() is None and not _workers(process.pid):
        time.sleep(0.1)
    deadline = time.time() + rng.uniform(0.0, 3.0)
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    workers = _workers(process.pid)
    if process.poll() is not None or not workers:
        return False
    os.kill(rng.choice(workers), signal.SIGKILL)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+",
                        default=["kill9", "sigint", "flush", "twice", "worker", "node", "mlflow"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="keep the studies in this directory")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tallies: dict[str, Tally] = {}
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(args.keep or scratch)
        directory.mkdir(parents=True, exist_ok=True)
        for repeat in range(args.repeats):
            for kind in args.experiments:
                print(f"{kind} #{repeat + 1}", flush=True)
                run_experiment(kind, rng, directory, tallies.setdefault(kind, Tally()))
    print("\n| experiment | faults injected | studies | completed | problems |")
    print("|---|---|---|---|---|")
    for kind, tally in tallies.items():
        problems = ", ".join(f"{k} {v}" for k, v in tally.problems.items()) or "none"
        print(f"| {kind} | {tally.faults} | {tally.studies} | {tally.completed} | {problems} |")
    total = Counter()
    for tally in tallies.values():
        total.update(tally.problems)
    print(f"\nfaults injected {sum(t.faults for t in tallies.values())}, studies completed "
          f"{sum(t.completed for t in tallies.values())} of {sum(t.studies for t in tallies.values())}, "
          f"problems: {dict(total) or 'none'}")
    sys.exit(1 if total else 0)


if __name__ == "__main__":
    main()
