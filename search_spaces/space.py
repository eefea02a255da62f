"""The conditional study space, the one name of every sampled value, and walking the space.

A configuration is a loss, its hyperparameters, one of the miners it takes and that miner's hyperparameters, then
optional training and model fields, as one flat dict. Each sampled value has one name, used alike as the key of
the configuration, the Parquet column, the Optuna parameter, the MLflow param, and (below `search.space`) the YAML
key that sets its range:

    name                     YAML key                          example
    loss                     search.losses (the list)          "triplet"
    <loss>.<hparam>          search.space.<loss>.<hparam>      "triplet.margin"
    miner                    search.miners (the list)          "triplet_margin"
    miner.<miner>.<hparam>   search.space.miner.<miner>.<h>    "miner.triplet_margin.margin"
    train.<field>            search.space.train.<field>        "train.lr" (a TrainConfig field)
    model.<field>            search.space.model.<field>        "model.embedding_dim" (a ModelConfig field)

A hyperparameter belongs to its loss or miner: triplet's margin and ArcFace's margin (in degrees) are different
columns. `to_train_config` turns a configuration into the TrainConfig of its trial.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from dml_core.config import ModelConfig, TrainConfig
from dml_core.errors import ConfigError
from search_spaces.distributions import PARAM_TYPES, Param, Scalar, SuggestingTrial
from search_spaces.registry import (NO_MINER, HParamInfo, allowed_miners, loss_hparam_info, loss_names,
                                    miner_hparam_info, miner_names)

__all__ = [
    "LOSS", "MINER", "MODEL_FIELDS", "REPEAT_NAMES", "TRAIN_FIELDS", "Entry", "LossSpace", "MinerSpace", "StudySpace",
    "boundary_configs", "columns", "grid", "log_scale", "loss_param_name", "miner_param_name", "sample", "suggest",
    "suggest_loss", "to_train_config",
]

LOSS = "loss"
MINER = "miner"
# TrainConfig's own training fields: what the YAML `train` section sets and `search.space.train` may sample. The
# data set and the model have sections of their own; the loss and the miner are what the search chooses.
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig)
                     if f.name not in ("dataset", "model", "loss", "loss_params", "miner", "miner_params"))
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))
# Sampled values that tell repeats of one configuration apart (another seed, another fold), not the configuration.
REPEAT_NAMES = ("train.seed", "train.fold")


def loss_param_name(loss: str, hparam: str) -> str:
    return f"{loss}.{hparam}"


def miner_param_name(miner: str, hparam: str) -> str:
    # Prefixed by "miner.": loss and miner names overlap (multi_similarity is both).
    return f"{MINER}.{miner}.{hparam}"


class Entry(NamedTuple):
    """One sampled hyperparameter of a space."""

    name: str  # the one name (see the module doc): "triplet.margin"
    path: str  # the YAML key that sets it, for error messages: "search.space.triplet.margin"
    param: Param


def _frozen_params(params: Mapping[str, Param], owner: str) -> Mapping[str, Param]:
    for name, param in params.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(owner, f"hyperparameter names must be identifiers, got {name!r}")
        if not isinstance(param, PARAM_TYPES):
            raise ConfigError(f"{owner}.{name}", f"expected Fixed, Uniform, LogUniform, IntRange, Choice or Grid, "
                             f"got {param!r}")
    return MappingProxyType(dict(params))


@dataclass(frozen=True)
class MinerSpace:
    name: str
    params: Mapping[str, Param] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen_params(self.params, f"miner {self.name!r}"))

    def __reduce__(self) -> tuple[type[MinerSpace], tuple[str, dict[str, Param]]]:
        return MinerSpace, (self.name, dict(self.params))  # a mappingproxy does not pickle; Ray pickles searchers

    def entries(self, path: str) -> list[Entry]:
        """Named by the miner, not the loss: a miner's space is the same whichever loss uses it."""
        return [Entry(miner_param_name(self.name, h), f"{path}.space.{MINER}.{self.name}.{h}", p)
                for h, p in self.params.items()]


