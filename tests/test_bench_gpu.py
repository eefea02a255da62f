"""The one-shot GPU benchmark (benchmarks/bench_gpu.py) is known to run before a GPU is at hand: its reduced form
runs on the CPU through the wrapper, every part reporting a row, without Ray, Optuna or MLflow importable; and
importing it loads none of those nor faiss (the GPU machines have none of them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_GPU_MACHINES = ("faiss", "ray", "optuna", "mlflow")

# Installed as sitecustomize for the run (and so for every process it spawns): these imports fail, as they would
# on the GPU machines. faiss stays importable: train() on the CPU evaluates with dml_core's faiss backend (on CUDA it
# uses the torch backend, and part 3 asks for it by name).
BLOCKER = textwrap.dedent("""
    import sys

    class _Absent:
        BLOCKED = {"ray", "optuna", "mlflow"}

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} is not installed on the GPU machines (blocked by the test)")
            return None

    sys.meta_path.insert(0, _Absent())
""")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_reduced_form_runs_every_part_on_the_cpu_through_the_wrapper(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "LIMIT_S": "200",
           "PYTHONPATH": str(blocker), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--reduced",
                           "--work-dir", str(tmp_path / "work")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=230, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    table = (out / "bench_gpu.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| part")]
    assert {row.split("|")[1].strip() for row in rows} == {"1", "2", "3", "4"}, table
    for needle in ("trunk bound", "decoded cache build", "train(), decoded cache", "train(), JPEG path",
                   "retrieval_metrics", "embed", "1 trial(s) packed", "2 trial(s) packed"):
        assert needle in table, f"{needle!r} missing from\n{table}"
    assert "failed" not in table and "not judged" in table  # the reduced form judges no goal
    raw = json.loads((out / "bench_gpu.json").read_text())
    assert raw["failed"] == [] and raw["plan"]["form"] == "reduced"
    assert set(raw["parts"]) >= {"trunk_images_per_s", "cache", "train", "eval", "packed"}
    assert all(rate > 0 for rate in raw["parts"]["packed"]["2"]["per_process_images_per_s"])
    assert (out / "bench_gpu.log").read_text().count("== part") >= 5


@pytest.mark.timeout(120)
def test_importing_the_benchmark_loads_no_faiss_ray_optuna_or_mlflow() -> None:
    probe = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import bench_gpu; "
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {ABSENT_ON_GPU_MACHINES!r}))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=110,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
