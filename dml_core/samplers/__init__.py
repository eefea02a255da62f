"""Batch samplers: how a training batch is composed."""

from __future__ import annotations

from dml_core.samplers.m_per_class import MPerClassSampler

__all__ = ["MPerClassSampler"]
