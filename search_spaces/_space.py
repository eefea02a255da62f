"""The conditional study space: a loss, then its hyperparameters, then one of its miners and that miner's
hyperparameters, then optional training fields. Frozen dataclasses, validated on construction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from search_spaces._params import Choice, Fixed, Grid, IntRange, LogUniform, Param, Uniform
from search_spaces._domain import conform
from search_spaces._registry import (NO_MINER, HParamInfo, allowed_miners, loss_hparam_info, loss_names,
                                     miner_hparam_info, miner_names)

__all__ = ["Entry", "MinerSpace", "LossSpace", "StudySpace"]

_PRIMITIVES = (Fixed, Uniform, LogUniform, IntRange, Choice, Grid)


class Entry(NamedTuple):
    """One hyperparameter of a space under its three names."""

    column: str  # the key in a sampled configuration and the Parquet column: "loss.margin"
    optuna_name: str  # unique within a study, one distribution per name: "triplet.margin"
    path: str  # where the config sets it, for error messages: "search.space.triplet.margin"
    param: Param


def _frozen_params(params: Mapping[str, Param], owner: str) -> Mapping[str, Param]:
    for name, param in params.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{owner}: hyperparameter names must be identifiers, got {name!r}")
        if not isinstance(param, _PRIMITIVES):
            raise ValueError(f"{owner}.{name}: expected Fixed, Uniform, LogUniform, IntRange, Choice or Grid, "
                             f"got {param!r}")
    return MappingProxyType(dict(params))


def _entries(params: Mapping[str, Param], column: str, optuna: str, path: str) -> list[Entry]:
    return [Entry(f"{column}.{h}", f"{optuna}.{h}", f"{path}.{h}", p) for h, p in params.items()]


@dataclass(frozen=True)
class MinerSpace:
    name: str
    params: Mapping[str, Param] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen_params(self.params, f"miner {self.name!r}"))

    def __reduce__(self) -> tuple[type[MinerSpace], tuple[str, dict[str, Param]]]:
        return MinerSpace, (self.name, dict(self.params))  # a mappingproxy does not pickle; Ray pickles searchers

    def entries(self, path: str) -> list[Entry]:
        """Optuna names carry the miner, not the loss: a miner's space is the same whichever loss uses it."""
        return _entries(self.params, "miner", f"miner.{self.name}", f"{path}.space.miners.{self.name}")


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
        return _entries(self.params, "loss", self.name, f"{path}.space.{self.name}")


@dataclass(frozen=True)
class StudySpace:
    losses: tuple[LossSpace, ...]
    # A space for every miner a loss names; "none" needs none.
    miners: Mapping[str, MinerSpace] = field(default_factory=dict)
    # TrainConfig field -> primitive; empty by default, as the study's base TrainConfig is usually what is wanted.
    train: Mapping[str, Param] = field(default_factory=dict)
    # The config key this space was read from: error messages name `<path>.space.<loss>.<hparam>`.
    path: str = "search"

    def __post_init__(self) -> None:
        # Rebuilt with every primitive fitted to its hyperparameter's type (an int 0 for a float margin becomes 0.0),
        # so a column has one type whichever loss fills it.
        object.__setattr__(self, "losses", _checked_losses(tuple(self.losses), self.path))
        miners = {NO_MINER: MinerSpace(NO_MINER), **self.miners}
        object.__setattr__(self, "miners", MappingProxyType(_checked_miners(miners, self.losses, self.path)))
        object.__setattr__(self, "train", _frozen_params(self.train, f"{self.path}.space.train"))
        _check_column_types(self)

    def __reduce__(self) -> tuple[type[StudySpace], tuple[object, ...]]:
        return StudySpace, (self.losses, dict(self.miners), dict(self.train), self.path)

    @property
    def loss_names(self) -> tuple[str, ...]:
        return tuple(loss.name for loss in self.losses)

    def loss(self, name: str) -> LossSpace:
        for loss in self.losses:
            if loss.name == name:
                return loss
        raise KeyError(name)

    def train_entries(self) -> list[Entry]:
        return _entries(self.train, "train", "train", f"{self.path}.space.train")

    def all_entries(self) -> Iterator[tuple[str, Entry]]:
        """(loss name, entry) for every hyperparameter reachable from each loss: its own, its miners', training."""
        for loss in self.losses:
            for entry in loss.entries(self.path):
                yield loss.name, entry
            for miner in loss.miners:
                for entry in self.miners[miner].entries(self.path):
                    yield loss.name, entry
            for entry in self.train_entries():
                yield loss.name, entry


