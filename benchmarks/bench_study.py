"""Study overhead: wall time / (sum of trial compute time / parallel slots); goal <= 1.10.

Trial compute is what the trials spend training and evaluating (the sum of every epoch's `epoch_time_s`); the rest
of the wall time is what the study machinery costs: Ray and actor start-up, data loading and model building per
trial, checkpoints, the searcher, and the driver's recording. Reported twice: from the start of `run_study` (what
a user waits for, Ray's start included) and for Tune's fit alone.

    python benchmarks/bench_study.py [--trials 8] [--epochs 3] [--batches 100] [--slots 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from study.config import parse_config
from study.runner import run_study


class FitClock(Callback):
    """Wall time from Tune's set-up to the experiment's end, and to the first trial's start."""

    def __init__(self) -> None:
        self.started = self.ended = 0.0
        self.first_trial = None

    def setup(self, **info: Any) -> None:
        self.started = time.perf_counter()

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if self.first_trial is None:
            self.first_trial = time.perf_counter()

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.ended = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=100, help="batches per epoch")
    parser.add_argument("--slots", type=int, default=2, help="CPUs of the local cluster = concurrent trials")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as storage:
        doc = {
            "name": "bench", "storage": storage,
            "dataset": {"name": "glyphs", "options": {"image_size": 24, "samples_per_face": 2}},
            "train": {"epochs": args.epochs, "batches_per_epoch": args.batches, "loss_lr": 0.01},
            "search": {"algorithm": "random", "num_samples": args.trials, "seed": 0},
            "scheduler": {"kind": "fifo"},
            "resources": {"cpus_per_trial": 1},
            "ray": {"num_cpus": args.slots},
        }
        clock = FitClock()
        started = time.perf_counter()
        run = run_study(parse_config(doc), callbacks=[clock], progress=False)
        wall = time.perf_counter() - started
        epochs = pd.read_parquet(Path(run.study_dir, "results", "epochs.parquet"))
        trials = pd.read_parquet(Path(run.study_dir, "results", "trials.parquet"))

    compute = float(epochs["epoch_time_s"].sum())
    ideal = compute / args.slots
    fit = clock.ended - clock.started
    start_up = (clock.first_trial or clock.ended) - clock.started
    print(f"{len(trials)} trials x {args.epochs} epochs ({len(epochs)} epoch rows), {args.slots} slots")
    print(f"  sum of trial compute      {compute:8.1f} s   (ideal wall {ideal:.1f} s)")
    print(f"  run_study wall            {wall:8.1f} s   overhead {wall / ideal:.3f}   (Ray start-up included)")
    print(f"  Tune fit wall             {fit:8.1f} s   overhead {fit / ideal:.3f}   (goal <= 1.10)")
    print(f"    of which first actors   {start_up:8.1f} s   (fixed per study: worker processes importing torch)")
    print(f"    after the first start   {fit - start_up:8.1f} s   overhead {(fit - start_up) / ideal:.3f}")
    per_trial = (fit - start_up - ideal) * args.slots / max(len(trials), 1)
    print(f"  overhead per trial        {per_trial:8.2f} s   (slot-seconds between trials, after start-up)")


if __name__ == "__main__":
    main()