@dataclass(frozen=True)
class LossSpace:
    name: str
    params: Mapping[str, Param]
    # The miners this loss is sampled with, in sampling order; ("none",) for no miner.
    miners: tuple[str, ...] = (NO_MINER,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen_params(self.params, f"loss {self.name!r}"))
        object.__setattr__(self, "miners", tuple(self.miners))
        if not self.miners or len(set(self.miners)) != len(self.miners):
            raise ValueError(f"loss {self.name!r} needs distinct miners, got miners={self.miners!r}")

    def __reduce__(self) -> tuple[type[LossSpace], tuple[str, dict[str, Param], tuple[str, ...]]]:
        return LossSpace, (self.name, dict(self.params), self.miners)

    def entries(self, path: str) -> list[Entry]:
        return [Entry(loss_param_name(self.name, h), f"{path}.space.{self.name}.{h}", p)
                for h, p in self.params.items()]


@dataclass(frozen=True)
class StudySpace:
    losses: tuple[LossSpace, ...]
    # A space for every miner a loss names; "none" needs none.
    miners: Mapping[str, MinerSpace] = field(default_factory=dict)
    # TrainConfig field -> distribution; empty by default, as the study's base TrainConfig is usually what is wanted.
    train: Mapping[str, Param] = field(default_factory=dict)
    # ModelConfig field -> distribution (embedding_dim, say); empty by default for the same reason.
    model: Mapping[str, Param] = field(default_factory=dict)
    # The config key this space was read from: error messages name `<path>.space.<loss>.<hparam>`.
    path: str = "search"

    def __post_init__(self) -> None:
        # Rebuilt with every distribution fitted to its hyperparameter's type (an int 0 for a float margin becomes
        # 0.0), so a column has one type in every part file.
        object.__setattr__(self, "losses", _checked_losses(tuple(self.losses), self.path))
        miners = {NO_MINER: MinerSpace(NO_MINER), **self.miners}
        object.__setattr__(self, "miners", MappingProxyType(_checked_miners(miners, self.losses, self.path)))
        for section, allowed in (("train", TRAIN_FIELDS), ("model", MODEL_FIELDS)):
            params = _frozen_params(getattr(self, section), f"{self.path}.space.{section}")
            unknown = [f for f in params if f not in allowed]
            if unknown:
                raise ConfigError(f"{self.path}.space.{section}.{unknown[0]}", f"not a {section} field; "
                                 f"expected one of: {', '.join(allowed)}")
            object.__setattr__(self, section, params)

    def __reduce__(self) -> tuple[type[StudySpace], tuple[object, ...]]:
        return StudySpace, (self.losses, dict(self.miners), dict(self.train), dict(self.model), self.path)

    @property
    def loss_names(self) -> tuple[str, ...]:
        return tuple(loss.name for loss in self.losses)

    def loss(self, name: str) -> LossSpace:
        for loss in self.losses:
            if loss.name == name:
                return loss
        raise KeyError(name)

    def run_entries(self) -> list[Entry]:
        """The training and model fields sampled for every configuration."""
        return ([Entry(f"train.{f}", f"{self.path}.space.train.{f}", p) for f, p in self.train.items()]
                + [Entry(f"model.{f}", f"{self.path}.space.model.{f}", p) for f, p in self.model.items()])

    def branch(self, loss: str, miner: str) -> list[Entry]:
        """Every hyperparameter of the configurations with `loss` and `miner`, in sampling order."""
        return [*self.loss(loss).entries(self.path), *self.miners[miner].entries(self.path), *self.run_entries()]

    def all_entries(self) -> Iterator[tuple[str, Entry]]:
        """(loss name, entry) for every hyperparameter reachable from each loss: its own, its miners', the run's."""
        for loss in self.losses:
            for entry in loss.entries(self.path):
                yield loss.name, entry
            for miner in loss.miners:
                for entry in self.miners[miner].entries(self.path):
                    yield loss.name, entry
            for entry in self.run_entries():
                yield loss.name, entry


