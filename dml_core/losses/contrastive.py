"""PLACEHOLDER: to be replaced by the real contrastive loss."""

from __future__ import annotations

from dml_core.losses.base import MetricLoss

__all__ = ["ContrastiveLoss"]


class ContrastiveLoss(MetricLoss):
    def __init__(self) -> None:
        super().__init__()
