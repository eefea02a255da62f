"""Trials table rows for trials that have epochs but no trials row yet (a study still running)."""

from __future__ import annotations

import pandas as pd

from dml_core.mode import Mode
from results._schema import is_hyperparameter, metric_column, resolve_mode, study_metric
from results.study_dir import REPEAT_COLUMNS, Status

__all__ = ["trials_in_progress"]

_KEYS = ["study", "trial_id"]
_CONFIG = ("config_id", "loss", "miner", *REPEAT_COLUMNS)
_TIMINGS = frozenset({"epoch", "epoch_time_s", "train_time_s", "eval_time_s", "time_total_s", "timestamp"})


def trials_in_progress(epochs: pd.DataFrame, trials: pd.DataFrame, *, metric: str | None = None,
                       mode: Mode | str | None = None) -> pd.DataFrame:
    """One trials-table row per trial of `epochs` that `trials` does not hold yet, with status `running`.

    Built as the study builds a finished trial's row: `best_<m>` are the values at the best epoch by `metric`
    (ties: the earliest epoch), `last_<m>` those at the last epoch, `epochs` the last epoch number.
    """
    column = metric_column(epochs, study_metric(epochs, metric))
    sign = resolve_mode(column, mode, epochs).sign
    # Sorted and renumbered: idxmax below gives labels, which must name one row each.
    rows = _unfinished(epochs, trials).sort_values([*_KEYS, "epoch"], kind="stable", ignore_index=True)
    config = [c for c in rows.columns if c in _CONFIG or is_hyperparameter(c)]
    values = [c for c in rows.columns if c not in _KEYS and c not in _TIMINGS and c not in config
              and pd.api.types.is_float_dtype(rows[c])]
    last = rows.groupby(_KEYS, sort=False).tail(1).set_index(_KEYS)
    scored = rows[rows[column].notna()]
    # idxmax keeps the first of equal maxima: in epoch order, the earliest epoch, as the study does.
    best_rows = (sign * scored[column]).groupby([scored[k] for k in _KEYS], sort=False).idxmax()
    best = rows.loc[best_rows.to_numpy()].set_index(_KEYS).reindex(last.index)
    out = last[config].copy()
    out["status"] = Status.RUNNING.value
    out["epochs"] = last["epoch"]
    out["best_epoch"] = best["epoch"].astype("Int64")
    for name in values:
        out[f"best_{name}"] = best[name]
        out[f"last_{name}"] = last[name]
    if "time_total_s" in last.columns:
        out["wall_time_s"] = last["time_total_s"]
    return out.reset_index()


def _unfinished(epochs: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    if trials.empty:
        return epochs
    finished = pd.MultiIndex.from_frame(trials[_KEYS].astype(str))
    return epochs[~pd.MultiIndex.from_frame(epochs[_KEYS].astype(str)).isin(finished)]
