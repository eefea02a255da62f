"""Cross-validation as "A Metric Learning Reality Check" does it: one configuration, k fold models in lockstep.

Fold model i trains on every class-disjoint partition of the training classes but i and is validated on
partition i (`DatasetSplit.folds(k)`: the same partitions for every configuration). The k models step epoch by
epoch together inside one call, each exactly as `train(config.replace(fold=i))` would train it alone (same seed,
same data, same draws: `TrainingRun` owns all of a model's state), so fold i's metrics equal that single-fold run's
on the CPU. After each epoch the caller sees every fold's validation metrics and their mean, which is what a
search ranks a configuration by.

The final runs of the protocol also keep, per fold model, the weights of its best validation epoch, and
`evaluate_fold_models` scores those models on the test classes twice: "separated" (each fold model's metrics on its
own D-dim embeddings, averaged over the folds) and "concatenated" (the metrics of the k*D-dim concatenation of the
fold models' L2-normalised embeddings).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dml_core.config import TrainConfig
from dml_core.data import DMLDataset, load_dataset
from dml_core.errors import ConfigError
from dml_core.metrics import retrieval_metrics
from dml_core.mode import Mode
from dml_core.models import make_model
from dml_core.train import TrainingRun, device_of, embed

__all__ = ["FOLDS_CHECKPOINT_VERSION", "FoldsSummary", "evaluate_fold_models", "fold_mean", "train_folds"]

# Bumped whenever the lockstep checkpoint changes shape (each fold's own part is train.py's checkpoint).
FOLDS_CHECKPOINT_VERSION = 1
# Per-epoch timings: the lockstep epoch takes the sum of the folds' times; every other value is their mean.
_SUMMED = ("train_time_s", "eval_time_s", "epoch_time_s")

OnFoldsEpoch = Callable[[int, dict[str, float], list[dict[str, float]], dict[str, Any]], "bool | None"]


@dataclass(frozen=True)
class FoldsSummary:
    """What a lockstep run produced: each fold's metrics after every epoch, and their means."""

    folds: tuple[tuple[dict[str, float], ...], ...]  # [fold][epoch] -> metrics
    mean: tuple[dict[str, float], ...]  # [epoch] -> the mean over folds (timings summed)
    stopped_early: bool
    wall_time_s: float
    # With `keep_best`: per fold, (best epoch, the model's state dict at it, on the CPU); else None.
    best: tuple[tuple[int, dict[str, torch.Tensor]], ...] | None = None


def fold_mean(per_fold: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """One epoch's metrics over the folds: the mean of each value, timings summed, the epoch kept."""
    out: dict[str, float] = {"epoch": per_fold[0]["epoch"]}
    for key in per_fold[0]:
        if key == "epoch":
            continue
        values = [float(m[key]) for m in per_fold]
        out[key] = math.fsum(values) if key in _SUMMED else math.fsum(values) / len(values)
    return out


class _Best:
    """One fold model's best validation epoch by `metric` (ties: the earliest) and a CPU copy of its weights."""

    def __init__(self, metric: str, mode: Mode) -> None:
        self.metric, self.sign = metric, mode.sign
        self.epoch = 0
        self.value = -math.inf
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, metrics: Mapping[str, float], model: torch.nn.Module) -> None:
        value = self.sign * float(metrics[self.metric])
        if self.state is None or value > self.value:
            self.epoch, self.value = epoch, value
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def to_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "value": self.value, "model": self.state}

    def load(self, state: Mapping[str, Any]) -> None:
        self.epoch, self.value, self.state = int(state["epoch"]), float(state["value"]), state["model"]


def _check(config: TrainConfig) -> None:
    if config.fold is not None:
        raise ConfigError("fold", f"must be null for cross-validation in lockstep (every fold is trained), "
                                  f"got fold={config.fold}")
    if config.num_folds < 2:
        raise ConfigError("num_folds", f"cross-validation needs at least 2 folds, got num_folds={config.num_folds}")


