"""Importance plot: one panel of horizontal bars per loss."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from results._figure import panel_grid, save_png

__all__ = ["importance_figure", "plot_importance"]


def plot_importance(importances: Mapping[str, pd.Series], path: Path | str) -> Path:
    """Write `importance_figure` as a PNG to `path` (atomically); returns the path."""
    return save_png(importance_figure(importances), path)


def importance_figure(importances: Mapping[str, pd.Series]) -> Figure:
    """Per loss, its hyperparameters' importances (as `importance` returns them) as bars, largest on top, on a
    shared 0..1 axis so losses compare."""
    if not importances:
        raise ValueError("no importances to plot; expected a mapping loss -> importance Series")
    figure, axes = panel_grid(len(importances), height=0.9 + 0.35 * max(len(s) for s in importances.values()))
    for ax, (loss, scores) in zip(axes, importances.items()):
        ordered = scores.sort_values(ascending=True)
        ax.barh([str(name) for name in ordered.index], ordered.to_numpy(dtype=float), color="C0")
        ax.set_xlim(0.0, 1.0)
        ax.set_title(loss)
        ax.set_xlabel("importance")
    figure.suptitle("Hyperparameter importance")
    return figure
