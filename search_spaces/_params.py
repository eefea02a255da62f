"""The primitives a search space is made of: one frozen dataclass per kind of distribution.

Each validates itself on construction, knows its column type (`kind`), whether its values are best read on a log
scale (`log_scaled`, used by results for log-spaced bins), and its YAML form (`to_spec`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from search_spaces._values import (Scalar, ValueKind, coerce, common_kind, is_positive_number, kind_of,
                                   numeric_string_hint)

__all__ = ["Fixed", "Uniform", "LogUniform", "IntRange", "Choice", "Grid", "Param"]


def _number(value: object, what: str) -> float:
    """A finite int or float (never bool) as float; `what` names the field in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}{numeric_string_hint(value)}")
    return float(value)


def _integer(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an int, got {value!r}")
    return value


@dataclass(frozen=True)
class Fixed:
    """One value, never sampled (not suggested to Optuna; it only appears in the configuration)."""

    value: Scalar

    def __post_init__(self) -> None:
        kind_of(self.value)

    @property
    def kind(self) -> ValueKind:
        return kind_of(self.value)

    @property
    def log_scaled(self) -> bool:
        return False

    def to_spec(self) -> Any:
        return self.value


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from [low, high]."""

    low: float
    high: float

    def __post_init__(self) -> None:
        low, high = _number(self.low, "uniform low"), _number(self.high, "uniform high")
        if not low < high:
            raise ValueError(f"uniform needs low < high, got low={self.low!r}, high={self.high!r}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def kind(self) -> ValueKind:
        return ValueKind.FLOAT

    @property
    def log_scaled(self) -> bool:
        return False

    def to_spec(self) -> Any:
        return {"uniform": [self.low, self.high]}


@dataclass(frozen=True)
class LogUniform:
    """A float whose logarithm is uniform on [log low, log high]: for scales and temperatures."""

    low: float
    high: float

    def __post_init__(self) -> None:
        low, high = _number(self.low, "loguniform low"), _number(self.high, "loguniform high")
        if not 0 < low < high:
            raise ValueError(f"loguniform needs 0 < low < high, got low={self.low!r}, high={self.high!r}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def kind(self) -> ValueKind:
        return ValueKind.FLOAT

    @property
    def log_scaled(self) -> bool:
        return True

    def to_spec(self) -> Any:
        return {"loguniform": [self.low, self.high]}


@dataclass(frozen=True)
class IntRange:
    """An int from low to high, both included; `log=True` draws it log-uniformly (needs low >= 1)."""

    low: int
    high: int
    # Linear by default: counts such as centres per class are small, and a log draw needs low >= 1.
    log: bool = False

    def __post_init__(self) -> None:
        low, high = _integer(self.low, "int low"), _integer(self.high, "int high")
        if not low < high:
            raise ValueError(f"int needs low < high, got low={low!r}, high={high!r}")
        if not isinstance(self.log, bool):
            raise ValueError(f"int log must be true or false, got log={self.log!r}")
        if self.log and low < 1:
            raise ValueError(f"int with log needs 1 <= low < high, got low={low!r}, high={high!r}")

    @property
    def kind(self) -> ValueKind:
        return ValueKind.INT

    @property
    def log_scaled(self) -> bool:
        return self.log

    def to_spec(self) -> Any:
        return {"int": [self.low, self.high], **({"log": True} if self.log else {})}


def _options(values: object, what: str, log: object) -> tuple[Scalar, ...]:
    """Validated, de-duplication-checked options of one kind (ints widened to floats when mixed with floats)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{what} needs a list of values, got {values!r}")
    if not values:
        raise ValueError(f"{what} needs at least one value, got []")
    kind = common_kind(tuple(values))
    options = tuple(coerce(v, kind) for v in values)
    if len(set(options)) != len(options):
        raise ValueError(f"{what} values must be distinct, got {list(values)!r}")
    if not isinstance(log, bool):
        raise ValueError(f"{what} log must be true or false, got log={log!r}")
    if log and not all(is_positive_number(v) for v in options):
        raise ValueError(f"{what} with log needs positive numbers, got {list(values)!r}")
    return options


@dataclass(frozen=True)
class Choice:
    """One of `options`, drawn uniformly (categorical for Optuna); enumerated by grid search.

    `log` only says how to read the values (log-spaced bins in results); it changes no sampling.
    """

    options: tuple[Scalar, ...]
    # Rarely wanted, so keyword-only: a choice of labels or margins is read on a linear scale by default.
    log: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _options(self.options, "choice", self.log))

    @property
    def kind(self) -> ValueKind:
        return kind_of(self.options[0])

    @property
    def log_scaled(self) -> bool:
        return self.log

    def to_spec(self) -> Any:
        return {"choice": list(self.options), **({"log": True} if self.log else {})}


@dataclass(frozen=True)
class Grid:
    """Values meant to be run one by one (grid search); random and Optuna sampling pick among them like a Choice."""

    values: tuple[Scalar, ...]
    # Keyword-only for the same reason as Choice.log; presets set it for grids over log-scaled hyperparameters.
    log: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _options(self.values, "grid", self.log))

    @property
    def kind(self) -> ValueKind:
        return kind_of(self.values[0])

    @property
    def log_scaled(self) -> bool:
        return self.log

    def to_spec(self) -> Any:
        return {"grid": list(self.values), **({"log": True} if self.log else {})}


Param = Union[Fixed, Uniform, LogUniform, IntRange, Choice, Grid]
