"""Which miners make sense for which loss, so that search spaces only sample valid (loss, miner) pairs (the table
lives in the torch-free dml_core.catalog)."""

from __future__ import annotations

from dml_core.catalog import COMPATIBLE_MINERS, compatible_miners

__all__ = ["COMPATIBLE_MINERS", "compatible_miners"]
