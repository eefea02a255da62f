"""Looking up a name in one of dml_core's explicit name tables (losses, miners, data sets), with one error text.

Every table is a plain dict from name to entry; a wrong name or an unknown keyword raises a one-line ValueError
that lists what is valid, so a typo in a config is fixed from the message alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

__all__ = ["check_known", "lookup"]

T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """`table[name]`; ValueError `unknown <what> 'x'; expected one of: a, b` when it is not there."""
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"unknown {what} {name!r}; expected one of: {', '.join(table)}")
    return table[name]


def check_known(given: Iterable[str], valid: Iterable[str], what: str, owner: str) -> None:
    """ValueError naming every key of `given` that `valid` lacks: `unknown <what> x, y for <owner>; expected: ...`."""
    valid = list(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)} for {owner}; expected: {', '.join(valid) or '(none)'}")
