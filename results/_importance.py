"""Hyperparameter importance for one loss with Optuna's evaluators, from the trials table.

The table becomes an in-memory Optuna study: one COMPLETE trial per scored row, its non-null hyperparameters as
params (a conditional one, such as a miner's margin, is simply absent where it was not sampled), its metric as the
value, and the study direction from the metric's mode. Optuna 5's default evaluator, PED-ANOVA, reads the direction
from the study and handles conditional parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from results._best import SCORED, scored_rows
from dml_core.mode import Mode
from results._schema import hyperparameter_columns, metric_column, require_loss, resolve_mode, study_metric
from results.study_dir import Status
from results._sensitivity import is_log_scale

if TYPE_CHECKING:  # optuna is imported when importance is computed: `dml-study show` never needs it
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.importance import BaseImportanceEvaluator

__all__ = ["MIN_TRIALS", "importance"]

# PED-ANOVA contrasts the top 10% of trials with all of them: below 20 trials that top is one or two trials.
MIN_TRIALS = 20


def importance(trials: pd.DataFrame, *, loss: str, metric: str | None = None, mode: Mode | str | None = None,
               params: Sequence[str] | None = None, min_trials: int = MIN_TRIALS,
               evaluator: BaseImportanceEvaluator | None = None,
               statuses: Iterable[Status | str] = SCORED) -> pd.Series:
    """Importance (summing to 1) of each hyperparameter of `loss` for `metric`, largest first.

    `metric` defaults to the study's. Hyperparameters are the loss's non-null dotted columns and `miner` (or
    `params`); those
    with a single value are dropped. Distributions come from the column types: float -> FloatDistribution, int ->
    IntDistribution (log-scaled as in study.json, else positive values over two decades), str/bool ->
    CategoricalDistribution. `evaluator=None` is Optuna's default (PED-ANOVA). Fewer than `min_trials` scored
    trials raise ValueError.
    """
    if isinstance(min_trials, bool) or not isinstance(min_trials, (int, np.integer)) or min_trials < 2:
        raise ValueError(f"min_trials must be an integer of at least 2, got {min_trials=}")
    rows = require_loss(trials, loss)
    column = metric_column(trials, study_metric(trials, metric))
    direction = resolve_mode(column, mode, trials)
    rows = scored_rows(rows, column, statuses)
    rows = rows[np.isfinite(rows[column].astype("float64"))]
    if len(rows) < min_trials:
        raise ValueError(f"importance for loss {loss!r} needs at least {min_trials} scored trials with {column}; "
                         f"it has {len(rows)}")
    names = _varying(rows, loss, params)
    log_scale = trials.attrs.get("log_scale")
    distributions = {c: _distribution(rows[c], log=is_log_scale(rows[c].dropna(), param=c, loss=loss,
                                                                log_scale=log_scale)) for c in names}
    study = _in_memory_study(direction)
    study.add_trials(_frozen_trials(rows, column, distributions))
    # optuna.importance imports scikit-learn (for fANOVA): seconds, so `import results` leaves it until asked.
    from optuna.importance import get_param_importances

    scores = get_param_importances(study, evaluator=evaluator)
    result = pd.Series(scores, name="importance", dtype="float64").sort_values(ascending=False, kind="stable")
    result.index.name = "param"
    return result


def _varying(rows: pd.DataFrame, loss: str, params: Sequence[str] | None) -> list[str]:
    available = hyperparameter_columns(rows)
    if params is not None:
        unknown = [p for p in params if p not in available]
        if unknown:
            raise ValueError(f"hyperparameter(s) {', '.join(map(repr, unknown))} are not set by loss {loss!r}; "
                             f"available: {', '.join(available) or '(none)'}")
        available = list(params)
    names = [c for c in available if rows[c].nunique(dropna=True) > 1]
    if not names:
        raise ValueError(f"no hyperparameter of loss {loss!r} takes more than one value in the table; "
                         f"constant: {', '.join(available) or '(none)'}")
    return names


def _distribution(values: pd.Series, *, log: bool) -> BaseDistribution:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    present = values.dropna()
    if pd.api.types.is_bool_dtype(present) or not pd.api.types.is_numeric_dtype(present):
        return CategoricalDistribution(sorted(_plain(present.unique().tolist()), key=repr))
    low, high = present.min(), present.max()
    if pd.api.types.is_integer_dtype(present):
        return IntDistribution(int(low), int(high), log=log and low >= 1)
    return FloatDistribution(float(low), float(high), log=log and low > 0)


def _plain(values: list[Any]) -> list[Any]:
    """numpy scalars -> Python scalars: Optuna's categorical choices must be None, bool, int, float or str."""
    return [v.item() if hasattr(v, "item") else v for v in values]


def _frozen_trials(rows: pd.DataFrame, column: str,
                   distributions: dict[str, BaseDistribution]) -> list[optuna.trial.FrozenTrial]:
    import optuna

    # Column-wise conversion once; the loop below only assembles dicts (Optuna needs one object per trial).
    columns = {name: _plain(rows[name].astype(object).where(rows[name].notna(), None).tolist())
               for name in distributions}
    values = rows[column].astype("float64").tolist()
    frozen = []
    for i, value in enumerate(values):
        params = {name: col[i] for name, col in columns.items() if col[i] is not None}
        frozen.append(optuna.trial.create_trial(params=params, value=value,
                                                distributions={name: distributions[name] for name in params}))
    return frozen


class _DropStudyCreated(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("A new study created in memory")


def _in_memory_study(direction: Mode) -> optuna.Study:
    """An in-memory study, without the INFO line Optuna logs for each (one per loss would flood a report run)."""
    import optuna

    logger = logging.getLogger("optuna.storages._in_memory")
    quiet = _DropStudyCreated()
    logger.addFilter(quiet)
    try:
        return optuna.create_study(direction="maximize" if direction is Mode.MAX else "minimize")
    finally:
        logger.removeFilter(quiet)
