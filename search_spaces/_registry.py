"""What dml_core says at run time (loss and miner names, their hyperparameters and defaults, compatibility),
merged with the default spaces of this package. The only module that imports dml_core: its names are the source
of truth, so a default space naming a hyperparameter the loss does not accept is an error here.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dml_core.losses import LOSSES, loss_hparams
from dml_core.miners import MINERS, compatible_miners, miner_hparams

from search_spaces._domain import Domain
from search_spaces._hparam import HParamDef
from search_spaces._loss_defaults import LOSS_DEFAULTS
from search_spaces._miner_defaults import MINER_DEFAULTS
from search_spaces._params import Param
from search_spaces._values import Scalar, coerce, kind_of

__all__ = ["NO_MINER", "HParamInfo", "loss_names", "miner_names", "allowed_miners", "loss_hparam_info",
           "miner_hparam_info"]

# The miner name that means "no miner" (dml_core.miners.compatible_miners always contains it).
NO_MINER = "none"


@dataclass(frozen=True)
class HParamInfo:
    """One hyperparameter of a loss or miner, as the config reader and the presets need it."""

    domain: Domain
    # The default search space, or None where this package has none (the loss's own default then applies).
    default_space: Param | None
    # The component's own default when it is a plain value, else the reference value of the default space entry.
    default: Scalar | None
    # True when the component's constructor has no default: every configuration must then carry a value.
    required: bool


def loss_names() -> tuple[str, ...]:
    return tuple(LOSSES)


def miner_names() -> tuple[str, ...]:
    """Every miner name, "none" first."""
    return (NO_MINER, *(m for m in MINERS if m != NO_MINER))


def allowed_miners(loss: str) -> tuple[str, ...]:
    """The miners `loss` may take, in miner_names() order (a frozenset's order changes with the hash seed)."""
    compatible = compatible_miners(loss) | {NO_MINER}
    return tuple(m for m in miner_names() if m in compatible)


def _scalar_default(value: Any) -> Scalar | None:
    try:
        kind_of(value)
    except ValueError:
        return None  # None, inspect.Parameter.empty, or a non-scalar default: nothing to record
    return value  # type: ignore[no-any-return]


def _info(owner: str, runtime: Mapping[str, Any], defaults: Mapping[str, HParamDef]) -> dict[str, HParamInfo]:
    """dml_core's hyperparameters of `owner` (the source of truth for names) with this package's knowledge."""
    stray = [name for name in defaults if name not in runtime]
    if stray:  # a renamed hyperparameter: fail before a study starts, not in every trial
        raise ValueError(f"the default space of {owner} names {stray[0]!r}, which it does not accept "
                         f"(it takes: {', '.join(runtime) or 'nothing'})")
    table: dict[str, HParamInfo] = {}
    for name in (*defaults, *(n for n in runtime if n not in defaults)):
        own = _scalar_default(runtime[name])
        known = defaults.get(name)
        if known is not None:
            domain = known.domain
        else:
            domain = Domain(kind_of(own)) if own is not None else Domain()
        default = own if own is not None else (known.reference if known is not None else None)
        if default is not None and domain.kind is not None:
            default = coerce(default, domain.kind)
        table[name] = HParamInfo(domain, known.space if known else None, default,
                                 required=runtime[name] is inspect.Parameter.empty)
    return table


def loss_hparam_info(loss: str) -> dict[str, HParamInfo]:
    """Every hyperparameter of `loss` that dml_core or this package knows, default spaces first."""
    return _info(f"loss {loss!r}", loss_hparams(loss), LOSS_DEFAULTS.get(loss, {}))


def miner_hparam_info(miner: str) -> dict[str, HParamInfo]:
    runtime = {} if miner == NO_MINER and miner not in MINERS else miner_hparams(miner)
    return _info(f"miner {miner!r}", runtime, MINER_DEFAULTS.get(miner, {}))
