"""The distributions a search space is made of, and the values one hyperparameter accepts.

One frozen dataclass per kind of distribution, each knowing everything about itself (as optuna/distributions.py):
its column type (`kind`), whether its values are best read on a log scale (`log_scaled`), its YAML form
(`to_spec`), the values a validity check must try (`boundary_values`), the values grid search runs
(`grid_values`), how to draw one value (`sample`) and how to ask an Optuna trial for one (`suggest`). Code that
walks a space calls these and has no branch per kind.

The YAML form: a plain scalar is fixed; {uniform: [lo, hi]}, {loguniform: [lo, hi]}, {int: [lo, hi]} (+ log: true),
{choice: [...]}, {grid: [...]} (+ log: true for either, to read them on a log scale).

`Domain` is the other half: the values a hyperparameter accepts (its type, bounds, options); `Domain.fit` turns a
distribution into one of the hyperparameter's type, or refuses it when it could produce an invalid value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, Union

import numpy as np

from dml_core.errors import ConfigError

__all__ = [
    "SPEC_KINDS", "Choice", "Domain", "Fixed", "Grid", "IntRange", "LogUniform", "Param", "Scalar", "Uniform",
    "ValueKind", "kind_of", "parse_spec",
]

# bool is listed first only for readers: at run time `isinstance(True, int)` holds, so kind_of checks bool first.
Scalar = Union[bool, int, float, str]


class ValueKind(str, Enum):
    """The column type of a hyperparameter; the values are the strings a space's `columns()` reports."""

    FLOAT = "float"
    INT = "int"
    STR = "str"
    BOOL = "bool"


class SuggestingTrial(Protocol):
    """The part of `optuna.trial.BaseTrial` a distribution uses (duck-typed: this module imports no Optuna)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = ...) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = ...) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


# ---------------------------------------------------------------------------------------------------------------
# Scalars.


def kind_of(value: object) -> ValueKind:
    """The kind of one scalar; anything else (None, lists, NaN, inf) raises ValueError."""
    if isinstance(value, bool):
        return ValueKind.BOOL
    if isinstance(value, int):
        return ValueKind.INT
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"values must be finite, got {value!r}")
        return ValueKind.FLOAT
    if isinstance(value, str):
        return ValueKind.STR
    raise ValueError(f"values must be bool, int, float or str, got {value!r} ({type(value).__name__})")


def numeric_string_hint(values: object) -> str:
    """A hint for the YAML 1.1 trap: PyYAML reads `1e-3` (no dot) as the string '1e-3'."""
    for value in values if isinstance(values, (list, tuple)) else (values,):
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                continue
            return f"; YAML reads {value} as a string, write it with a dot (1.0e-3)"
    return ""


def _common_kind(values: tuple[Scalar, ...]) -> ValueKind:
    """One kind for several values: ints mixed with floats make floats; any other mix is an error."""
    kinds = {kind_of(v) for v in values}
    if kinds == {ValueKind.INT, ValueKind.FLOAT}:
        return ValueKind.FLOAT
    if len(kinds) != 1:
        names = ", ".join(sorted(k.value for k in kinds))
        raise ValueError(f"values must share one type, got a mix of {names}: {list(values)!r}")
    return kinds.pop()


def coerce(value: Scalar, kind: ValueKind) -> Scalar:
    """`value` as `kind`; only int -> float widens, everything else must already match."""
    actual = kind_of(value)
    if actual is kind:
        return value
    if actual is ValueKind.INT and kind is ValueKind.FLOAT:
        return float(value)
    raise ValueError(f"expects {kind.value} values, got {value!r} ({actual.value})")


def is_positive_number(value: Scalar) -> bool:
    return kind_of(value) in (ValueKind.INT, ValueKind.FLOAT) and value > 0


def _number(value: object, what: str) -> float:
    """A finite int or float (never bool) as float; `what` names the field in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}{numeric_string_hint(value)}")
    return float(value)


