"""PLACEHOLDER: to be replaced by the real cosface loss."""

from __future__ import annotations

from dml_core.losses.base import MetricLoss

__all__ = ["CosFaceLoss"]


class CosFaceLoss(MetricLoss):
    def __init__(self) -> None:
        super().__init__()
