"""Sensitivity plot: per hyperparameter, the trials as points and the mean +- std band through them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from results._best import SCORED
from results._figure import panel_grid, save_png
from results._schema import hyperparameter_columns, require_loss, study_metric
from results.study_dir import Status
from results._sensitivity import sensitivity, sensitivity_points

__all__ = ["plot_sensitivity", "sensitivity_figure", "varying_hyperparameters"]

# Above this many points a panel shows an evenly spaced subset: the band still uses every trial.
_MAX_POINTS = 4000


def varying_hyperparameters(table: pd.DataFrame, loss: str) -> list[str]:
    """The hyperparameter columns of `loss` that take more than one value."""
    rows = require_loss(table, loss)
    return [c for c in hyperparameter_columns(rows) if rows[c].nunique(dropna=True) > 1]


def plot_sensitivity(table: pd.DataFrame, path: Path | str, *, loss: str, params: str | Sequence[str] | None = None,
                     metric: str | None = None, bins: int | Sequence[float] | None = None,
                     statuses: Iterable[Status | str] = SCORED) -> Path:
    """Write `sensitivity_figure` as a PNG to `path` (atomically); returns the path."""
    figure = sensitivity_figure(table, loss=loss, params=params, metric=metric, bins=bins, statuses=statuses)
    return save_png(figure, path)


def sensitivity_figure(table: pd.DataFrame, *, loss: str, params: str | Sequence[str] | None = None,
                       metric: str | None = None, bins: int | Sequence[float] | None = None,
                       statuses: Iterable[Status | str] = SCORED) -> Figure:
    """One panel per hyperparameter of `loss` (default: those that vary): `sensitivity` drawn as the mean line
    with a mean +- std band, over the trials as points; a log x axis for log-scaled parameters. `metric` defaults
    to the study's."""
    metric = study_metric(table, metric)
    names = [params] if isinstance(params, str) else list(params or varying_hyperparameters(table, loss))
    if not names:
        raise ValueError(f"loss {loss!r} has no hyperparameter that varies; nothing to plot")
    statuses = list(statuses)
    figure, axes = panel_grid(len(names))
    for ax, param in zip(axes, names):
        curve = sensitivity(table, loss=loss, param=param, metric=metric, bins=bins, statuses=statuses)
        points = sensitivity_points(table, loss=loss, param=param, metric=metric, statuses=statuses)
        _panel(ax, curve, points)
    # Two lines: one panel is too narrow for "<loss>: <metric> against its hyperparameters" on one.
    figure.suptitle(f"{loss}\n{metric} against its hyperparameters", fontsize="medium")
    return figure


def _panel(ax: Axes, curve: pd.DataFrame, points: pd.DataFrame) -> None:
    step = max(1, len(points) // _MAX_POINTS)
    x, y = points.iloc[::step, 0], points.iloc[::step, 1].astype("float64")
    mean = curve["mean"].to_numpy(dtype=float)
    spread = np.nan_to_num(curve["std"].to_numpy(dtype=float))  # one trial in a bin: no spread to draw
    numeric = pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x)
    if numeric:
        centre = curve["value"].to_numpy(dtype=float)
        ax.scatter(x.to_numpy(dtype=float), y, s=8, alpha=0.35, color="C0", label="trials")
    else:
        # Categories on integer positions, in the curve's order.
        labels = [str(v) for v in curve["value"]]
        centre = np.arange(len(labels), dtype=float)
        position = dict(zip(labels, centre))
        ax.scatter(x.astype(str).map(position).to_numpy(dtype=float), y, s=8, alpha=0.35, color="C0",
                   label="trials")
        ax.set_xticks(centre, labels, rotation=20)
    ax.fill_between(centre, mean - spread, mean + spread, color="C1", alpha=0.25, label="mean ± std")
    ax.plot(centre, mean, color="C1", marker="o", markersize=4, label="mean")
    if curve.attrs.get("log"):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap within a decade
    ax.set_xlabel(str(curve.attrs.get("param", "")))
    ax.set_ylabel(str(curve.attrs.get("metric", "")))
    ax.legend(fontsize="small")
