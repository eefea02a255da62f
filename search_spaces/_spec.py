"""The YAML form of the primitives: a plain scalar is fixed; {uniform: [lo, hi]}, {loguniform: [lo, hi]},
{int: [lo, hi]} (+ log: true), {choice: [...]}, {grid: [...]} (+ log: true for either, to read them on a log scale).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from search_spaces._domain import Domain, conform
from search_spaces._params import Choice, Fixed, Grid, IntRange, LogUniform, Param, Uniform
from search_spaces._values import is_positive_number

__all__ = ["SPEC_KINDS", "parse_spec", "to_spec"]

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
                   and bool(values) and all(is_positive_number(v) for v in values))
    return Choice(values, log=log) if kind == "choice" else Grid(values, log=log)


def _parse(spec: object, inherit_log: bool) -> Param:
    if isinstance(spec, Mapping):
        return _from_mapping(spec, inherit_log)
    if isinstance(spec, (list, tuple)):
        raise ValueError(f"a bare list is ambiguous, write {{choice: [...]}} or {{grid: [...]}}, got {list(spec)!r}")
    return Fixed(spec)  # type: ignore[arg-type]  # Fixed validates the type


def parse_spec(spec: object, path: str, *, domain: Domain | None = None, inherit_log: bool = False) -> Param:
    """The primitive that YAML `spec` describes, fitted to `domain` when given.

    Any problem raises a one-line ValueError starting with `path` (the full key path in the config).
    `inherit_log`: the hyperparameter's default space is log-scaled, so a grid or choice of positive values is too.
    """
    try:
        param = _parse(spec, inherit_log)
        return conform(param, domain) if domain is not None else param
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def to_spec(param: Param) -> Any:
    """The YAML form of `param` (the inverse of parse_spec)."""
    return param.to_spec()
