"""The reality check's plot: per loss, its mean test metric with the 95% interval, concatenated and separated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from results._figure import panel_grid, save_png
from results.study_dir import EVALUATIONS

__all__ = ["plot_reality_check", "reality_check_figure"]


def plot_reality_check(table: pd.DataFrame, path: Path | str, *, metric: str = "map@r") -> Path:
    """Write `reality_check_figure` as a PNG to `path` (atomically); returns the path."""
    return save_png(reality_check_figure(table, metric=metric), path)


def reality_check_figure(table: pd.DataFrame, *, metric: str = "map@r") -> Figure:
    """One row per loss (the table's order, best on top): the mean of `metric` over the final runs with its 95%
    interval as a bar, for the concatenated and the separated evaluation."""
    columns = [f"{evaluation}.{metric}" for evaluation in EVALUATIONS]
    missing = [c for c in columns if c not in table.columns]
    if missing or table.empty:
        raise ValueError(f"expected reality_check_table's rows with {', '.join(columns)}; got "
                         f"{'no rows' if table.empty else 'no ' + ', '.join(missing)}")
    labels = [str(loss) for loss in table["loss"]]
    figure, (ax,) = panel_grid(1, width=6.4, height=1.2 + 0.42 * len(labels))
    rows = np.arange(len(labels))[::-1]  # the best loss on top
    for offset, (evaluation, column, marker) in enumerate(zip(EVALUATIONS, columns, ("o", "s"))):
        mean = table[column].to_numpy(dtype=float)
        half = np.nan_to_num(table[f"{column}_ci"].to_numpy(dtype=float))
        ax.errorbar(mean, rows + (0.12 if offset == 0 else -0.12), xerr=half, fmt=marker, capsize=3,
                    color=f"C{offset}", label=evaluation)
    ax.set_yticks(rows, labels)
    ax.set_xlabel(f"{metric} on the test classes (mean ± 95% CI over final runs)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    figure.suptitle("Reality check", fontsize="medium")
    return figure