def _checked_losses(losses: tuple[LossSpace, ...], path: str) -> tuple[LossSpace, ...]:
    """Names dml_core knows, once each, with miners the loss may take and hyperparameters it accepts."""
    if not losses:
        raise ConfigError(f"{path}.losses", "a study needs at least one loss")
    names = [loss.name for loss in losses]
    checked = []
    for loss in losses:
        if loss.name not in loss_names():
            raise ConfigError(f"{path}.losses",
                              f"unknown loss {loss.name!r}; expected one of: {', '.join(loss_names())}")
        if names.count(loss.name) > 1:
            raise ConfigError(f"{path}.losses", f"loss {loss.name!r} appears twice")
        wrong = [m for m in loss.miners if m not in allowed_miners(loss.name)]
        if wrong:
            raise ConfigError(f"{path}.miners", f"miner {wrong[0]!r} does not go with loss {loss.name!r}; "
                             f"it takes: {', '.join(allowed_miners(loss.name))}")
        params = _checked_params(loss.params, loss_hparam_info(loss.name), f"{path}.space.{loss.name}")
        checked.append(LossSpace(loss.name, params, loss.miners))
    return tuple(checked)


def _checked_miners(miners: Mapping[str, MinerSpace], losses: tuple[LossSpace, ...],
                    path: str) -> dict[str, MinerSpace]:
    for loss in losses:
        for taken in loss.miners:
            if taken not in miners:
                raise ConfigError(f"{path}.space.{MINER}.{taken}",
                                  f"no space for miner {taken!r} (loss {loss.name!r})")
    checked = {}
    for name, miner in miners.items():
        if name != miner.name or name not in miner_names():
            raise ConfigError(f"{path}.space.{MINER}.{name}", f"unknown miner {miner.name!r}; "
                                                              f"expected one of: {', '.join(miner_names())}")
        info = miner_hparam_info(name)
        checked[name] = MinerSpace(name, _checked_params(miner.params, info, f"{path}.space.{MINER}.{name}"))
    return checked


def _checked_params(params: Mapping[str, Param], known: Mapping[str, HParamInfo], path: str) -> dict[str, Param]:
    """`params` fitted to their domains; unknown names and required hyperparameters without a value raise."""
    unknown = [h for h in params if h not in known]
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}",
                          f"unknown hyperparameter; expected one of: {', '.join(known) or '(none)'}")
    missing = [h for h, info in known.items() if info.required and h not in params]
    if missing:
        raise ConfigError(f"{path}.{missing[0]}", "required hyperparameter has no value; give it a value or a range")
    checked = {}
    for h, param in params.items():
        try:
            checked[h] = known[h].domain.fit(param)
        except ValueError as error:
            raise ConfigError(f"{path}.{h}", str(error)) from None
    return checked


# ---------------------------------------------------------------------------------------------------------------
# Walking the space.


def columns(space: StudySpace) -> dict[str, str]:
    """Every name any configuration of `space` can have -> "float" | "int" | "str" | "bool": "loss" and "miner"
    first, then each loss's hyperparameters, the miners', the run's, in the order the space lists them."""
    found = {LOSS: "str", MINER: "str"}
    for _, entry in space.all_entries():
        if not entry.name.startswith(("train.", "model.", f"{MINER}.")):
            found.setdefault(entry.name, entry.param.kind.value)
    for _, entry in space.all_entries():
        found.setdefault(entry.name, entry.param.kind.value)
    return found


def log_scale(space: StudySpace) -> dict[str, list[str]]:
    """Per loss, the names (its own, its miners', the run's) whose values are best read on a log scale."""
    scaled: dict[str, list[str]] = {name: [] for name in space.loss_names}
    for loss, entry in space.all_entries():
        if entry.param.log_scaled and entry.name not in scaled[loss]:
            scaled[loss].append(entry.name)
    return {loss: sorted(names) for loss, names in scaled.items()}


def sample(space: StudySpace, rng: np.random.Generator) -> dict[str, Scalar]:
    """One configuration: a loss, its hyperparameters, one of its miners and the miner's hyperparameters, then the
    run's fields. Each choice is uniform; `rng` is the only source of randomness."""
    loss = space.losses[int(rng.integers(len(space.losses)))]
    miner = loss.miners[int(rng.integers(len(loss.miners)))]
    config: dict[str, Scalar] = {LOSS: loss.name, MINER: miner}
    for entry in space.branch(loss.name, miner):
        config[entry.name] = entry.param.sample(rng)
    return config


def suggest_loss(space: StudySpace, trial: SuggestingTrial) -> str:
    """The loss of a configuration, asked of an Optuna trial as the categorical `loss` (not asked for one loss)."""
    names = space.loss_names
    return names[0] if len(names) == 1 else str(trial.suggest_categorical(LOSS, names))


