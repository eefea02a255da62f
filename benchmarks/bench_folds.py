"""One k-fold lockstep trial against k single-fold trials of the same work: wall time, and where the time goes.

The reality check cross-validates every configuration on k folds. It could run them as k single-fold trials; it runs
them as one trial that trains the k fold models in lockstep (dml_core.folds). Both do the same training and
evaluation; the lockstep trial saves the per-trial costs k - 1 times: a Ray trial's worker start, loading the data
set, building the k models' data pipeline. Goal: the lockstep trial is not slower.

    python benchmarks/bench_folds.py                   # in-process, then as Ray trials on one CPU
    python benchmarks/bench_folds.py --no-ray --folds 4 --epochs 2

Timings are wall seconds (the machine's load moves them; the ratio is what to read). Where the time goes: training
steps and evaluation come from the runs' own per-epoch timings; "set-up" is the rest (data, models, Ray).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

import torch

from dml_core.config import DatasetConfig, ModelConfig, TrainConfig
from dml_core.data import load_dataset
from dml_core.folds import train_folds
from dml_core.train import train


def _config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(loss=args.loss, miner=args.miner, epochs=args.epochs, batch_size=32, m_per_class=4,
                       batches_per_epoch=args.batches_per_epoch, num_folds=args.folds, eval_batch_size=1024,
                       dataset=DatasetConfig(options={"image_size": 24, "samples_per_face": 2}),
                       model=ModelConfig(embedding_dim=64))


def _parts(histories: list[list[dict[str, float]]], wall: float) -> dict[str, float]:
    trained = sum(m["train_time_s"] for h in histories for m in h)
    evaluated = sum(m["eval_time_s"] for h in histories for m in h)
    return {"wall": wall, "train": trained, "eval": evaluated, "set-up": wall - trained - evaluated}


def in_process(config: TrainConfig) -> tuple[dict[str, float], dict[str, float]]:
    """(lockstep, k single-fold runs) in this process: no Ray, so the difference is data loading and set-up."""
    started = time.perf_counter()
    lockstep = train_folds(config)
    lockstep_parts = _parts([list(h) for h in lockstep.folds], time.perf_counter() - started)
    started = time.perf_counter()
    singles = [list(train(config.replace(fold=i)).history) for i in range(config.num_folds)]
    return lockstep_parts, _parts(singles, time.perf_counter() - started)


def _trial(config: dict[str, Any], base: TrainConfig, cross_validate: bool) -> None:
    from study.trainable import dml_trainable

    dml_trainable(config["trial"], base, cross_validate=cross_validate, metric="map@r")


def as_ray_trials(config: TrainConfig) -> tuple[float, float]:
    """(one lockstep trial, k single-fold trials) through Ray Tune on one CPU, so both run their work serially."""
    import ray
    from ray import tune

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # the study's own setting: no TBX/CSV logs
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        walls = []
        for cross_validate, configs in ((True, [{"loss": config.loss, "miner": config.miner}]),
                                        (False, [{"loss": config.loss, "miner": config.miner, "train.fold": i}
                                                 for i in range(config.num_folds)])):
            with tempfile.TemporaryDirectory() as storage:
                trainable = tune.with_resources(
                    tune.with_parameters(_trial, base=config, cross_validate=cross_validate), {"cpu": 1})
                started = time.perf_counter()
                tune.Tuner(trainable, param_space={"trial": tune.grid_search(configs)},
                           run_config=tune.RunConfig(storage_path=storage, verbose=0),
                           tune_config=tune.TuneConfig(reuse_actors=False)).fit()
                walls.append(time.perf_counter() - started)
        return walls[0], walls[1]
    finally:
        ray.shutdown()


def _row(name: str, parts: dict[str, float]) -> str:
    return (f"  {name:<24} wall {parts['wall']:6.1f} s   train {parts['train']:6.1f}   eval {parts['eval']:6.1f}   "
            f"set-up {parts['set-up']:5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batches-per-epoch", type=int, default=50)
    parser.add_argument("--loss", default="multi_similarity")
    parser.add_argument("--miner", default="multi_similarity")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray-trial comparison")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = _config(args)
    load_dataset(config.dataset.name, **config.dataset.options)  # build the cache outside the timings

    print(f"{args.folds} folds x {args.epochs} epochs x {args.batches_per_epoch} batches of 32, {args.loss} / "
          f"{args.miner}, {args.threads} thread(s), median of {args.repeats}")
    runs = [in_process(config) for _ in range(args.repeats)]
    lockstep = {k: statistics.median(r[0][k] for r in runs) for k in runs[0][0]}
    singles = {k: statistics.median(r[1][k] for r in runs) for k in runs[0][1]}
    print("in process (no Ray):")
    print(_row("lockstep, 1 call", lockstep))
    print(_row(f"single-fold, {args.folds} calls", singles))
    print(f"  ratio single-fold / lockstep: {singles['wall'] / lockstep['wall']:.2f} (goal >= 1.0)")
    if not args.no_ray:
        walls: list[Any] = [as_ray_trials(config) for _ in range(args.repeats)]
        one, many = statistics.median(w[0] for w in walls), statistics.median(w[1] for w in walls)
        print(f"as Ray trials on 1 CPU: lockstep {one:.1f} s, {args.folds} single-fold trials {many:.1f} s; "
              f"ratio {many / one:.2f} (goal >= 1.0)")


if __name__ == "__main__":
    main()
