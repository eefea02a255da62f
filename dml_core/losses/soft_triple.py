"""PLACEHOLDER: to be replaced by the real soft_triple loss."""

from __future__ import annotations

from dml_core.losses.base import MetricLoss

__all__ = ["SoftTripleLoss"]


class SoftTripleLoss(MetricLoss):
    def __init__(self) -> None:
        super().__init__()