def _integer(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an int, got {value!r}")
    return value


def _pick(options: tuple[Scalar, ...], rng: np.random.Generator) -> Scalar:
    return options[int(rng.integers(len(options)))]


def _categorical(trial: SuggestingTrial, name: str, options: tuple[Scalar, ...]) -> Scalar:
    # One option is not a choice: asking Optuna would only add a constant parameter to its model.
    return options[0] if len(options) == 1 else trial.suggest_categorical(name, options)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------------------------
# Distributions.


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

    def boundary_values(self) -> tuple[Scalar, ...]:
        return (self.value,)

    def grid_values(self) -> tuple[Scalar, ...]:
        return (self.value,)

    def sample(self, rng: np.random.Generator) -> Scalar:
        return self.value

    def suggest(self, trial: SuggestingTrial, name: str) -> Scalar:
        return self.value

    def retyped(self, kind: ValueKind) -> Fixed:
        return self if self.kind is kind else Fixed(coerce(self.value, kind))


@dataclass(frozen=True)
class _Range:
    """What the two float ranges share: validated [low, high], both ends as boundary values, no grid."""

    low: float
    high: float

    def _checked(self, name: str) -> None:
        low, high = _number(self.low, f"{name} low"), _number(self.high, f"{name} high")
        if not low < high:
            raise ValueError(f"{name} needs low < high, got low={self.low!r}, high={self.high!r}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def kind(self) -> ValueKind:
        return ValueKind.FLOAT

    def boundary_values(self) -> tuple[Scalar, ...]:
        return (self.low, self.high)

    def grid_values(self) -> tuple[Scalar, ...]:
        raise ValueError(f"grid search cannot enumerate {self.to_spec()!r}; use grid, choice or a fixed value")

    def to_spec(self) -> Any:
        raise NotImplementedError

    def retyped(self, kind: ValueKind) -> Any:
        if kind is not ValueKind.FLOAT:
            raise ValueError(f"expects {kind.value} values, got a float range {self.to_spec()!r}")
        return self


@dataclass(frozen=True)
class Uniform(_Range):
    """A float drawn uniformly from [low, high]."""

    def __post_init__(self) -> None:
        self._checked("uniform")

    @property
    def log_scaled(self) -> bool:
        return False

    def to_spec(self) -> Any:
        return {"uniform": [self.low, self.high]}

    def sample(self, rng: np.random.Generator) -> Scalar:
        return float(rng.uniform(self.low, self.high))  # a plain float: numpy scalars would leak into Parquet

    def suggest(self, trial: SuggestingTrial, name: str) -> Scalar:
        return trial.suggest_float(name, self.low, self.high)


@dataclass(frozen=True)
class LogUniform(_Range):
    """A float whose logarithm is uniform on [log low, log high]: for scales and temperatures."""

    def __post_init__(self) -> None:
        self._checked("loguniform")
        if not self.low > 0:
            raise ValueError(f"loguniform needs 0 < low < high, got low={self.low!r}, high={self.high!r}")

    @property
    def log_scaled(self) -> bool:
        return True

    def to_spec(self) -> Any:
        return {"loguniform": [self.low, self.high]}

    def sample(self, rng: np.random.Generator) -> Scalar:
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))

    def suggest(self, trial: SuggestingTrial, name: str) -> Scalar:
        return trial.suggest_float(name, self.low, self.high, log=True)


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

    def boundary_values(self) -> tuple[Scalar, ...]:
        return (self.low, self.high)

    def grid_values(self) -> tuple[Scalar, ...]:
        raise ValueError(f"grid search cannot enumerate {self.to_spec()!r}; use grid, choice or a fixed value")

    def sample(self, rng: np.random.Generator) -> Scalar:
        if not self.log:
            return int(rng.integers(self.low, self.high + 1))
        # Each integer gets the log-width of [k - 1/2, k + 1/2], as Optuna's log int distribution does.
        value = round(math.exp(rng.uniform(math.log(self.low - 0.5), math.log(self.high + 0.5))))
        return int(min(max(value, self.low), self.high))

    def suggest(self, trial: SuggestingTrial, name: str) -> Scalar:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def retyped(self, kind: ValueKind) -> IntRange:
        if kind is not ValueKind.INT:
            raise ValueError(f"expects {kind.value} values, got an int range {self.to_spec()!r}")
        return self


