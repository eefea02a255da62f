"""Scalar values a hyperparameter can take, and their column types."""

from __future__ import annotations

import math
from enum import Enum
from typing import Union

__all__ = ["Scalar", "ValueKind", "kind_of", "common_kind", "coerce", "is_positive_number", "numeric_string_hint"]

# bool is listed first only for readers: at run time `isinstance(True, int)` holds, so kind_of checks bool first.
Scalar = Union[bool, int, float, str]


class ValueKind(str, Enum):
    """The column type of a hyperparameter; the values are the strings `columns()` reports."""

    FLOAT = "float"
    INT = "int"
    STR = "str"
    BOOL = "bool"


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


def common_kind(values: tuple[Scalar, ...]) -> ValueKind:
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
