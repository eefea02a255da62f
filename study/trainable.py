"""The Ray Tune function trainable: a thin adapter from a trial's configuration to dml_core.

A plain search trial is `dml_core.train` of one model; a reality-check trial is `dml_core.folds.train_folds`, its
fold models in lockstep, reporting the mean over folds (what ASHA and Optuna rank) with the per-fold values under
"folds"; a final run also keeps each fold model's best epoch and, with its last epoch, reports the test-class
metrics under "test". Each epoch is reported with `ray.tune.report(metrics, checkpoint=...)`;
`ray.tune.get_checkpoint()` resumes a trial that a restored study, a retried failure or a paused scheduler hands
back.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

import ray
import torch
from ray import tune

from dml_core.config import TrainConfig
from dml_core.folds import evaluate_fold_models, train_folds
from dml_core.mode import Mode
from dml_core.train import train
from results.study_dir import Phase
from search_spaces.space import to_train_config
from study.records import phase_of, sampled_values

__all__ = ["CHECKPOINT_FILE", "dml_trainable"]

CHECKPOINT_FILE = "train_state.pt"


def _threads() -> int:
    """One intra-op thread per CPU the trial holds, so concurrent trials do not oversubscribe the cores."""
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    return max(1, int(cpus))


def _resume() -> dict[str, Any] | None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu",  # type: ignore[no-any-return]
                          weights_only=True)


def _report(metrics: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        torch.save(dict(state), os.path.join(directory, CHECKPOINT_FILE))
        tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(directory))


def dml_trainable(config: dict[str, Any], base: TrainConfig, cross_validate: bool = False,
                  metric: str = "recall@1", mode: Mode = Mode.MAX) -> None:
    """`cross_validate`: the study is a reality check (every trial trains `base.num_folds` fold models);
    `metric` and `mode` choose each fold model's best epoch in a final run."""
    torch.set_num_threads(_threads())
    train_config = to_train_config(base, sampled_values(config))
    resume = _resume()
    # Which Ray node and GPUs ran the trial: on a cluster, the first thing to look at when some trials are slow or
    # fail (trials packed on one GPU by a fractional gpus_per_trial share its id).
    context = ray.get_runtime_context()
    node = {"node_id": context.get_node_id(), "gpu_ids": ",".join(context.get_accelerator_ids().get("GPU", []))}

    if not cross_validate:
        def on_epoch(epoch: int, metrics: dict[str, float], state: dict[str, Any]) -> bool:
            _report({**metrics, **node}, state)
            return False  # stopping is the scheduler's call, made on the driver

        train(train_config, on_epoch=on_epoch, resume_from=resume)
        return

    final = phase_of(config) is Phase.FINAL
    last: dict[str, Any] = {}

    def on_folds_epoch(epoch: int, mean: dict[str, float], per_fold: list[dict[str, float]],
                       state: dict[str, Any]) -> bool:
        report = {**mean, "folds": per_fold, **node}
        if final and epoch == train_config.epochs:
            report.update(_test_report(train_config, state))
        last.update(report=report, state=state)
        _report(report, state)
        return False

    summary = train_folds(train_config, on_epoch=on_folds_epoch, resume_from=resume,
                          keep_best=metric if final else None, mode=mode)
    if final and not last and resume is not None and summary.mean:
        # Restored after its last epoch's report but before Tune saw it end: report the test metrics again (the
        # epoch's row is not written twice; the test row needs them).
        _report({**summary.mean[-1], **_test_report(train_config, resume), **node}, resume)


def _test_report(config: TrainConfig, state: Mapping[str, Any]) -> dict[str, Any]:
    """The final run's scores on the test classes, from the best epoch of each fold model in `state`."""
    best = state["best"]
    return {"test": evaluate_fold_models(config, [b["model"] for b in best]),
            "best_epochs": [int(b["epoch"]) for b in best]}
