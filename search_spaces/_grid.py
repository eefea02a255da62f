"""Every configuration of a study space, for grid search."""

from __future__ import annotations

import itertools

from search_spaces._params import Choice, Fixed, Grid, Param
from search_spaces._space import Entry, StudySpace
from search_spaces._values import Scalar

__all__ = ["grid"]


def _values(entry: Entry) -> tuple[Scalar, ...]:
    param: Param = entry.param
    if isinstance(param, Fixed):
        return (param.value,)
    if isinstance(param, Grid):
        return param.values
    if isinstance(param, Choice):
        return param.options
    raise ValueError(f"{entry.path}: grid search cannot enumerate {param.to_spec()!r}; "
                     f"use grid, choice or a fixed value")


def _product(entries: list[Entry]) -> list[dict[str, Scalar]]:
    """Every combination of the entries' values, the last entry varying fastest; [{}] for no entries."""
    columns = [entry.column for entry in entries]
    return [dict(zip(columns, values)) for values in itertools.product(*(_values(e) for e in entries))]


def grid(space: StudySpace) -> list[dict[str, Scalar]]:
    """All configurations: for each loss, each combination of its values, each of its miners with each combination
    of the miner's values, each combination of training values. Ranges raise ValueError naming their key path.
    """
    train = _product(space.train_entries())
    configs: list[dict[str, Scalar]] = []
    for loss in space.losses:
        loss_values = _product(loss.entries(space.path))
        for miner_name in loss.miners:
            miner = space.miners[miner_name]
            miner_values = _product(miner.entries(space.path))
            for lv, mv, tv in itertools.product(loss_values, miner_values, train):
                configs.append({"loss": loss.name, **lv, "miner": miner.name, **mv, **tv})
    return configs
