"""Figures without pyplot: an Agg canvas per figure, so no global backend or figure registry is touched."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dml_core.files import write_atomic

__all__ = ["panel_grid", "save_png"]

# Panels wrap after this many columns, so a study with all 14 losses stays readable.
_MAX_COLUMNS = 3


def panel_grid(count: int, *, width: float = 4.8, height: float = 3.4) -> tuple[Figure, list[Axes]]:
    """A figure with `count` panels in rows of at most three; unused cells are removed."""
    columns = min(_MAX_COLUMNS, max(1, count))
    rows = max(1, math.ceil(count / columns))
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = list(figure.subplots(rows, columns, squeeze=False).ravel())
    for extra in axes[count:]:
        figure.delaxes(extra)
    return figure, axes[:count]


def save_png(figure: Figure, path: Path | str) -> Path:
    """Write `figure` as PNG to `path` atomically and return the path."""
    path = Path(path)
    write_atomic(path, lambda file: figure.savefig(file, format="png", dpi=100))
    return path
