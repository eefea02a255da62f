"""Column names of the study tables (docs/architecture.md) and the two closed sets results needs: Mode, Status.

The trials table stores each metric twice, `best_<metric>` (at the trial's best epoch by the study metric) and
`last_<metric>` (at its last epoch). Everywhere in results, `metric="recall@1"` on the trials table means
`best_recall@1`: the value the trial would be selected by. Pass `"last_recall@1"` to use the last epoch instead.
"""

from __future__ import annotations

import enum
import re
import pandas as pd

__all__ = [
    "HPARAM_PREFIXES",
    "METRICS",
    "REPEAT_COLUMNS",
    "Mode",
    "Status",
    "hyperparameter_columns",
    "metric_column",
    "metric_name",
    "require_loss",
    "resolve_mode",
]

# The eval metrics both tables carry, in the reality check's reading order.
METRICS = ("precision@1", "r_precision", "map@r", "recall@1", "recall@2", "recall@4", "recall@8")
# Sampled columns are `loss.<hparam>`, `miner.<hparam>`, `train.<field>`; `miner` itself is sampled too.
HPARAM_PREFIXES = ("loss.", "miner.", "train.")
# Sampled keys that tell repeats of one configuration apart: never hyperparameters of the configuration.
REPEAT_COLUMNS = frozenset({"train.seed", "train.fold", "seed", "fold"})

_LARGER_IS_BETTER = re.compile(r"(recall@\d+|precision@\d+|r_precision|map@r|map@\d+|nmi|ami|accuracy)")
_SMALLER_IS_BETTER = re.compile(r".*(loss|time_s|error)")


class Mode(str, enum.Enum):
    """Direction of a metric; `sign` turns it into larger-is-better once, so no formula re-decides it."""

    MAX = "max"
    MIN = "min"

    @property
    def sign(self) -> float:
        return 1.0 if self is Mode.MAX else -1.0


class Status(str, enum.Enum):
    """A trial's state; RUNNING marks rows that results derives from the epochs of a trial not finished yet."""

    COMPLETED = "completed"
    STOPPED = "stopped"
    ERROR = "error"
    RUNNING = "running"


def metric_name(column: str) -> str:
    """`best_recall@1` / `last_recall@1` -> `recall@1`; other names unchanged."""
    for prefix in ("best_", "last_"):
        if column.startswith(prefix):
            return column[len(prefix):]
    return column


def _metric_like(table: pd.DataFrame) -> list[str]:
    """Numeric columns that are results, not identifiers or hyperparameters (for error messages)."""
    skip = {"seed", "fold", "epoch", "epochs", "best_epoch", "timestamp"}
    return [c for c in table.columns if c not in skip and not c.startswith(HPARAM_PREFIXES)
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
    """Sampled hyperparameter columns (`miner`, `loss.*`, `miner.*`, `train.*`) with at least one value in `table`,
    loss hyperparameters first, then the miner's, then training overrides (schema order within each).

    Repeat keys (seed, fold) are left out: they tell runs of one configuration apart.
    """
    wanted = [c for c in table.columns if (c == "miner" or c.startswith(HPARAM_PREFIXES)) and c not in REPEAT_COLUMNS]
    present = table[wanted].notna().any()
    return sorted((c for c in wanted if present[c]), key=_reading_order)


def _reading_order(column: str) -> int:
    return 0 if column.startswith("loss.") else 2 if column.startswith("train.") else 1