def _checked_losses(losses: tuple[LossSpace, ...], path: str) -> tuple[LossSpace, ...]:
    """Names dml_core knows, once each, with miners the loss may take and hyperparameters it accepts."""
    if not losses:
        raise ValueError(f"{path}.losses: a study needs at least one loss")
    names = [loss.name for loss in losses]
    checked = []
    for loss in losses:
        if loss.name not in loss_names():
            raise ValueError(f"{path}.losses: unknown loss {loss.name!r}; expected one of: {', '.join(loss_names())}")
        if names.count(loss.name) > 1:
            raise ValueError(f"{path}.losses: loss {loss.name!r} appears twice")
        wrong = [m for m in loss.miners if m not in allowed_miners(loss.name)]
        if wrong:
            raise ValueError(f"{path}.miners: miner {wrong[0]!r} does not go with loss {loss.name!r}; "
                             f"it takes: {', '.join(allowed_miners(loss.name))}")
        params = _checked_params(loss.params, loss_hparam_info(loss.name), f"{path}.space.{loss.name}")
        checked.append(LossSpace(loss.name, params, loss.miners))
    return tuple(checked)


def _checked_miners(miners: Mapping[str, MinerSpace], losses: tuple[LossSpace, ...],
                    path: str) -> dict[str, MinerSpace]:
    for loss in losses:
        for miner in loss.miners:
            if miner not in miners:
                raise ValueError(f"{path}.space.miners.{miner}: no space for miner {miner!r} (loss {loss.name!r})")
    checked = {}
    for name, miner in miners.items():
        if name != miner.name or name not in miner_names():
            raise ValueError(f"{path}.space.miners.{name}: unknown miner {miner.name!r}; "
                             f"expected one of: {', '.join(miner_names())}")
        info = miner_hparam_info(name)
        checked[name] = MinerSpace(name, _checked_params(miner.params, info, f"{path}.space.miners.{name}"))
    return checked


def _checked_params(params: Mapping[str, Param], known: Mapping[str, HParamInfo], path: str) -> dict[str, Param]:
    """`params` fitted to their domains; unknown names and required hyperparameters without a value raise."""
    unknown = [h for h in params if h not in known]
    if unknown:
        raise ValueError(f"{path}.{unknown[0]}: unknown hyperparameter; expected one of: {', '.join(known) or '(none)'}")
    missing = [h for h, info in known.items() if info.required and h not in params]
    if missing:
        raise ValueError(f"{path}.{missing[0]}: required hyperparameter has no value; give it a value or a range")
    checked = {}
    for h, param in params.items():
        try:
            checked[h] = conform(param, known[h].domain)
        except ValueError as error:
            raise ValueError(f"{path}.{h}: {error}") from None
    return checked


def _check_column_types(space: StudySpace) -> None:
    """A column has one type in the whole study (the Parquet schema is fixed when the study starts)."""
    seen: dict[str, tuple[str, str]] = {}
    for _, entry in space.all_entries():
        kind = entry.param.kind.value
        first = seen.setdefault(entry.column, (kind, entry.path))
        if first[0] != kind:
            raise ValueError(f"{entry.path}: {entry.column} is {kind} here but {first[0]} at {first[1]}; "
                             f"a column has one type per study")