def suggest(space: StudySpace, loss: str, trial: SuggestingTrial) -> dict[str, Scalar]:
    """A configuration of `loss` asked of an Optuna trial (define-by-run), every value under its one name.

    Meant for one Optuna study per loss: within it `miner` is one categorical over the loss's miners, and the
    conditional branches are the miners. Fixed values, and lists of one value, are not asked.
    """
    miners = space.loss(loss).miners
    miner = miners[0] if len(miners) == 1 else str(trial.suggest_categorical(MINER, miners))
    config: dict[str, Scalar] = {LOSS: loss, MINER: miner}
    for entry in space.branch(loss, miner):
        config[entry.name] = entry.param.suggest(trial, entry.name)
    return config


def grid(space: StudySpace) -> list[dict[str, Scalar]]:
    """All configurations: for each loss and each of its miners, every combination of the values of the loss's,
    the miner's and the run's hyperparameters (the last varying fastest). A range raises ConfigError at its key
    path."""
    configs: list[dict[str, Scalar]] = []
    for loss in space.losses:
        for miner in loss.miners:
            entries = space.branch(loss.name, miner)
            values = []
            for entry in entries:
                try:
                    values.append(entry.param.grid_values())
                except ValueError as error:
                    raise ConfigError(entry.path, str(error)) from None
            for combination in itertools.product(*values):
                configs.append({LOSS: loss.name, MINER: miner,
                                **{e.name: v for e, v in zip(entries, combination)}})
    return configs


def boundary_configs(space: StudySpace) -> Iterator[tuple[str, dict[str, Scalar]]]:
    """(key path, configuration) pairs: for each loss and each of its miners, the configuration at the defaults
    (path: the loss), then each boundary value of one hyperparameter in turn with the others at their defaults
    (path: that hyperparameter's key), so that a failure names the one value that caused it.

    A range's ends and every listed value are what a sampler can produce at the edges; if each of them builds (a
    loss, a miner, a TrainConfig), a sampled configuration does too, short of interactions between two values.
    """
    for loss in space.losses:
        for miner in loss.miners:
            base: dict[str, Scalar] = {LOSS: loss.name, MINER: miner}
            yield f"{space.path}.space.{loss.name}", base
            for entry in space.branch(loss.name, miner):
                for value in entry.param.boundary_values():
                    yield entry.path, {**base, entry.name: value}


def to_train_config(base: TrainConfig, config: Mapping[str, Any]) -> TrainConfig:
    """`base` with a configuration's loss, miner, hyperparameters and run fields applied.

    A configuration names its loss and miner; every other key must belong to them or be a `train.<field>` or
    `model.<field>` (a key of another branch is refused: it would be silently ignored otherwise). Errors are
    ConfigErrors at the configuration's name (`train.lr`, `model.embedding_dim`).
    """
    missing = [name for name in (LOSS, MINER) if name not in config]
    if missing:
        raise ConfigError(missing[0], "a configuration names its loss and its miner (\"none\" for no miner)")
    loss, miner = str(config[LOSS]), str(config[MINER])
    loss_prefix, miner_prefix = f"{loss}.", f"{MINER}.{miner}."
    loss_params: dict[str, Any] = {}
    miner_params: dict[str, Any] = {}
    train: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for name, value in config.items():
        if name in (LOSS, MINER):
            continue
        if name.startswith(miner_prefix):
            miner_params[name[len(miner_prefix):]] = value
        elif name.startswith("train.") and name[len("train."):] in TRAIN_FIELDS:
            train[name[len("train."):]] = value
        elif name.startswith("model.") and name[len("model."):] in MODEL_FIELDS:
            model[name[len("model."):]] = value
        elif name.startswith(loss_prefix):
            loss_params[name[len(loss_prefix):]] = value
        else:
            raise ConfigError(name, f"not a hyperparameter of loss {loss!r} with miner {miner!r}, "
                                    f"nor a train.<field> or model.<field>")
    try:
        model_config = dataclasses.replace(base.model, **model)
    except ConfigError as error:
        raise error.within("model") from None
    try:
        return dataclasses.replace(base, loss=loss, loss_params=loss_params, miner=miner, miner_params=miner_params,
                                   model=model_config, **train)
    except ConfigError as error:
        raise error.within("train") from None
