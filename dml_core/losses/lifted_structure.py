"""PLACEHOLDER: to be replaced by the real lifted_structure loss."""

from __future__ import annotations

from dml_core.losses.base import MetricLoss

__all__ = ["LiftedStructureLoss"]


class LiftedStructureLoss(MetricLoss):
    def __init__(self) -> None:
        super().__init__()
