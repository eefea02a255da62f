"""PLACEHOLDER: to be replaced by the real npair loss."""

from __future__ import annotations

from dml_core.losses.base import MetricLoss

__all__ = ["NPairsLoss"]


class NPairsLoss(MetricLoss):
    def __init__(self) -> None:
        super().__init__()
