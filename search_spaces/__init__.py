"""search_spaces: the conditional hyperparameter space of a DML study, free of Ray and Optuna.

A study samples a loss, then that loss's hyperparameters, then one of the miners it may take and the miner's
hyperparameters, then optional training and model fields. A sampled configuration is one flat dict, each value
under its one name (search_spaces.space says the rule):
{"loss": "triplet", "triplet.margin": 0.1, "miner": "triplet_margin", "miner.triplet_margin.margin": 0.2,
"train.lr": 0.001}.

Four modules, one concept each:
- `distributions`: Fixed, Uniform, LogUniform, IntRange, Choice, Grid (each knows its bounds, YAML form, grid
  values, how to sample and how to ask Optuna) and the Domain of values a hyperparameter accepts;
- `registry`: every loss's and miner's hyperparameters, default spaces (with their sources) and domains;
- `space`: the study space, the naming rule, and walking the space (columns, sample, grid, suggest to Optuna,
  boundary configurations, the TrainConfig of a configuration);
- `config`: the YAML `search` section and the two presets (full comparison, sensitivity sweep).
"""

from __future__ import annotations

from search_spaces.config import SPACE_KEYS, Preset, full_comparison_space, sensitivity_space, space_from_config
from search_spaces.distributions import (Choice, Domain, Fixed, Grid, IntRange, LogUniform, Param, Scalar, Uniform,
                                         ValueKind, parse_spec)
from search_spaces.registry import LOSS_DEFAULTS, MINER_DEFAULTS, NO_MINER, HParamDef
from search_spaces.space import (LOSS, MINER, MODEL_FIELDS, REPEAT_NAMES, TRAIN_FIELDS, Entry, LossSpace, MinerSpace,
                                 StudySpace, boundary_configs, columns, grid, log_scale, loss_param_name,
                                 miner_param_name, sample, suggest, suggest_loss, to_train_config)

__all__ = [
    "Fixed", "Uniform", "LogUniform", "IntRange", "Choice", "Grid", "Param", "Scalar", "ValueKind", "Domain",
    "parse_spec", "HParamDef", "LOSS_DEFAULTS", "MINER_DEFAULTS", "NO_MINER",
    "LOSS", "MINER", "TRAIN_FIELDS", "MODEL_FIELDS", "REPEAT_NAMES", "Entry", "MinerSpace", "LossSpace", "StudySpace",
    "loss_param_name", "miner_param_name", "columns", "log_scale", "sample", "grid", "suggest", "suggest_loss",
    "boundary_configs", "to_train_config",
    "Preset", "full_comparison_space", "sensitivity_space", "SPACE_KEYS", "space_from_config",
]
