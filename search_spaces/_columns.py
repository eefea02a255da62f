"""What a study space can produce, for fixing the Parquet schema and for log-spaced analysis bins."""

from __future__ import annotations

from search_spaces._space import StudySpace

__all__ = ["columns", "log_scale"]


def columns(space: StudySpace) -> dict[str, str]:
    """Every key any configuration of `space` can have -> "float" | "int" | "str" | "bool".

    "loss" and "miner" first, then loss.*, miner.*, train.* columns in the order the space lists them.
    """
    found = {"loss": "str", "miner": "str"}
    for group in ("loss.", "miner.", "train."):
        for _, entry in space.all_entries():
            if entry.column.startswith(group):
                found.setdefault(entry.column, entry.param.kind.value)
    return found


def log_scale(space: StudySpace) -> dict[str, list[str]]:
    """Per loss, its columns (its own, its miners', training) whose values are best read on a log scale."""
    scaled: dict[str, list[str]] = {name: [] for name in space.loss_names}
    for loss, entry in space.all_entries():
        if entry.param.log_scaled and entry.column not in scaled[loss]:
            scaled[loss].append(entry.column)
    return {loss: sorted(cols) for loss, cols in scaled.items()}
