"""PLACEHOLDER: to be replaced by the real multi_similarity loss."""

from __future__ import annotations

from dml_core.losses.base import MetricLoss

__all__ = ["MultiSimilarityLoss"]


class MultiSimilarityLoss(MetricLoss):
    def __init__(self) -> None:
        super().__init__()
