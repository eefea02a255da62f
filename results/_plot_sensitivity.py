"""Sensitivity plot: per hyperparameter, the trials as points and the mean +- std through them.

What a reader of a paper needs from it: trials at equal budget are compared (on a trials table with statuses the
curve is drawn through the trials that ran every epoch, when there are enough of them; trials stopped early are
points of their own, marked apart); a mean over fewer than `MIN_PER_BIN` trials in a bin of randomly sampled
values is not drawn as part of a curve (its bin shows a hollow marker, and a panel without two such bins says so),
while the designed values of a grid (a sensitivity sweep, each value run with `MIN_PER_GRID_VALUE` seeds or
more) are joined by the mean curve, its legend giving the runs per value; a categorical hyperparameter's
categories are points with their spread, never joined by a line; and a log axis that spans less than a decade
still labels its ticks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from results._best import SCORED
from results._figure import panel_grid, save_png
from results._schema import hyperparameter_columns, require_loss, study_metric
from results.study_dir import Status
from results._sensitivity import sensitivity, sensitivity_points

__all__ = ["MIN_PER_BIN", "MIN_PER_GRID_VALUE", "plot_sensitivity", "sensitivity_figure", "varying_hyperparameters"]

# Above this many points a panel shows an evenly spaced subset: the band still uses every trial.
_MAX_POINTS = 4000
# Trials a bin (or a category) needs before its mean is drawn as part of the curve: the mean of two trials with
# a std of one pair says little, and a line through such points reads as a trend.
MIN_PER_BIN = 3
# Runs a designed grid value needs: a sweep with two seeds per value is the usual design (the survey's tables), and
# its values are chosen, not a bin that happened to catch two random trials.
MIN_PER_GRID_VALUE = 2


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
        # With statuses, the trials that ran every epoch are points apart from those stopped early (or running).
        early = _early(table, statuses)
        full = [s for s in statuses if Status(s) not in early]
        if not full:  # only the early ones asked for: nothing to set them apart from
            early, full = set(), statuses
        points = _points_or_none(table, loss, param, metric, full)
        stopped = _points_or_none(table, loss, param, metric, sorted(early, key=lambda s: s.value))
        # The curve compares trials at the full budget when there are enough of them; else it mixes budgets.
        equal = bool(early) and points is not None and len(points) >= 2 * MIN_PER_BIN
        curve = sensitivity(table, loss=loss, param=param, metric=metric, bins=bins,
                            statuses=full if equal else statuses)
        if points is None:  # no trial ran every epoch: every point is one stopped early
            points = stopped.iloc[:0] if stopped is not None else \
                sensitivity_points(table, loss=loss, param=param, metric=metric, statuses=statuses)
        _panel(ax, curve, points, stopped, full_budget=bool(early), mixed=bool(early) and not equal)
    # Two lines: one panel is too narrow for "<loss>: <metric> against its hyperparameters" on one.
    figure.suptitle(f"{loss}\n{metric} against its hyperparameters", fontsize="medium")
    return figure


def _early(table: pd.DataFrame, statuses: list[Status | str]) -> set[Status]:
    """The statuses of trials that ran fewer epochs than the study's (stopped early, still running)."""
    if "status" not in table.columns:
        return set()
    return {Status(s) for s in statuses} & {Status.STOPPED, Status.RUNNING}


def _points_or_none(table: pd.DataFrame, loss: str, param: str, metric: str,
                    statuses: list[Status | str]) -> pd.DataFrame | None:
    if not statuses:
        return None
    try:
        return sensitivity_points(table, loss=loss, param=param, metric=metric, statuses=statuses)
    except ValueError:
        return None


