"""Plain random sampling of a study space with an explicit numpy Generator."""

from __future__ import annotations

import math

import numpy as np

from search_spaces._params import Choice, Fixed, Grid, IntRange, LogUniform, Param, Uniform
from search_spaces._space import Entry, StudySpace
from search_spaces._values import Scalar

__all__ = ["sample"]


def _pick(options: tuple[Scalar, ...] | tuple[str, ...], rng: np.random.Generator) -> Scalar:
    return options[int(rng.integers(len(options)))]


def _draw(param: Param, rng: np.random.Generator) -> Scalar:
    """One value as a plain Python scalar (numpy scalars would leak into Parquet and YAML)."""
    match param:
        case Fixed(value=value):
            return value
        case Uniform(low=low, high=high):
            return float(rng.uniform(low, high))
        case LogUniform(low=low, high=high):
            return float(math.exp(rng.uniform(math.log(low), math.log(high))))
        case IntRange(low=low, high=high, log=False):
            return int(rng.integers(low, high + 1))
        case IntRange(low=low, high=high, log=True):
            # Each integer gets the log-width of [k - 1/2, k + 1/2], as Optuna's log int distribution does.
            value = round(math.exp(rng.uniform(math.log(low - 0.5), math.log(high + 0.5))))
            return int(min(max(value, low), high))
        case Choice(options=options):
            return _pick(options, rng)
        case Grid(values=values):
            return _pick(values, rng)
    raise TypeError(f"not a search-space primitive: {param!r}")


def _draw_all(entries: list[Entry], rng: np.random.Generator) -> dict[str, Scalar]:
    return {entry.column: _draw(entry.param, rng) for entry in entries}


def sample(space: StudySpace, rng: np.random.Generator) -> dict[str, Scalar]:
    """One configuration (the flat dotted dict): a loss, its hyperparameters, one of its miners and the miner's
    hyperparameters, then the training fields. Each choice is uniform; `rng` is the only source of randomness.
    """
    loss = space.losses[int(rng.integers(len(space.losses)))]
    config: dict[str, Scalar] = {"loss": loss.name, **_draw_all(loss.entries(space.path), rng)}
    miner = space.miners[str(_pick(loss.miners, rng))]
    config["miner"] = miner.name
    config.update(_draw_all(miner.entries(space.path), rng))
    config.update(_draw_all(space.train_entries(), rng))
    return config
