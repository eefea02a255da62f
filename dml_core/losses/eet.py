"""PLACEHOLDER: to be replaced by the real eet loss."""

from __future__ import annotations

from dml_core.losses.base import MetricLoss

__all__ = ["EETLoss"]


class EETLoss(MetricLoss):
    def __init__(self) -> None:
        super().__init__()
