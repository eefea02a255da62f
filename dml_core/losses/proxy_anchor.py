"""PLACEHOLDER: to be replaced by the real proxy_anchor loss."""

from __future__ import annotations

from dml_core.losses.base import MetricLoss

__all__ = ["ProxyAnchorLoss"]


class ProxyAnchorLoss(MetricLoss):
    def __init__(self) -> None:
        super().__init__()
