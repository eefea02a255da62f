"""Learning curves: the metric against epoch, one panel per loss, one line per trial styled by its status.

In a panel where exactly one hyperparameter varies over a few values (a sensitivity sweep), the lines are also
coloured by that value, so the reader sees which setting learns how; otherwise the colour is the status's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from results._figure import panel_grid, save_png
from results._schema import hyperparameter_columns, metric_column, study_metric
from results.study_dir import Status

__all__ = ["learning_curves_figure", "plot_learning_curves"]

_KEYS = ["study", "trial_id"]
# Trials whose status is unknown: no trials table was given.
_UNKNOWN = "trial"
# A panel colours its lines by its one varying hyperparameter when that takes at most this many values: beyond
# it, neighbouring colours cannot be told apart.
_MAX_SWEPT_VALUES = 10


@dataclass(frozen=True)
class _Style:
    color: str
    linestyle: str
    end_marker: str | None  # drawn at a trial's last epoch, so a curve that stopped early shows where


_STYLES = {
    Status.COMPLETED.value: _Style("C0", "-", None),
    Status.STOPPED.value: _Style("C1", "--", "x"),
    Status.ERROR.value: _Style("C3", ":", "X"),
    Status.RUNNING.value: _Style("C2", "-", ">"),
    _UNKNOWN: _Style("0.4", "-", None),
}


def plot_learning_curves(epochs: pd.DataFrame, path: Path | str, *, metric: str | None = None,
                         trials: pd.DataFrame | None = None, losses: Sequence[str] | None = None) -> Path:
    """Write `learning_curves_figure` as a PNG to `path` (atomically); returns the path."""
    return save_png(learning_curves_figure(epochs, metric=metric, trials=trials, losses=losses), path)


def learning_curves_figure(epochs: pd.DataFrame, *, metric: str | None = None, trials: pd.DataFrame | None = None,
                           losses: Sequence[str] | None = None) -> Figure:
    """One panel per loss: `metric` against epoch, a line per trial.

    With `trials`, lines are styled by status: completed solid, stopped dashed ending in x, error dotted ending in X,
    and trials that have epochs but no trials row yet (running) solid ending in >. Without it all are grey.
    `metric` defaults to the study's.
    """
    column = metric_column(epochs, study_metric(epochs, metric))
    params = hyperparameter_columns(epochs)
    rows = epochs.loc[epochs[column].notna(), [*_KEYS, "loss", "epoch", column, *params]]
    rows = rows.assign(status=_statuses(rows, trials)).sort_values([*_KEYS, "epoch"], kind="stable")
    present = sorted(rows["loss"].dropna().unique().tolist())
    names = present if losses is None else list(losses)
    unknown = [n for n in names if n not in present]
    if unknown or not names:
        raise ValueError(f"no epochs with a {column} value for loss(es) {', '.join(map(repr, unknown)) or '(any)'}; "
                         f"available: {', '.join(present) or '(none)'}")
    figure, axes = panel_grid(len(names))
    # Common axes, so that panels compare at a glance: a loss whose trials all stopped at epoch 1 is not
    # stretched over a misleading x range of its own.
    last_epoch = int(rows["epoch"].max())
    low, high = float(rows[column].min()), float(rows[column].max())
    pad = 0.05 * (high - low) or 0.01
    for ax, loss in zip(axes, names):
        panel = rows[rows["loss"] == loss]
        _panel(ax, panel, column, _swept(panel, params))
        ax.set_xlim(0.5, last_epoch + 0.5)
        ax.set_ylim(low - pad, high + pad)
        ax.set_title(loss)
    figure.suptitle(f"Learning curves: {column}")
    return figure


def _statuses(rows: pd.DataFrame, trials: pd.DataFrame | None) -> np.ndarray:
    if trials is None:
        return np.full(len(rows), _UNKNOWN, dtype=object)
    known = trials[[*_KEYS, "status"]].drop_duplicates(_KEYS)
    # A left merge keeps the rows' order; a trial with epochs but no trials row is still running.
    status = rows[_KEYS].merge(known, on=_KEYS, how="left")["status"]
    return status.fillna(Status.RUNNING.value).to_numpy(dtype=object)


def _swept(rows: pd.DataFrame, params: Sequence[str]) -> str | None:
    """The one hyperparameter that varies in `rows` over 2.._MAX_SWEPT_VALUES values, else None."""
    varying = [c for c in params if rows[c].nunique(dropna=True) > 1]
    if len(varying) != 1 or rows[varying[0]].nunique(dropna=True) > _MAX_SWEPT_VALUES:
        return None
    return varying[0]


def _panel(ax: Axes, rows: pd.DataFrame, column: str, swept: str | None = None) -> None:
    trial_count = rows[_KEYS].drop_duplicates().shape[0]
    # Thousands of trials overdraw: fade lines as their number grows.
    alpha = float(np.clip(20.0 / max(trial_count, 1), 0.08, 0.8))
    values = sorted(rows[swept].dropna().unique().tolist()) if swept else []
    # Evenly spread along the colour map by rank: a log-spaced sweep gets as distinct colours as a linear one.
    colours = dict(zip(values, _colours(len(values))))
    handles = []
    for status, style in _STYLES.items():
        group = rows[rows["status"] == status]
        if group.empty:
            continue
        lines, ends = _trial_lines(group, column)
        line_colours: Any = style.color
        if swept:
            firsts = group.groupby(_KEYS, sort=False)[swept].first()
            line_colours = [colours.get(v, "0.4") for v in firsts.tolist()]
        ax.add_collection(LineCollection(lines, colors=line_colours, linestyles=style.linestyle,
                                         linewidths=1.0 if not swept else 1.4, alpha=alpha if not swept else 0.85,
                                         label=status))
        # A one-epoch trial has no line to draw: it shows as its end point.
        lengths = np.array([len(line) for line in lines])
        keep = np.ones(len(lines), dtype=bool) if style.end_marker else lengths == 1
        ax.scatter(ends[keep, 0], ends[keep, 1], marker=style.end_marker or ".", s=18,
                   color=np.asarray(line_colours, dtype=object)[keep].tolist() if swept else style.color,
                   alpha=max(alpha, 0.5))
        handles.append(Line2D([], [], color=style.color if not swept else "0.2", linestyle=style.linestyle,
                              marker=style.end_marker, label=f"{status} ({len(lines)})"))
    if swept:
        name = swept.rsplit(".", 1)[-1]
        handles += [Line2D([], [], color=colours[v], linewidth=2,
                           label=f"{name} = {v:g}" if isinstance(v, (int, float)) else f"{name} = {v}")
                    for v in values]
    ax.autoscale_view()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(column)
    # Curves rise to the right: a sweep's long legend goes where they start low, not over their ends.
    ax.legend(handles=handles, fontsize="x-small" if swept else "small", loc="lower right" if swept else "best")


def _colours(n: int) -> list[Any]:
    """n colours from dark to light along viridis (the light end stops short of yellow, which vanishes on white)."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.85 * i / max(n - 1, 1)) for i in range(n)]


def _trial_lines(group: pd.DataFrame, column: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Rows sorted by trial then epoch -> one (epochs, 2) array per trial, and each trial's last point (T, 2)."""
    xy = np.column_stack([group["epoch"].to_numpy(dtype=float), group[column].to_numpy(dtype=float)])
    trial = group.groupby(_KEYS, sort=False).ngroup().to_numpy()
    starts = np.flatnonzero(np.diff(trial)) + 1
    ends = xy[np.append(starts - 1, len(xy) - 1)]
    return np.split(xy, starts), ends
