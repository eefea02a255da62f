"""PLACEHOLDER: to be replaced by the real ranked_list loss."""

from __future__ import annotations

from dml_core.losses.base import MetricLoss

__all__ = ["RankedListLoss"]


class RankedListLoss(MetricLoss):
    def __init__(self) -> None:
        super().__init__()
