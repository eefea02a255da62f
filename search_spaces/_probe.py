"""The boundary configurations of a study space: every value a bad setting could hide behind, for checking a
config before any trial runs.

A range's ends and every listed value are what a sampler can produce at the edges; if each of them builds (a loss,
a miner, a TrainConfig), a sampled configuration does too, short of interactions between two values.
"""

from __future__ import annotations

from collections.abc import Iterator

from search_spaces._params import Choice, Fixed, Grid, IntRange, LogUniform, Param, Uniform
from search_spaces._space import Entry, StudySpace
from search_spaces._values import Scalar

__all__ = ["boundary_values", "boundary_configs"]


def boundary_values(param: Param) -> tuple[Scalar, ...]:
    """The values a check should try: a fixed value, a range's two ends, every option of a choice or grid."""
    match param:
        case Fixed(value=value):
            return (value,)
        case Uniform(low=low, high=high) | LogUniform(low=low, high=high) | IntRange(low=low, high=high):
            return (low, high)
        case Choice(options=options):
            return options
        case Grid(values=values):
            return values
    raise TypeError(f"not a search-space primitive: {param!r}")


def boundary_configs(space: StudySpace) -> Iterator[tuple[str, dict[str, Scalar]]]:
    """(key path, configuration) pairs: for each loss and each of its miners, the configuration at the defaults
    (path: the loss), then each boundary value of one hyperparameter in turn with the others at their defaults
    (path: that hyperparameter's key), so that a failure names the one value that caused it."""
    for loss in space.losses:
        for miner_name in loss.miners:
            miner = space.miners[miner_name]
            entries: list[Entry] = [*loss.entries(space.path), *miner.entries(space.path),
                                    *space.train_entries()]
            base: dict[str, Scalar] = {"loss": loss.name, "miner": miner.name}
            yield f"{space.path}.space.{loss.name}", base
            for entry in entries:
                for value in boundary_values(entry.param):
                    yield entry.path, {**base, entry.column: value}
