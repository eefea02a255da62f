"""Column names of the study tables (results.study_dir) as the analysis reads them: metrics and hyperparameters.

The trials table stores each metric twice, `best_<metric>` (at the trial's best epoch by the study metric) and
`last_<metric>` (at its last epoch). Everywhere in results, `metric="recall@1"` on the trials table means
`best_recall@1`: the value the trial would be selected by. Pass `"last_recall@1"` to use the last epoch instead.

Sampled hyperparameters are exactly the dotted columns (`triplet.margin`, `miner.triplet_margin.margin`,
`train.lr`, `model.embedding_dim`; search_spaces.space names them) plus `miner`, the choice of miner; no metric,
timing or identifier column has a dot.
"""

from __future__ import annotations

import re

import pandas as pd

from dml_core.mode import Mode
from results.study_dir import EVALUATIONS, REPEAT_COLUMNS

__all__ = [
    "hyperparameter_columns",
    "is_hyperparameter",
    "metric_column",
    "metric_name",
    "metric_names",
    "require_loss",
    "study_metric",
    "resolve_mode",
]

_LARGER_IS_BETTER = re.compile(r"(recall@\d+|precision@\d+|r_precision|map@r|map@\d+|nmi|ami|accuracy)")
_SMALLER_IS_BETTER = re.compile(r".*(loss|time_s|error)")
_RETRIEVAL = re.compile(r"(precision@1|r_precision|map@r|recall@\d+|nmi)")
_EVALUATION_PREFIXES = tuple(f"{evaluation}." for evaluation in EVALUATIONS)


def metric_names(table: pd.DataFrame) -> list[str]:
    """The retrieval metrics of a table, in the reality check's reading order (P@1, R-Precision, MAP@R, then
    Recall@K by K, then NMI): those its study lists (attrs["metrics"], from study.json), else those its columns
    hold (`recall@10` counts as much as `recall@1`)."""
    listed = table.attrs.get("metrics")
    names = set(listed) if listed else {metric_name(c) for c in table.columns if _RETRIEVAL.fullmatch(metric_name(c))}
    fixed = [m for m in ("precision@1", "r_precision", "map@r") if m in names]
    recalls = sorted((m for m in names if m.startswith("recall@")), key=lambda m: int(m.split("@")[1]))
    rest = sorted(m for m in names if m not in fixed and m not in recalls)
    return [*fixed, *recalls, *rest]


def is_hyperparameter(column: str) -> bool:
    """A sampled hyperparameter column (dotted, or the miner choice) that is not a repeat key (seed, fold) nor a
    final run's test score (`concatenated.map@r`)."""
    return ((column == "miner" or "." in column) and column not in REPEAT_COLUMNS
            and not column.startswith(_EVALUATION_PREFIXES))


def study_metric(table: pd.DataFrame, metric: str | None) -> str:
    """`metric`, else the metric the table's studies optimised (attrs, from study.json), else recall@1 (the study
    config's default)."""
    return metric if metric is not None else str(table.attrs.get("metric", "recall@1"))


def metric_name(column: str) -> str:
    """`best_recall@1` / `last_recall@1` -> `recall@1`; other names unchanged."""
    for prefix in ("best_", "last_"):
        if column.startswith(prefix):
            return column[len(prefix):]
    return column


def _metric_like(table: pd.DataFrame) -> list[str]:
    """Numeric columns that are results, not identifiers or hyperparameters (for error messages)."""
    skip = {"epoch", "epochs", "best_epoch", "timestamp"}
    return [c for c in table.columns if c not in skip and "." not in c
            and pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])]


def metric_column(table: pd.DataFrame, metric: str) -> str:
    """The column holding `metric`: itself (epochs table, or an explicit `best_`/`last_` name), else `best_<metric>`."""
    for column in (metric, f"best_{metric}"):
        if column in table.columns and pd.api.types.is_numeric_dtype(table[column]):
            return column
    available = ", ".join(_metric_like(table)) or "(none)"
    raise ValueError(f"metric {metric!r} is not in the table; available: {available}")


def resolve_mode(metric: str, mode: Mode | str | None, table: pd.DataFrame | None = None) -> Mode:
    """An explicit mode, else the study's (study.json) when `metric` is its metric, else inferred from the name."""
    if mode is not None:
        try:
            return Mode(mode)
        except ValueError:
            raise ValueError(f"mode must be 'max' or 'min', got {mode=}") from None
    name = metric_name(metric)
    attrs = {} if table is None else table.attrs
    if attrs.get("metric") == name and attrs.get("mode") in ("max", "min"):
        return Mode(attrs["mode"])
    if _LARGER_IS_BETTER.fullmatch(name):
        return Mode.MAX
    if _SMALLER_IS_BETTER.fullmatch(name):
        return Mode.MIN
    raise ValueError(f"cannot tell whether {metric!r} is to be maximised or minimised; pass mode='max' or 'min'")


def require_loss(table: pd.DataFrame, loss: str) -> pd.DataFrame:
    """The rows of `loss`; a one-line error listing the losses present otherwise."""
    if "loss" not in table.columns:
        raise ValueError("the table has no 'loss' column; expected a trials or epochs table")
    rows = table[table["loss"] == loss]
    if rows.empty:
        losses = ", ".join(sorted(table["loss"].dropna().unique().tolist())) or "(none)"
        raise ValueError(f"loss {loss!r} is not in the table; available: {losses}")
    return rows


def hyperparameter_columns(table: pd.DataFrame) -> list[str]:
    """Sampled hyperparameter columns with at least one value in `table`: the losses' first, then `miner` and the
    miners', then the run's (`train.*`, `model.*`), schema order within each.

    Repeat keys (train.seed, train.fold) are left out: they tell runs of one configuration apart.
    """
    wanted = [c for c in table.columns if is_hyperparameter(c)]
    present = table[wanted].notna().any()
    return sorted((c for c in wanted if present[c]), key=_reading_order)


def _reading_order(column: str) -> int:
    if column == "miner" or column.startswith("miner."):
        return 1
    return 2 if column.startswith(("train.", "model.")) else 0
