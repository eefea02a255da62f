"""The best trial of each loss, and trial counts by status."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from dml_core.mode import Mode
from results._schema import hyperparameter_columns, metric_column, resolve_mode, study_metric
from results.study_dir import Status

__all__ = ["SCORED", "best_per_loss", "require_columns", "row_params", "scored_rows", "status_counts", "statuses_of"]

# A stopped or still running trial's value is a real measurement (at fewer epochs); an errored trial's is not.
SCORED = (Status.COMPLETED, Status.STOPPED, Status.RUNNING)


def statuses_of(statuses: Iterable[Status | str]) -> list[str]:
    """Validated status names."""
    names = []
    for status in statuses:
        try:
            names.append(Status(status).value)
        except ValueError:
            raise ValueError(f"unknown trial status {status=}; expected one of: "
                             f"{', '.join(s.value for s in Status)}") from None
    return names


def scored_rows(trials: pd.DataFrame, column: str, statuses: Iterable[Status | str]) -> pd.DataFrame:
    """Rows with a value in `column` and (when the table has a status) one of `statuses`."""
    keep = trials[column].notna()
    if "status" in trials.columns:
        keep &= trials["status"].isin(statuses_of(statuses))
    return trials[keep]


def status_counts(trials: pd.DataFrame, *, by: Sequence[str] = ("study",)) -> pd.DataFrame:
    """Trials per status (completed, stopped, error always; running when present) and in total, per `by` group."""
    require_columns(trials, [*by, "status"])
    counts = pd.crosstab([trials[k] for k in by], trials["status"])
    for status in (Status.COMPLETED, Status.STOPPED, Status.ERROR):
        if status.value not in counts.columns:
            counts[status.value] = 0
    order = [s.value for s in Status if s.value in counts.columns]
    counts = counts[order + [c for c in counts.columns if c not in order]]
    counts["total"] = counts.sum(axis=1)
    counts.columns.name = None
    return counts.reset_index()


def row_params(row: pd.Series) -> dict[str, Any]:
    """The non-null entries of one row as plain Python values."""
    values = row.dropna()
    return {k: v.item() if hasattr(v, "item") else v for k, v in values.items()}


def best_per_loss(trials: pd.DataFrame, *, metric: str | None = None, mode: Mode | str | None = None,
                  by: Sequence[str] = ("loss",), statuses: Iterable[Status | str] = SCORED) -> pd.DataFrame:
    """One row per loss (per `by` group): its best trial by `metric` and the loss's trial counts by status.

    `metric` defaults to the study's (study.json), else recall@1. Columns: the `by` keys, `metric` (the best
    value; on the trials table `best_<metric>`, see results._schema), trial_id, study, config_id, best_epoch,
    params (dict of the hyperparameters the trial set: its non-null dotted columns and `miner`), then the counts
    (completed, stopped, error[, running], total). A loss whose trials all failed keeps its row, with no value.
    Sorted best first.
    """
    metric = study_metric(trials, metric)
    column = metric_column(trials, metric)
    sign = resolve_mode(column, mode, trials).sign
    by = list(by)
    require_columns(trials, [*by, "trial_id"])
    trials = trials.reset_index(drop=True)  # idxmax gives labels: they must name one row each
    counts = status_counts(trials, by=by).set_index(by) if "status" in trials.columns else None
    scored = scored_rows(trials, column, statuses)
    winners = (sign * scored[column]).groupby([scored[k] for k in by]).idxmax()
    best = trials.loc[winners.to_numpy()].set_index(by)
    out = pd.DataFrame({metric: best[column]}, index=best.index)
    for name in ("trial_id", "study", "config_id", "best_epoch"):
        if name in best.columns and name not in by:
            out[name] = best[name]
    out["params"] = best[hyperparameter_columns(trials)].apply(row_params, axis=1) if len(best) else []
    if counts is not None:
        out = counts.join(out, how="left")[[*out.columns, *counts.columns]]
    out = out.reset_index()
    return out.sort_values(metric, ascending=sign < 0, na_position="last", kind="stable", ignore_index=True)


def require_columns(table: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"column(s) {', '.join(map(repr, missing))} are not in the table; "
                         f"available: {', '.join(map(str, table.columns))}")
