"""Everything a study derives from its config, computed and validated before Ray starts.

`plan_study` turns a StudyConfig into the search space, the table schema and the checks that catch bad input on
the driver: unknown names, impossible values, a dataset that is not where the config says. It writes nothing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import search_spaces
from dml_core.data import load_dataset
from dml_core.losses import make_loss
from dml_core.miners import make_miner
from dml_core.train import TrainConfig
from study.config import Algorithm, StudyConfig, metric_names
from study.errors import ConfigError
from study.records import trial_train_config

__all__ = ["StudyPlan", "plan_study"]

_NOT_SAMPLEABLE = ("loss", "loss_params", "miner", "miner_params")


@dataclass(frozen=True)
class StudyPlan:
    config: StudyConfig
    space: Any  # search_spaces.StudySpace
    param_columns: dict[str, str]  # dotted column -> "float" | "int" | "str" | "bool"
    metrics: list[str]
    log_scale: dict[str, list[str]]
    grid: list[dict[str, Any]] | None  # the configurations of a grid search, else None

    @property
    def base(self) -> TrainConfig:
        return self.config.train

    @property
    def num_trials(self) -> int:
        if self.grid is not None:
            return len(self.grid) * self.config.search.num_samples
        return self.config.search.num_samples


def _absolute_paths(config: StudyConfig) -> StudyConfig:
    """Trials run in other processes (and other nodes): give them absolute paths."""
    train = config.train
    changes: dict[str, Any] = {}
    if train.dataset_root is not None and "://" not in train.dataset_root:
        changes["dataset_root"] = str(Path(train.dataset_root).expanduser().resolve())
    if train.pretrained_weights is not None and "://" not in train.pretrained_weights:
        changes["pretrained_weights"] = str(Path(train.pretrained_weights).expanduser().resolve())
    storage = config.storage if "://" in config.storage else str(Path(config.storage).expanduser().resolve())
    return dataclasses.replace(config, train=dataclasses.replace(train, **changes), storage=storage)


def _check_train_columns(columns: Mapping[str, str]) -> None:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for column in columns:
        if column.startswith("train."):
            name = column[len("train."):]
            if name not in fields or name in _NOT_SAMPLEABLE:
                valid = ", ".join(sorted(fields - set(_NOT_SAMPLEABLE)))
                raise ConfigError(f"search.space.train.{name}", f"not a training field; expected one of: {valid}")


def _check_sample(base: TrainConfig, sampled: Mapping[str, Any], num_classes: int, path: str) -> None:
    """Build the loss, miner and TrainConfig of one configuration: bad values fail now, naming `path`."""
    loss = sampled["loss"]
    try:
        config = trial_train_config(base, sampled)
        make_loss(loss, num_classes=num_classes, embedding_dim=config.embedding_dim, **config.loss_params)
        make_miner(config.miner, **config.miner_params)
    except (ValueError, TypeError) as exc:
        raise ConfigError(path, str(exc)) from None


def _check_storage(config: StudyConfig) -> None:
    if "://" in config.storage:
        if config.tracking.enabled and config.tracking.uri is None:
            raise ConfigError("tracking.uri", "required when storage is a URI (the default sqlite store is a "
                                              "local file in the study directory)")
        return
    parent = Path(config.storage)
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise ConfigError("storage", f"{config.storage} is not writable (checked {parent})")


def plan_study(config: StudyConfig, *, check_data: bool = True) -> StudyPlan:
    """Validate `config` completely and derive the study's space and schema; raises ConfigError."""
    config = _absolute_paths(config)
    try:
        space = search_spaces.space_from_config(config.search.space, path="search")
    except ValueError as exc:
        raise ConfigError("", str(exc)) from None
    columns = dict(search_spaces.columns(space))
    _check_train_columns(columns)
    _check_storage(config)

    num_classes = 8
    if check_data:
        # Loads (for the glyph set: generates and caches) the data once on the driver, so a bad root fails here
        # with its path, and concurrent trials find the cache ready.
        base = config.train
        try:
            split = load_dataset(base.dataset, root=base.dataset_root, **base.dataset_options)
        except (ValueError, FileNotFoundError, OSError) as exc:
            raise ConfigError("dataset", str(exc)) from None
        num_classes = split.train.num_classes
        if base.fold is not None or "train.fold" in columns:
            split.folds(base.num_folds)

    grid = None
    if config.search.algorithm is Algorithm.GRID:
        try:
            grid = search_spaces.grid(space)
        except ValueError as exc:
            raise ConfigError("", str(exc)) from None  # the message names the parameter's key path
    # Every boundary of every range and every listed value, per loss and miner: a value that no trial could
    # run with stops the study here, not inside a Ray worker.
    for path, sampled in search_spaces.boundary_configs(space):
        _check_sample(config.train, sampled, num_classes, path)
    # Then whole sampled configurations, which also catch values that are only bad together.
    rng = np.random.default_rng(config.search.seed)
    samples = grid if grid is not None else [search_spaces.sample(space, rng) for _ in range(64)]
    seen: set[tuple[str, str]] = set()
    for sampled in samples:
        key = (sampled["loss"], sampled.get("miner", "none"))
        if key not in seen:
            seen.add(key)
            _check_sample(config.train, sampled, num_classes, f"search.space.{sampled['loss']}")

    return StudyPlan(config=config, space=space, param_columns=columns, metrics=metric_names(config.train),
                     log_scale=dict(search_spaces.log_scale(space)), grid=grid)
