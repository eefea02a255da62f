"""A new sqlite tracking store is made whole or not at all: MLflow migrates a new store in place for seconds, and a
study killed meanwhile used to leave one that MLflow refuses for good ("out-of-date database schema")."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_MIRROR = """
import sys, time
from study.mlflow_mirror import MlflowMirror
mirror = MlflowMirror(tracking_uri=sys.argv[1], experiment="e", study_uid="u", study_name="s",
                      progress_file=sys.argv[2], metrics=["recall@1"], params={}, head_keys=["loss"])
mirror.start({})
print("started", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_study_killed_while_mlflow_creates_its_store_leaves_no_broken_store(tmp_path):
    from mlflow.tracking import MlflowClient

    def launch(attempt: int) -> tuple[subprocess.Popen[str], Path, str]:
        db = tmp_path / f"mlflow-{attempt}.db"
        process = subprocess.Popen([sys.executable, "-c", _MIRROR, f"sqlite:///{db}",
                                    str(tmp_path / f"progress-{attempt}.json")],
                                   cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None and process.stdout.readline().strip() == "started"
        return process, db, f"sqlite:///{db}"

    # How long making a store takes here and now (seconds on an idle machine, far more on a loaded one): the
    # kills below are placed as fractions of it, so that they land inside the migrations on any machine.
    process, db, _ = launch(0)
    started = time.monotonic()
    while not db.exists() and time.monotonic() - started < 120:
        time.sleep(0.05)
    took = time.monotonic() - started
    process.kill()
    process.wait()
    outcomes = []
    for attempt, fraction in enumerate((0.1, 0.3, 0.5, 0.7, 0.9, 2.0), start=1):
        process, db, uri = launch(attempt)
        time.sleep(fraction * took)  # somewhere in MLflow's migrations, or after them
        process.send_signal(signal.SIGKILL)
        process.wait()
        if db.exists():
            experiments = MlflowClient(uri).search_experiments()  # raises for a half-migrated store
            outcomes.append("whole" if experiments else "empty")
        else:
            outcomes.append("none")
    assert "none" in outcomes and "whole" in outcomes, (took, outcomes)  # killed before and after it was made
