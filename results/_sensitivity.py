"""The metric against one hyperparameter: mean, std and count per grid value or per bin."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from results._best import SCORED, scored_rows
from results._schema import hyperparameter_columns, metric_column, require_loss, study_metric
from results.study_dir import Status

__all__ = ["is_log_scale", "sensitivity", "sensitivity_points"]

# A numeric column with at most this many distinct values, each seen more than once on average, is a grid.
_MAX_GRID_VALUES = 20
# Automatic binning: about sqrt(n) bins, at most this many, so each bin averages several trials.
_MAX_BINS = 10
# Without study.json, a positive parameter spanning more than two decades is taken as log-scaled.
_LOG_SPAN = 100.0


def sensitivity(table: pd.DataFrame, *, loss: str, param: str, metric: str | None = None,
                bins: int | Sequence[float] | None = None, log: bool | None = None,
                statuses: Iterable[Status | str] = SCORED) -> pd.DataFrame:
    """Mean, std and count of `metric` per value of `param` (a grid) or per bin of it, for one loss.

    `metric` defaults to the study's. On the trials table `metric="recall@1"` reads `best_recall@1` (each trial's
    best epoch); on the epochs table it
    reads every epoch row, so filter it first (e.g. to one epoch) to compare trials at an equal budget.
    `bins=None` keeps the values of a grid (non-numeric, or at most 20 distinct values that repeat) and bins the
    rest into about sqrt(n) bins; an int forces that many bins, a sequence gives the edges. Bins are log-spaced
    when `log` says so, else when study.json lists `param` as log-scaled for `loss`, else when the values are
    positive and span more than two decades. Returns columns value (grid value or bin centre), low, high, mean,
    std, count, ordered by value; attrs hold loss, param, metric (the column read), log and binned.
    """
    _check_bins(bins)
    points = sensitivity_points(table, loss=loss, param=param, metric=metric, statuses=statuses)
    x, y = points.iloc[:, 0], points.iloc[:, 1].astype("float64")
    log = is_log_scale(x, param=param, loss=loss, log_scale=table.attrs.get("log_scale"), log=log)
    binned = bins is not None or not _is_grid(x)
    curve = _binned(x, y, bins, log) if binned else _per_value(x, y)
    curve.attrs = {"loss": loss, "param": param, "metric": points.columns[1], "log": log, "binned": binned}
    return curve


def sensitivity_points(table: pd.DataFrame, *, loss: str, param: str, metric: str | None = None,
                       statuses: Iterable[Status | str] = SCORED) -> pd.DataFrame:
    """The rows `sensitivity` averages, as two columns: `param` and the metric column read."""
    rows = require_loss(table, loss)
    column = metric_column(table, study_metric(table, metric))
    available = hyperparameter_columns(rows)
    if param not in available:
        raise ValueError(f"hyperparameter {param!r} is not set by any trial of loss {loss!r}; "
                         f"available: {', '.join(available) or '(none)'}")
    rows = scored_rows(rows, column, statuses)
    rows = rows[rows[param].notna()]
    if rows.empty:
        raise ValueError(f"no trial of loss {loss!r} has both {param} and {column}")
    return rows[[param, column]]


def is_log_scale(x: pd.Series, *, param: str, loss: str, log_scale: Mapping[str, Sequence[str]] | None = None,
                 log: bool | None = None) -> bool:
    """`log` if given; else study.json's word for `loss`; else positive values spanning over two decades."""
    if log is not None:
        if log and not _positive_numeric(x):
            raise ValueError(f"log=True needs positive numeric values of {param!r}, got min={x.min()!r}")
        return bool(log)
    if log_scale and loss in log_scale:
        return param in log_scale[loss] and _positive_numeric(x)
    return _positive_numeric(x) and float(x.max()) / float(x.min()) > _LOG_SPAN


def _positive_numeric(x: pd.Series) -> bool:
    return _numeric(x) and bool((x > 0).all())


def _numeric(x: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x)


def _is_grid(x: pd.Series) -> bool:
    if not _numeric(x):
        return True
    distinct = x.nunique()
    return distinct == 1 or (distinct <= _MAX_GRID_VALUES and distinct < len(x))


def _per_value(x: pd.Series, y: pd.Series) -> pd.DataFrame:
    stats = y.groupby(x, sort=True).agg(["mean", "std", "count"])
    values = stats.index.to_list()
    curve = pd.DataFrame({"value": values, "low": values, "high": values})
    return pd.concat([curve, stats.reset_index(drop=True)], axis=1)


def _binned(x: pd.Series, y: pd.Series, bins: int | Sequence[float] | None, log: bool) -> pd.DataFrame:
    if not _numeric(x):
        raise ValueError(f"cannot bin non-numeric hyperparameter {x.name!r}; pass bins=None to group by value")
    values = x.astype("float64")
    edges = _edges(values, bins, log)
    # Bin numbers, not Interval labels: the edges stay exactly the ones computed or given.
    code = pd.cut(values, edges, include_lowest=True, labels=False)
    stats = y.groupby(code, sort=True).agg(["mean", "std", "count"])
    index = stats.index.to_numpy(dtype=int)
    low, high = edges[index], edges[index + 1]
    value = np.sqrt(low * high) if log else (low + high) / 2
    curve = pd.DataFrame({"value": value, "low": low, "high": high})
    return pd.concat([curve, stats.reset_index(drop=True)], axis=1)


def _check_bins(bins: int | Sequence[float] | None) -> None:
    if bins is None:
        return
    if isinstance(bins, (bool, np.bool_)) or (isinstance(bins, (int, np.integer)) and bins < 1):
        raise ValueError(f"bins must be a positive number of bins or a sequence of edges, got {bins=}")
    if isinstance(bins, (int, np.integer)):
        return
    edges = np.asarray(bins, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or not np.isfinite(edges).all() or not np.all(np.diff(edges) > 0):
        raise ValueError(f"bin edges must be at least two increasing finite numbers, got {bins=}")


def _edges(x: pd.Series, bins: int | Sequence[float] | None, log: bool) -> np.ndarray:
    if bins is not None and not isinstance(bins, (int, np.integer)):
        return np.asarray(bins, dtype=float)
    count = int(bins) if bins is not None else min(_MAX_BINS, max(1, round(math.sqrt(len(x)))))
    low, high = float(x.min()), float(x.max())
    if low == high:
        # One value: one bin around it, so pd.cut gets increasing edges.
        return np.array([low, high + max(abs(high), 1.0) * 1e-9])
    return np.geomspace(low, high, count + 1) if log else np.linspace(low, high, count + 1)
