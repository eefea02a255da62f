"""PLACEHOLDER: to be replaced by the real triplet loss."""

from __future__ import annotations

from dml_core.losses.base import MetricLoss

__all__ = ["TripletMarginLoss"]


class TripletMarginLoss(MetricLoss):
    def __init__(self) -> None:
        super().__init__()
