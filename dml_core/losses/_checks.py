"""Constructor checks for loss hyperparameters: one-line ValueErrors that name the field and the bad value."""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["check_bool", "check_finite", "check_at_least", "check_below", "check_positive", "check_positive_int",
           "check_unit_interval"]


def _is_number(value: object) -> bool:
    # numbers.Real admits numpy scalars, which samplers may hand over; `margin=True` is a typo, not a margin.
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_finite(owner: str, name: str, value: object) -> float:
    """A finite real number, returned as float."""
    if not _is_number(value) or not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise ValueError(f"{owner}: {name} must be a finite number, got {name}={value!r}")
    return float(value)  # type: ignore[arg-type]


def check_at_least(owner: str, name: str, value: object, low: float) -> float:
    """A finite number >= `low`."""
    number = check_finite(owner, name, value)
    if number < low:
        raise ValueError(f"{owner}: {name} must be >= {low}, got {name}={value!r}")
    return number


def check_positive(owner: str, name: str, value: object) -> float:
    """A finite number > 0."""
    number = check_finite(owner, name, value)
    if number <= 0:
        raise ValueError(f"{owner}: {name} must be > 0, got {name}={value!r}")
    return number


def check_unit_interval(owner: str, name: str, value: object) -> float:
    """A finite number in [0, 1]."""
    number = check_finite(owner, name, value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{owner}: {name} must be in [0, 1], got {name}={value!r}")
    return number


def check_bool(owner: str, name: str, value: object) -> bool:
    """True or False (numpy's bool too); 1, 0 and strings are refused as likely mistakes."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}: {name} must be True or False, got {name}={value!r}")
    return bool(value)


def check_below(owner: str, name: str, value: object, high: float) -> float:
    """A finite number in [0, high)."""
    number = check_finite(owner, name, value)
    if not 0.0 <= number < high:
        raise ValueError(f"{owner}: {name} must be in [0, {high:g}), got {name}={value!r}")
    return number


def check_positive_int(owner: str, name: str, value: object) -> int:
    """An integer >= 1 (numpy integers too); floats and bools are refused."""
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) or int(value) < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {name}={value!r}")
    return int(value)
