"""ASHA vs FIFO on the default study: epochs of compute each needs to get within 1 point of FIFO's best recall@1.

Both run configs/default.yaml with the same searcher seed and number of trials; FIFO trains every trial for all
its epochs, ASHA stops the weak ones at its rungs. Epochs are counted in the order they finished (the study's
timeline); "needed" is the number of epochs run when the best recall@1 so far first came within `--tolerance` of
FIFO's final best. Goal: ASHA needs >= 3x fewer.

    python benchmarks/bench_asha.py [--num-samples 28] [--tolerance 0.01]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from study.config import parse_config, read_yaml
from study.runner import run_study

ROOT = Path(__file__).resolve().parents[1]


def epochs_to_reach(epochs: pd.DataFrame, target: float, metric: str) -> int | None:
    """Epochs run (in completion order) until the running best of `metric` reaches `target`; None if never."""
    ordered = epochs.sort_values("timestamp", kind="stable")
    reached = (ordered[metric].cummax() >= target).to_numpy()
    return int(reached.argmax()) + 1 if reached.any() else None


def run(kind: str, storage: str, num_samples: int) -> pd.DataFrame:
    """The default study with scheduler.type = `kind`; returns its epochs table."""
    raw = read_yaml((ROOT / "configs" / "default.yaml").read_text())
    raw["scheduler"] = {**(raw.get("scheduler") or {}), "type": kind}
    study = run_study(parse_config(raw, storage=storage, name=kind, num_samples=num_samples), progress=False)
    return pd.read_parquet(Path(study.study_dir, "results", "epochs.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=28)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--metric", default="recall@1")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as storage:
        fifo = run("fifo", storage, args.num_samples)
        asha = run("asha", storage, args.num_samples)
    target = fifo[args.metric].max() - args.tolerance
    need_fifo = epochs_to_reach(fifo, target, args.metric)
    need_asha = epochs_to_reach(asha, target, args.metric)
    print(f"default study, {args.num_samples} trials each; target {args.metric} >= {target:.4f} "
          f"(FIFO best {fifo[args.metric].max():.4f} - {args.tolerance})")
    print(f"  FIFO: {len(fifo):4d} epochs in all, best {fifo[args.metric].max():.4f}, target after {need_fifo} epochs")
    shown = "never" if need_asha is None else f"after {need_asha} epochs"
    print(f"  ASHA: {len(asha):4d} epochs in all, best {asha[args.metric].max():.4f}, target {shown}")
    if need_asha is not None and need_fifo is not None:
        print(f"  ASHA needs {need_fifo / need_asha:.2f}x fewer epochs to reach the target (goal >= 3x); "
              f"total compute {len(fifo) / len(asha):.2f}x less")
    else:
        print(f"  ASHA did not reach the target; total compute {len(fifo) / len(asha):.2f}x less")


if __name__ == "__main__":
    main()