def _panel(ax: Axes, curve: pd.DataFrame, points: pd.DataFrame, stopped: pd.DataFrame | None = None, *,
           full_budget: bool = False, mixed: bool = False) -> None:
    step = max(1, len(points) // _MAX_POINTS)
    x, y = points.iloc[::step, 0], points.iloc[::step, 1].astype("float64")
    mean = curve["mean"].to_numpy(dtype=float)
    spread = np.nan_to_num(curve["std"].to_numpy(dtype=float))  # one trial in a bin: no spread to draw
    numeric = pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x)
    designed = numeric and not curve.attrs.get("binned", True)  # a numeric grid: a sweep's chosen values
    needed = MIN_PER_GRID_VALUE if designed else MIN_PER_BIN
    counts = curve["count"].to_numpy()
    enough = counts >= needed
    runs = f", n = {_span(counts[enough])} per value" if designed and enough.any() else ""
    trials_label = "trials (all epochs)" if full_budget else "trials"
    if numeric:
        centre = curve["value"].to_numpy(dtype=float)
        position = None
        ax.scatter(x.to_numpy(dtype=float), y, s=8, alpha=0.35, color="C0", label=trials_label)
    else:
        # Categories on integer positions, in the curve's order.
        labels = [str(v) for v in curve["value"]]
        centre = np.arange(len(labels), dtype=float)
        position = dict(zip(labels, centre))
        ax.scatter(x.astype(str).map(position).to_numpy(dtype=float), y, s=8, alpha=0.35, color="C0",
                   label=trials_label)
        ax.set_xticks(centre, labels, rotation=20)
    if stopped is not None and len(stopped):
        sx = stopped.iloc[:, 0]
        at = sx.to_numpy(dtype=float) if position is None else sx.astype(str).map(position).to_numpy(dtype=float)
        ax.scatter(at, stopped.iloc[:, 1].astype("float64"), s=10, marker="x", alpha=0.4, color="0.45",
                   label="stopped early (fewer epochs)")
    # Too few trials at the full budget for a curve of their own: the curve mixes budgets, and says so.
    suffix = " (all trials, mixed budgets)" if mixed else ""
    if numeric and enough.sum() >= 2:
        ax.fill_between(centre[enough], (mean - spread)[enough], (mean + spread)[enough], color="C1", alpha=0.25,
                        label="mean ± std" + runs + suffix)
        ax.plot(centre[enough], mean[enough], color="C1", marker="o", markersize=4, label="mean" + suffix)
    elif not numeric and enough.any():
        # Categories are not a curve: each one's mean with its spread, no line between them.
        ax.errorbar(centre[enough], mean[enough], yerr=spread[enough], fmt="o", color="C1", capsize=4,
                    label="mean ± std" + runs + suffix)
    if (~enough).any():
        ax.scatter(centre[~enough], mean[~enough], s=28, facecolors="none", edgecolors="C1",
                   label=f"mean of < {needed} trials")
    if (numeric and enough.sum() < 2) or (not numeric and not enough.any()):
        where = "per grid value" if designed else "per bin"
        ax.text(0.5, 0.02, f"too few trials for a curve (needs {needed} {where})", transform=ax.transAxes,
                ha="center", va="bottom", fontsize="small", color="0.35")
    if curve.attrs.get("log"):
        every = pd.concat([points.iloc[:, 0], *([] if stopped is None else [stopped.iloc[:, 0]])]).to_numpy(dtype=float)
        _log_axis(ax, float(np.nanmin(every)), float(np.nanmax(every)))
    ax.set_xlabel(str(curve.attrs.get("param", "")))
    ax.set_ylabel(str(curve.attrs.get("metric", "")))
    ax.legend(fontsize="small")


def _span(counts: np.ndarray) -> str:
    """'2' when every value has 2 runs, '2-4' when they differ."""
    low, high = int(counts.min()), int(counts.max())
    return str(low) if low == high else f"{low}-{high}"


def _log_axis(ax: Axes, low: float, high: float) -> None:
    """A log x axis whose ticks carry numbers: within a decade matplotlib labels none (no power of ten falls
    inside), so there the 1-2-5 ticks are labelled; across decades only the powers of ten are."""
    ax.set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:.3g}")
    ax.xaxis.set_major_formatter(plain)
    if high / max(low, 1e-300) < 10:
        ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(plain)
    else:
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap across decades
