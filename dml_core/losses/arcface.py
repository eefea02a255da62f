"""PLACEHOLDER: to be replaced by the real arcface loss."""

from __future__ import annotations

from dml_core.losses.base import MetricLoss

__all__ = ["ArcFaceLoss"]


class ArcFaceLoss(MetricLoss):
    def __init__(self) -> None:
        super().__init__()
