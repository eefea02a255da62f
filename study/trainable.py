"""The Ray Tune function trainable: a thin adapter from a sampled configuration to `dml_core.train`.

Each epoch is reported with `ray.tune.report(metrics, checkpoint=...)`; `ray.tune.get_checkpoint()` resumes a
trial that a restored study, a retried failure or a paused scheduler hands back.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import ray
import torch
from ray import tune

from dml_core.config import TrainConfig
from dml_core.train import train
from search_spaces.space import to_train_config

__all__ = ["CHECKPOINT_FILE", "dml_trainable"]

CHECKPOINT_FILE = "train_state.pt"


def _threads() -> int:
    """One intra-op thread per CPU the trial holds, so concurrent trials do not oversubscribe the cores."""
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    return max(1, int(cpus))


def dml_trainable(config: dict[str, Any], base: TrainConfig) -> None:
    torch.set_num_threads(_threads())
    train_config = to_train_config(base, config)

    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume = torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu", weights_only=True)

    # Which Ray node ran the trial: on a cluster, the first thing to look at when some trials are slow or fail.
    node_id = ray.get_runtime_context().get_node_id()

    def on_epoch(epoch: int, metrics: dict[str, float], state: dict[str, Any]) -> bool:
        with tempfile.TemporaryDirectory() as directory:
            torch.save(state, os.path.join(directory, CHECKPOINT_FILE))
            tune.report({**metrics, "node_id": node_id}, checkpoint=tune.Checkpoint.from_directory(directory))
        return False  # stopping is the scheduler's call, made on the driver

    train(train_config, on_epoch=on_epoch, resume_from=resume)
