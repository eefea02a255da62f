"""What values one hyperparameter accepts, and fitting a search-space primitive to it."""

from __future__ import annotations

from dataclasses import dataclass

from search_spaces._params import Choice, Fixed, Grid, IntRange, LogUniform, Param, Uniform
from search_spaces._values import Scalar, ValueKind, coerce, kind_of, numeric_string_hint

__all__ = ["Domain", "conform"]


@dataclass(frozen=True)
class Domain:
    """The valid values of a hyperparameter: its type, numeric bounds, or the closed set of a string option.

    `kind=None` accepts any scalar type (training fields, which the study validates against TrainConfig).
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


def _kind_error(param: Param, kind: ValueKind) -> ValueError:
    hint = {ValueKind.INT: "; use {int: [low, high]}, grid or choice",
            ValueKind.FLOAT: "; use uniform, loguniform, grid or choice"}.get(kind, "; use a fixed value, grid or choice")
    spec = param.to_spec()
    values = next(iter(spec.values())) if isinstance(spec, dict) else spec
    return ValueError(f"expects {kind.value} values, got {spec!r}{numeric_string_hint(values) or hint}")


def _retyped(param: Param, kind: ValueKind) -> Param:
    """`param` with its values converted to `kind` (only int -> float widens)."""
    if param.kind is kind:
        return param
    if isinstance(param, Fixed):
        return Fixed(coerce(param.value, kind))
    if isinstance(param, Choice):
        return Choice(tuple(coerce(v, kind) for v in param.options), log=param.log)
    if isinstance(param, Grid):
        return Grid(tuple(coerce(v, kind) for v in param.values), log=param.log)
    raise _kind_error(param, kind)


def _extremes(param: Param) -> tuple[Scalar, ...]:
    """The values whose validity implies every value's validity (range end points, or all listed values)."""
    if isinstance(param, Fixed):
        return (param.value,)
    if isinstance(param, (Uniform, LogUniform, IntRange)):
        return (param.low, param.high)
    return param.options if isinstance(param, Choice) else param.values


def conform(param: Param, domain: Domain) -> Param:
    """`param` converted to the domain's type; ValueError if it can produce a value outside the domain."""
    fitted = param
    if domain.kind is not None:
        try:
            fitted = _retyped(param, domain.kind)
        except ValueError:
            raise _kind_error(param, domain.kind) from None
    bad = [v for v in _extremes(fitted) if not domain.contains(v)]
    if bad:
        raise ValueError(f"values must be {domain.describe()}, got {fitted.to_spec()!r}")
    return fitted
