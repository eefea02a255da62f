"""A hyperparameter as search_spaces knows it: its default search space, its valid values, a reference value."""

from __future__ import annotations

from dataclasses import dataclass

from search_spaces._domain import Domain, conform
from search_spaces._params import Param
from search_spaces._values import Scalar, ValueKind

__all__ = ["HParamDef", "real", "count", "label"]


@dataclass(frozen=True)
class HParamDef:
    space: Param
    domain: Domain
    # Only used where the loss itself has no default (PML's RankedListLoss requires margin and Tn): the sensitivity
    # preset fixes the unswept hyperparameters at their defaults, so a required one needs a value from somewhere.
    reference: Scalar | None = None

    def __post_init__(self) -> None:
        if conform(self.space, self.domain) != self.space:
            raise ValueError(f"default space {self.space.to_spec()!r} must already have the {self.domain.kind} type")
        if self.reference is not None and not self.domain.contains(self.reference):
            raise ValueError(f"reference={self.reference!r} must be {self.domain.describe()}")


def real(space: Param, *, low: float | None = None, high: float | None = None, open_low: bool = False,
         open_high: bool = False, reference: float | None = None) -> HParamDef:
    """A float hyperparameter valid in [low, high] (None: unbounded on that side)."""
    return HParamDef(space, Domain(ValueKind.FLOAT, low, high, open_low, open_high), reference)


def count(space: Param, *, low: int = 1, reference: int | None = None) -> HParamDef:
    """An int hyperparameter valid from `low` up."""
    return HParamDef(space, Domain(ValueKind.INT, low), reference)


def label(space: Param, options: tuple[str, ...]) -> HParamDef:
    """A str hyperparameter that takes one of `options`."""
    return HParamDef(space, Domain(ValueKind.STR, options=options))