def train_folds(config: TrainConfig, *, on_epoch: OnFoldsEpoch | None = None,
                resume_from: Mapping[str, Any] | None = None, keep_best: str | None = None,
                mode: Mode = Mode.MAX) -> FoldsSummary:
    """Train the `config.num_folds` fold models of `config` in lockstep for `config.epochs` epochs.

    `on_epoch(epoch, mean, per_fold, checkpoint)` runs after every epoch; returning True stops all folds. The
    checkpoint is one plain dict of live tensors that `resume_from` accepts: save it inside the callback.
    `keep_best="map@r"` keeps each fold model's weights at its best validation epoch by that metric (in `mode`).
    """
    _check(config)
    started = time.perf_counter()
    device = device_of(config)
    split = load_dataset(config.dataset.name, root=config.dataset.root, **config.dataset.options)
    sets = split.folds(config.num_folds)
    runs = [TrainingRun(config.replace(fold=i), train_set, device) for i, (train_set, _) in enumerate(sets)]
    bests = [_Best(keep_best, mode) for _ in runs] if keep_best is not None else []
    histories: list[list[dict[str, float]]] = [[] for _ in runs]
    start_epoch = 0
    if resume_from is not None:
        start_epoch = _restore(resume_from, runs, histories, bests)

    stopped = False
    for epoch in range(start_epoch + 1, config.epochs + 1):
        per_fold = []
        for i, (run, (_, val_set)) in enumerate(zip(runs, sets)):
            metrics = run.epoch(epoch, val_set)
            histories[i].append(metrics)
            per_fold.append(metrics)
            if bests:
                bests[i].update(epoch, metrics, run.model)
        if on_epoch is not None:
            checkpoint = {"version": FOLDS_CHECKPOINT_VERSION, "epoch": epoch,
                          "folds": [run.checkpoint(epoch, history) for run, history in zip(runs, histories)],
                          "best": [best.to_state() for best in bests] or None}
            if on_epoch(epoch, fold_mean(per_fold), [dict(m) for m in per_fold], checkpoint):
                stopped = epoch < config.epochs
                break
    best = tuple((b.epoch, b.state) for b in bests if b.state is not None) if bests else None
    return FoldsSummary(folds=tuple(tuple(h) for h in histories),
                        mean=tuple(fold_mean([h[e] for h in histories]) for e in range(len(histories[0]))),
                        stopped_early=stopped, wall_time_s=time.perf_counter() - started, best=best)


def _restore(checkpoint: Mapping[str, Any], runs: list[TrainingRun], histories: list[list[dict[str, float]]],
             bests: list[_Best]) -> int:
    version = checkpoint.get("version")
    if version != FOLDS_CHECKPOINT_VERSION:
        raise ValueError(f"lockstep checkpoint version {version!r} is not supported "
                         f"(expected {FOLDS_CHECKPOINT_VERSION})")
    if len(checkpoint["folds"]) != len(runs):
        raise ValueError(f"the checkpoint holds {len(checkpoint['folds'])} fold models, the config asks for "
                         f"{len(runs)}")
    for run, history, state in zip(runs, histories, checkpoint["folds"]):
        _, restored = run.restore(state)
        history.extend(restored)
    for best, state in zip(bests, checkpoint.get("best") or []):
        best.load(state)
    return int(checkpoint["epoch"])


def evaluate_fold_models(config: TrainConfig, states: Sequence[Mapping[str, torch.Tensor]], *,
                    test_set: DMLDataset | None = None) -> dict[str, dict[str, float]]:
    """The reality check's two scores of fold models (their state dicts) on the test classes:
    {"separated": mean over the folds of each model's metrics, "concatenated": the metrics of the concatenated
    L2-normalised embeddings}. `test_set` defaults to the config's data set's test split."""
    if not states:
        raise ValueError("evaluate_fold_models needs at least one fold model")
    device = device_of(config)
    if test_set is None:
        test_set = load_dataset(config.dataset.name, root=config.dataset.root, **config.dataset.options).test
    per_fold, parts = [], []
    for state in states:
        model = make_model(config.model.trunk, embedding_dim=config.model.embedding_dim,
                           freeze_batchnorm=config.model.freeze_batchnorm, in_channels=test_set.in_channels)
        model.load_state_dict(copy.deepcopy(dict(state)))
        model.to(device)
        if device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        embeddings, labels = embed(model, test_set, batch_size=config.eval_batch_size, device=device,
                                   num_workers=config.num_workers)
        per_fold.append(retrieval_metrics(embeddings, labels, ks=config.ks, include_nmi=config.include_nmi))
        parts.append(F.normalize(embeddings.float(), dim=1))  # (N, D)
    concatenated = torch.cat(parts, dim=1)  # (N, k * D)
    return {"separated": {k: math.fsum(m[k] for m in per_fold) / len(per_fold) for k in per_fold[0]},
            "concatenated": retrieval_metrics(concatenated, labels, ks=config.ks, include_nmi=config.include_nmi)}
