"""Markdown rendering of result tables and values."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

__all__ = ["format_metric", "format_params", "format_value", "markdown_table"]


def format_value(value: Any) -> str:
    """Hyperparameter values: 4 significant digits for floats, as is otherwise; empty for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_metric(value: Any) -> str:
    """Metric values: four decimals (retrieval metrics are fractions in [0, 1])."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{float(value):.4f}"


def format_params(params: Mapping[str, Any] | None) -> str:
    if not isinstance(params, Mapping):
        return ""
    return ", ".join(f"{name}={format_value(value)}" for name, value in params.items())


def markdown_table(frame: pd.DataFrame, formats: Mapping[str, Callable[[Any], str]] | None = None) -> str:
    """A GitHub-flavoured Markdown table; `formats` maps a column to its cell formatter (default format_value)."""
    formats = formats or {}
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    columns = [frame[c].map(formats.get(c, format_value)).tolist() for c in frame.columns]
    for row in zip(*columns):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
