"""The Optuna adapter: a define-by-run function over the conditional space. The only module importing optuna.

Optuna parameter names never clash across branches (one name is one distribution in a study):
"loss", "<loss>.<hparam>", "<loss>.miner", "miner.<miner>.<hparam>", "train.<field>". Fixed values, and choices
or grids with a single value, are not suggested; they only appear in the returned configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna

from search_spaces._params import Choice, Fixed, Grid, IntRange, LogUniform, Uniform
from search_spaces._space import Entry, StudySpace
from search_spaces._values import Scalar

__all__ = ["to_optuna"]


def _choose(trial: optuna.trial.BaseTrial, name: str, options: tuple[Scalar, ...]) -> Scalar:
    return options[0] if len(options) == 1 else trial.suggest_categorical(name, options)


def _suggest(trial: optuna.trial.BaseTrial, entry: Entry) -> Scalar:
    name = entry.optuna_name
    match entry.param:
        case Fixed(value=value):
            return value
        case Uniform(low=low, high=high):
            return trial.suggest_float(name, low, high)
        case LogUniform(low=low, high=high):
            return trial.suggest_float(name, low, high, log=True)
        case IntRange(low=low, high=high, log=log):
            return trial.suggest_int(name, low, high, log=log)
        case Choice(options=options):
            return _choose(trial, name, options)
        case Grid(values=values):
            return _choose(trial, name, values)
    raise TypeError(f"not a search-space primitive: {entry.param!r}")


def _suggest_all(trial: optuna.trial.BaseTrial, entries: list[Entry]) -> dict[str, Scalar]:
    return {entry.column: _suggest(trial, entry) for entry in entries}


@dataclass(frozen=True)
class _DefineByRun:
    """A picklable callable (Ray ships it to its searcher) holding the space."""

    space: StudySpace

    def __call__(self, trial: optuna.trial.BaseTrial) -> dict[str, Scalar]:
        space = self.space
        loss = space.loss(str(_choose(trial, "loss", space.loss_names)))
        config: dict[str, Scalar] = {"loss": loss.name, **_suggest_all(trial, loss.entries(space.path))}
        miner = space.miners[str(_choose(trial, f"{loss.name}.miner", loss.miners))]
        config["miner"] = miner.name
        config.update(_suggest_all(trial, miner.entries(space.path)))
        config.update(_suggest_all(trial, space.train_entries()))
        return config


def to_optuna(space: StudySpace) -> Callable[[optuna.trial.BaseTrial], dict[str, Scalar]]:
    """`fn(trial) -> config`: suggests the loss, its hyperparameters, its miner and the miner's hyperparameters,
    then the training fields, and returns the flat configuration dict (the same keys as `sample`).
    """
    return _DefineByRun(space)
