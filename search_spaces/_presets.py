"""The two ready-made study spaces: a full comparison of losses, and a one-parameter sensitivity sweep."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import Enum

from search_spaces._domain import conform
from search_spaces._params import Fixed, Grid, Param
from search_spaces._registry import (NO_MINER, HParamInfo, allowed_miners, loss_hparam_info, loss_names,
                                     miner_hparam_info, miner_names)
from search_spaces._space import LossSpace, MinerSpace, StudySpace
from search_spaces._values import Scalar, is_positive_number

__all__ = ["Preset", "full_comparison", "sensitivity"]


class Preset(str, Enum):
    FULL_COMPARISON = "full_comparison"
    SENSITIVITY = "sensitivity"


def _known_names(names: Sequence[str] | None, known: tuple[str, ...], path: str, what: str) -> tuple[str, ...]:
    """`names` checked against `known` (all of `known` when None)."""
    if names is None:
        return known
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ValueError(f"{path}: expected a non-empty list of {what} names, got {names!r}")
    for name in names:
        if name not in known:
            raise ValueError(f"{path}: unknown {what} {name!r}; expected one of: {', '.join(known)}")
        if list(names).count(name) > 1:
            raise ValueError(f"{path}: {what} {name!r} appears twice")
    return tuple(names)


def _fit(build: Callable[[], Param], info: HParamInfo, path: str) -> Param:
    """The primitive `build` makes, fitted to the hyperparameter; any ValueError gets `path` in front."""
    try:
        return conform(build(), info.domain)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _params(info: Mapping[str, HParamInfo], overrides: Mapping[str, Param]) -> dict[str, Param]:
    """The default space with `overrides` applied (StudySpace checks the names and fits the values)."""
    return {**{h: i.default_space for h, i in info.items() if i.default_space is not None}, **overrides}


def _check_targets(overrides: Mapping[str, object], used: Sequence[str], path: str, what: str) -> None:
    for name in overrides:
        if name not in used:
            raise ValueError(f"{path}.{name}: {what} {name!r} is not part of this study (selected: {', '.join(used)})")


def full_comparison(losses: Sequence[str] | None = None, miners: Sequence[str] | None = None, *,
                    loss_params: Mapping[str, Mapping[str, Param]] | None = None,
                    miner_params: Mapping[str, Mapping[str, Param]] | None = None,
                    train: Mapping[str, Param] | None = None, path: str = "search") -> StudySpace:
    """Every loss (or those in `losses`) with its default space and all its compatible miners (those also in
    `miners`, when given), with `loss_params[loss][h]` / `miner_params[miner][h]` replacing default spaces.
    """
    loss_params, miner_params = loss_params or {}, miner_params or {}
    selected = _known_names(losses, loss_names(), f"{path}.losses", "loss")
    allowed = _known_names(miners, miner_names(), f"{path}.miners", "miner")
    _check_targets(loss_params, selected, f"{path}.space", "loss")
    loss_spaces = []
    for loss in selected:
        taken = tuple(m for m in allowed_miners(loss) if m in allowed)
        if not taken:
            raise ValueError(f"{path}.miners: no miner left for loss {loss!r}; it takes: "
                             f"{', '.join(allowed_miners(loss))}")
        params = _params(loss_hparam_info(loss), loss_params.get(loss, {}))
        loss_spaces.append(LossSpace(loss, params, taken))
    used = [m for m in miner_names() if any(m in space.miners for space in loss_spaces)]
    _check_targets(miner_params, used, f"{path}.space.miners", "miner")
    miner_spaces = {m: MinerSpace(m, _params(miner_hparam_info(m), miner_params.get(m, {}))) for m in used}
    return StudySpace(tuple(loss_spaces), miner_spaces, train or {}, path)


def _swept(info: HParamInfo, values: Sequence[Scalar], path: str) -> Param:
    """The swept values as a grid, log-scaled like the hyperparameter's default space when all are positive."""
    swept = _fit(lambda: Grid(values), info, path)  # type: ignore[arg-type]  # Grid checks the sequence
    if isinstance(swept, Grid) and info.default_space is not None and info.default_space.log_scaled and all(
            is_positive_number(v) for v in swept.values):
        return Grid(swept.values, log=True)
    return swept


def sensitivity(loss: str, param: str, values: Sequence[Scalar], *, fixed: Mapping[str, Scalar] | None = None,
                train: Mapping[str, Param] | None = None, path: str = "search") -> StudySpace:
    """One loss, `param` on a grid of `values`, every other hyperparameter with a default space fixed (at
    `fixed[h]`, else the loss's default), no miner. Other hyperparameters keep the loss's own defaults.
    """
    fixed = fixed or {}
    where = f"{path}.sensitivity"
    _known_names([loss], loss_names(), f"{where}.loss", "loss")
    info = loss_hparam_info(loss)
    if param not in info:
        raise ValueError(f"{where}.param: unknown hyperparameter {param!r} of loss {loss!r}; "
                         f"expected one of: {', '.join(info) or '(none)'}")
    params: dict[str, Param] = {param: _swept(info[param], values, f"{where}.values")}
    for h, value in fixed.items():
        if h == param:
            raise ValueError(f"{where}.fixed.{h}: {h!r} is the swept parameter; it cannot also be fixed")
        if h not in info:
            raise ValueError(f"{where}.fixed.{h}: unknown hyperparameter of loss {loss!r}; "
                             f"expected one of: {', '.join(info)}")
        params[h] = _fit(lambda: Fixed(value), info[h], f"{where}.fixed.{h}")  # noqa: B023  # called at once
    for h, i in info.items():
        if h in params or (i.default_space is None and not i.required):
            continue
        if i.default is None:
            if i.required:
                raise ValueError(f"{where}.fixed.{h}: loss {loss!r} requires {h!r}; give it a value here")
            continue  # a None default (ranked_list's alpha = 1 + margin / 2): the loss works it out
        params[h] = Fixed(i.default)
    ordered = {h: params[h] for h in info if h in params}
    return StudySpace((LossSpace(loss, ordered, (NO_MINER,)),), {}, train or {}, path)