def _options(values: object, what: str, log: object) -> tuple[Scalar, ...]:
    """Validated, distinct options of one kind (ints widened to floats when mixed with floats)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{what} needs a list of values, got {values!r}")
    if not values:
        raise ValueError(f"{what} needs at least one value, got []")
    kind = _common_kind(tuple(values))
    options = tuple(coerce(v, kind) for v in values)
    if len(set(options)) != len(options):
        raise ValueError(f"{what} values must be distinct, got {list(values)!r}")
    if not isinstance(log, bool):
        raise ValueError(f"{what} log must be true or false, got log={log!r}")
    if log and not all(is_positive_number(v) for v in options):
        raise ValueError(f"{what} with log needs positive numbers, got {list(values)!r}")
    return options


@dataclass(frozen=True)
class _Listed:
    """What Choice and Grid share: a list of values, each a boundary value, each run by grid search.

    `log` only says how to read the values (log-spaced bins in results); it changes no sampling.
    """

    values: tuple[Scalar, ...]
    # Rarely wanted, so keyword-only: a list of labels or margins is read on a linear scale by default.
    log: bool = field(default=False, kw_only=True)

    def _checked(self, what: str) -> None:
        object.__setattr__(self, "values", _options(self.values, what, self.log))

    @property
    def kind(self) -> ValueKind:
        return kind_of(self.values[0])

    @property
    def log_scaled(self) -> bool:
        return self.log

    def _spec(self, what: str) -> Any:
        return {what: list(self.values), **({"log": True} if self.log else {})}

    def boundary_values(self) -> tuple[Scalar, ...]:
        return self.values

    def grid_values(self) -> tuple[Scalar, ...]:
        return self.values

    def sample(self, rng: np.random.Generator) -> Scalar:
        return _pick(self.values, rng)

    def suggest(self, trial: SuggestingTrial, name: str) -> Scalar:
        return _categorical(trial, name, self.values)

    def retyped(self, kind: ValueKind) -> Any:
        if self.kind is kind:
            return self
        return type(self)(tuple(coerce(v, kind) for v in self.values), log=self.log)


@dataclass(frozen=True)
class Choice(_Listed):
    """One of `values`, drawn uniformly (categorical for Optuna); enumerated by grid search."""

    def __post_init__(self) -> None:
        self._checked("choice")

    def to_spec(self) -> Any:
        return self._spec("choice")


@dataclass(frozen=True)
class Grid(_Listed):
    """Values meant to be run one by one (grid search); random and Optuna sampling pick among them like a Choice."""

    def __post_init__(self) -> None:
        self._checked("grid")

    def to_spec(self) -> Any:
        return self._spec("grid")


Param = Union[Fixed, Uniform, LogUniform, IntRange, Choice, Grid]
PARAM_TYPES = (Fixed, Uniform, LogUniform, IntRange, Choice, Grid)


# ---------------------------------------------------------------------------------------------------------------
# The values a hyperparameter accepts.


@dataclass(frozen=True)
class Domain:
    """The valid values of a hyperparameter: its type, numeric bounds, or the closed set of a string option.

    `kind=None` accepts any scalar type (training fields, which the study checks by building a TrainConfig).
    """

    kind: ValueKind | None = None
    # Bounds of validity, not of the default search range: None leaves that side open-ended.
    low: float | None = None
    high: float | None = None
    # Exclusive bounds for quantities that break at the bound itself (a temperature of 0 divides by zero).
    open_low: bool = False
    open_high: bool = False
    # For string hyperparameters (type_of_triplets): every accepted value.
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"domain needs low < high, got low={self.low!r}, high={self.high!r}")
        if self.options and self.kind is not ValueKind.STR:
            raise ValueError(f"domain options are for str hyperparameters, got kind={self.kind!r}")

    def contains(self, value: Scalar) -> bool:
        if kind_of(value) in (ValueKind.INT, ValueKind.FLOAT):
            above = self.low is None or (value > self.low if self.open_low else value >= self.low)
            below = self.high is None or (value < self.high if self.open_high else value <= self.high)
            return above and below
        return not self.options or value in self.options

    def describe(self) -> str:
        """The accepted values in words, for error messages: '> 0', 'in [0, 1]', 'one of all, hard'."""
        if self.options:
            return "one of " + ", ".join(self.options)
        left = f"{'(' if self.open_low else '['}{self.low:g}" if self.low is not None else None
        right = f"{self.high:g}{')' if self.open_high else ']'}" if self.high is not None else None
        if left and right:
            return f"in {left}, {right}"
        if left:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        if right:
            return f"{'<' if self.open_high else '<='} {self.high:g}"
        return f"any {self.kind.value if self.kind else 'scalar'}"

    def fit(self, param: Param) -> Param:
        """`param` converted to this domain's type; ValueError if it can produce a value outside the domain.

        Checking the boundary values is enough: a range's ends bound all its values, a list is all its values.
        """
        fitted = param
        if self.kind is not None:
            try:
                fitted = param.retyped(self.kind)
            except ValueError:
                raise self._kind_error(param) from None
        bad = [v for v in fitted.boundary_values() if not self.contains(v)]
        if bad:
            raise ValueError(f"values must be {self.describe()}, got {fitted.to_spec()!r}")
        return fitted

    def _kind_error(self, param: Param) -> ValueError:
        assert self.kind is not None  # only called when the domain has a kind
        hint = {ValueKind.INT: "; use {int: [low, high]}, grid or choice",
                ValueKind.FLOAT: "; use uniform, loguniform, grid or choice"}.get(
            self.kind, "; use a fixed value, grid or choice")
        spec = param.to_spec()
        values = next(iter(spec.values())) if isinstance(spec, dict) else spec
        return ValueError(f"expects {self.kind.value} values, got {spec!r}{numeric_string_hint(values) or hint}")


# ---------------------------------------------------------------------------------------------------------------
# The YAML form.

SPEC_KINDS = ("uniform", "loguniform", "int", "choice", "grid")
_WITH_LOG = ("int", "choice", "grid")


def _pair(values: object, kind: str) -> tuple[Any, Any]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 2:
        raise ValueError(f"{kind} needs [low, high], got {values!r}")
    return values[0], values[1]


def _from_mapping(spec: Mapping[Any, Any], inherit_log: bool) -> Param:
    kinds = [k for k in spec if k in SPEC_KINDS]
    if len(kinds) != 1:
        raise ValueError(f"expected exactly one of {', '.join(SPEC_KINDS)}, got keys {list(spec)!r}")
    kind = kinds[0]
    unknown = [k for k in spec if k not in (kind, "log")]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in a {kind} spec; only 'log' may go with it")
    if "log" in spec and kind not in _WITH_LOG:
        raise ValueError(f"{kind} takes no log option; use loguniform for a log-scaled float range")
    values = spec[kind]
    if kind == "uniform":
        return Uniform(*_pair(values, kind))
    if kind == "loguniform":
        return LogUniform(*_pair(values, kind))
    if kind == "int":
        return IntRange(*_pair(values, kind), log=spec.get("log", False))
    # A grid or choice over a log-scaled hyperparameter stays log-scaled unless the YAML says otherwise.
    log = spec.get("log", inherit_log and isinstance(values, Sequence) and not isinstance(values, str)
                   and bool(values) and all(_is_positive_scalar(v) for v in values))
    return Choice(values, log=log) if kind == "choice" else Grid(values, log=log)


def _is_positive_scalar(value: object) -> bool:
    try:
        return is_positive_number(value)  # type: ignore[arg-type]
    except ValueError:
        return False  # not a scalar at all: the Choice or Grid constructor says so


def _parse(spec: object, inherit_log: bool) -> Param:
    if isinstance(spec, Mapping):
        return _from_mapping(spec, inherit_log)
    if isinstance(spec, (list, tuple)):
        raise ValueError(f"a bare list is ambiguous, write {{choice: [...]}} or {{grid: [...]}}, got {list(spec)!r}")
    return Fixed(spec)  # type: ignore[arg-type]  # Fixed validates the type


def parse_spec(spec: object, path: str, *, domain: Domain | None = None, inherit_log: bool = False) -> Param:
    """The distribution that YAML `spec` describes, fitted to `domain` when given.

    Any problem raises ConfigError at `path` (the full key path in the config). `inherit_log`: the
    hyperparameter's default space is log-scaled, so a grid or choice of positive values is too.
    """
    try:
        param = _parse(spec, inherit_log)
        return domain.fit(param) if domain is not None else param
    except ValueError as error:
        raise ConfigError(path, str(error)) from None
