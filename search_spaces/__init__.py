"""search_spaces: the conditional hyperparameter space of a DML study, free of Ray.

A study samples a loss, then that loss's hyperparameters, then one of the miners it may take and the miner's
hyperparameters, then optional TrainConfig fields. A sampled configuration is one flat dict with dotted keys:
{"loss": "triplet", "loss.margin": 0.1, "miner": "triplet_margin", "miner.margin": 0.2, "train.lr": 0.001}.

Build a space with `space_from_config` (YAML) or the presets `full_comparison` / `sensitivity`; turn it into
configurations with `sample` (numpy Generator), `grid` (every combination) or `to_optuna` (define-by-run);
describe it with `columns` (Parquet schema) and `log_scale` (log-scaled columns per loss).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from search_spaces._columns import columns, log_scale
from search_spaces._config import SPACE_KEYS, space_from_config
from search_spaces._domain import Domain
from search_spaces._grid import grid
from search_spaces._hparam import HParamDef
from search_spaces._loss_defaults import LOSS_DEFAULTS
from search_spaces._miner_defaults import MINER_DEFAULTS
from search_spaces._params import Choice, Fixed, Grid, IntRange, LogUniform, Param, Uniform
from search_spaces._probe import boundary_configs, boundary_values
from search_spaces._presets import Preset, full_comparison, sensitivity
from search_spaces._registry import NO_MINER
from search_spaces._sample import sample
from search_spaces._space import Entry, LossSpace, MinerSpace, StudySpace
from search_spaces._spec import parse_spec, to_spec
from search_spaces._values import Scalar, ValueKind

__all__ = [
    "Fixed", "Uniform", "LogUniform", "IntRange", "Choice", "Grid", "Param", "Scalar", "ValueKind",
    "Domain", "HParamDef", "LOSS_DEFAULTS", "MINER_DEFAULTS", "NO_MINER",
    "Entry", "MinerSpace", "LossSpace", "StudySpace", "Preset", "full_comparison", "sensitivity",
    "SPACE_KEYS", "space_from_config", "parse_spec", "to_spec",
    "sample", "grid", "columns", "log_scale", "to_optuna", "boundary_values", "boundary_configs",
]


def to_optuna(space: StudySpace) -> Callable[[Any], dict[str, Scalar]]:
    """An Optuna define-by-run function `fn(trial: optuna.trial.BaseTrial) -> configuration` (see _optuna.py).

    Imports optuna on first use only: sampling, grids and schemas need no Optuna.
    """
    from search_spaces._optuna import to_optuna as adapter

    return adapter(space)
