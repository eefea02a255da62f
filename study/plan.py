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
from dml_core.config import TrainConfig
from dml_core.data import load_dataset
from dml_core.errors import ConfigError
from dml_core.losses import make_loss
from dml_core.miners import make_miner
from study.config import Algorithm, StudyConfig

__all__ = ["StudyPlan", "plan_study"]


@dataclass(frozen=True)
class StudyPlan:
    config: StudyConfig
    space: Any  # search_spaces.StudySpace
    param_columns: dict[str, str]  # sampled name (Parquet column) -> "float" | "int" | "str" | "bool"
    metrics: list[str]
    log_scale: dict[str, list[str]]
    grid: list[dict[str, Any]] | None  # the configurations of a grid search, else None

    @property
    def base(self) -> TrainConfig:
        return self.config.train

    @property
    def num_trials(self) -> int:
        protocol = self.config.protocol
        if protocol.reality_check:
            return len(self.space.loss_names) * (protocol.trials_per_loss + protocol.final_runs)
        if self.grid is not None:
            return len(self.grid) * self.config.search.num_samples
        return self.config.search.num_samples


def _absolute_paths(config: StudyConfig) -> StudyConfig:
    """Trials run in other processes (and other nodes): give them absolute paths."""
    train = config.train
    dataset, model = train.dataset, train.model
    if dataset.root is not None and "://" not in dataset.root:
        dataset = dataclasses.replace(dataset, root=str(Path(dataset.root).expanduser().resolve()))
    if model.pretrained_weights is not None and "://" not in model.pretrained_weights:
        weights = str(Path(model.pretrained_weights).expanduser().resolve())
        model = dataclasses.replace(model, pretrained_weights=weights)
    storage = config.storage if "://" in config.storage else str(Path(config.storage).expanduser().resolve())
    return dataclasses.replace(config, train=dataclasses.replace(train, dataset=dataset, model=model), storage=storage)


def _check_sample(base: TrainConfig, sampled: Mapping[str, Any], num_classes: int, path: str) -> None:
    """Build the loss, miner and TrainConfig of one configuration: bad values fail now, naming `path`."""
    try:
        config = search_spaces.to_train_config(base, sampled)
        make_loss(config.loss, num_classes=num_classes, embedding_dim=config.model.embedding_dim,
                  **config.loss_params)
        make_miner(config.miner, **config.miner_params)
    except (ValueError, TypeError) as exc:
        message = exc.message if isinstance(exc, ConfigError) and exc.path else str(exc)
        raise ConfigError(path, message) from None


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
    space = search_spaces.space_from_config(config.search.space, path="search")
    columns = dict(search_spaces.columns(space))
    _check_storage(config)

    num_classes = 8
    if check_data:
        # Loads (for the glyph set: generates and caches) the data once on the driver, so a bad root fails here
        # with its path, and concurrent trials find the cache ready.
        base = config.train
        try:
            split = load_dataset(base.dataset.name, root=base.dataset.root, **base.dataset.options)
        except (ValueError, FileNotFoundError, OSError) as exc:
            raise ConfigError("dataset", str(exc)) from None
        num_classes = split.train.num_classes
        if base.fold is not None or "train.fold" in columns:
            split.folds(base.num_folds)

    grid = None
    if config.search.algorithm is Algorithm.GRID:
        grid = search_spaces.grid(space)
    # Every boundary of every range and every listed value, per loss and miner: a value that no trial could
    # run with stops the study here, not inside a Ray worker.
    for path, sampled in search_spaces.boundary_configs(space):
        _check_sample(config.train, sampled, num_classes, path)
    # Then whole sampled configurations, which also catch values that are only bad together.
    rng = np.random.default_rng(config.search.seed)
    samples = grid if grid is not None else [search_spaces.sample(space, rng) for _ in range(64)]
    seen: set[tuple[str, str]] = set()
    for sampled in samples:
        key = (str(sampled["loss"]), str(sampled["miner"]))
        if key not in seen:
            seen.add(key)
            _check_sample(config.train, sampled, num_classes, f"search.space.{sampled['loss']}")

    return StudyPlan(config=config, space=space, param_columns=columns, metrics=list(config.train.metric_names),
                     log_scale=dict(search_spaces.log_scale(space)), grid=grid)
