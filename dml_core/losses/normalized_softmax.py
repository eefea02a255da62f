"""PLACEHOLDER: to be replaced by the real normalized_softmax loss."""

from __future__ import annotations

from dml_core.losses.base import MetricLoss

__all__ = ["NormalizedSoftmaxLoss"]


class NormalizedSoftmaxLoss(MetricLoss):
    def __init__(self) -> None:
        super().__init__()
