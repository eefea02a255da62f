"""The reality-check table: per loss, its best configuration's mean +- 95% confidence interval over repeats.

Repeats are the trials of one configuration (same `config_id` in one study) with other seeds or folds. The interval
is Student's t: mean +- t(1 - (1 - confidence) / 2, n - 1) * s / sqrt(n), s the sample standard deviation
(ddof=1); it is undefined (NaN) for a single run. The t quantile is scipy.special.stdtrit (exact for any n and
confidence; scipy is a project dependency, and optuna.importance imports it anyway).

Choosing the best configuration and reporting it on the same runs is optimistic (the winner's luck counts). The
reality-check protocol avoids that: choose on a cross-validation study (`train.fold`, validation classes), then
summarise a second study that runs the chosen configurations with several seeds on the test classes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from results._best import require_columns, row_params, scored_rows
from dml_core.mode import Mode
from results._schema import hyperparameter_columns, metric_column, metric_names, resolve_mode, study_metric
from results.study_dir import Status

__all__ = ["confidence_half_width", "summary"]

# A stopped run trained for fewer epochs: averaging it with full runs would mix budgets.
_FULL_RUNS = (Status.COMPLETED,)


def confidence_half_width(std: pd.Series | np.ndarray, n: pd.Series | np.ndarray,
                          confidence: float = 0.95) -> np.ndarray:
    """t(1 - alpha/2, n - 1) * std / sqrt(n) elementwise; NaN where n < 2."""
    # Student t's inverse CDF; scipy.special imports in a fraction of scipy.stats's time, and only when asked.
    from scipy.special import stdtrit

    n = np.asarray(n, dtype=float)
    std = np.asarray(std, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = stdtrit(np.where(n >= 2, n - 1, np.nan), 0.5 + confidence / 2)
        return np.where(n >= 2, t * std / np.sqrt(n), np.nan)


def summary(trials: pd.DataFrame, *, metrics: Sequence[str] | None = None, metric: str | None = None,
            mode: Mode | str | None = None, confidence: float = 0.95, min_repeats: int = 2,
            by: Sequence[str] = ("loss",), statuses: Iterable[Status | str] = _FULL_RUNS) -> pd.DataFrame:
    """Per loss (per `by` group): its best configuration over repeated runs, each metric's mean and CI half-width.

    The best configuration has the best mean of `metric` (default: the study's, else recall@1) among the
    configurations run at least `min_repeats` times, or among all of the loss's when none was. `metrics` default to
    the study's (P@1, R-Precision, MAP@R, then Recall@K for its ks). On the trials table each metric is its `best_`
    column (the value at the trial's best epoch). Columns: the `by` keys, study, config_id, n, params, then
    `<metric>` (mean) and `<metric>_ci` (half-width) per metric; sorted best first.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence=}")
    if isinstance(min_repeats, bool) or not isinstance(min_repeats, (int, np.integer)) or min_repeats < 1:
        raise ValueError(f"min_repeats must be a positive integer, got {min_repeats=}")
    metric = study_metric(trials, metric)
    select = metric_column(trials, metric)
    sign = resolve_mode(select, mode, trials).sign
    names = list(metrics) if metrics is not None else metric_names(trials)
    columns = {name: metric_column(trials, name) for name in names}
    by = list(by)
    require_columns(trials, [*by, "config_id"])
    # Repeats are runs of one config_id within one study: two studies may differ in data or base config.
    keys = [*by, *(k for k in ("study", "config_id") if k not in by and k in trials.columns)]
    rows = scored_rows(trials, select, statuses)
    chosen = _best_configs(rows, select, sign, by, keys, min_repeats)
    runs = rows.merge(chosen[keys], on=keys)
    grouped = runs.groupby(keys, sort=False)
    out = grouped.size().rename("n").to_frame()
    hparams = hyperparameter_columns(runs)
    out["params"] = grouped[hparams].first().apply(row_params, axis=1) if len(out) else []
    for name, column in columns.items():
        agg = grouped[column].agg(["mean", "std", "count"])
        out[name] = agg["mean"]
        out[f"{name}_ci"] = confidence_half_width(agg["std"], agg["count"], confidence)
    # Best first by the selection metric, which need not be among `metrics`.
    order = -sign * grouped[select].mean().to_numpy(dtype=float)
    return out.iloc[np.argsort(order, kind="stable")].reset_index()


def _best_configs(rows: pd.DataFrame, select: str, sign: float, by: list[str], keys: list[str],
                  min_repeats: int) -> pd.DataFrame:
    configs = rows.groupby(keys)[select].agg(["mean", "count"]).reset_index()
    enough = configs["count"] >= min_repeats
    # A loss none of whose configurations was repeated enough still gets a row (its best one, n shown).
    loss_has_enough = enough.groupby([configs[k] for k in by]).transform("any")
    candidates = configs[enough | ~loss_has_enough]
    winners = (sign * candidates["mean"]).groupby([candidates[k] for k in by]).idxmax()
    return candidates.loc[winners.to_numpy()]
