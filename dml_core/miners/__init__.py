"""Miners: an explicit name table and a validating factory.

A miner is called as `miner(embeddings (B, D), labels (B,)) -> Pairs | Triplets | None` and runs without gradients.
Adding a miner touches three places: its module, this table, its test (and `compatibility.py`).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from dml_core.miners.base import Miner
from dml_core.names import check_known, lookup
from dml_core.miners.batch_hard import BatchHardMiner
from dml_core.miners.compatibility import COMPATIBLE_MINERS, compatible_miners
from dml_core.miners.distance_weighted import DistanceWeightedMiner
from dml_core.miners.multi_similarity import MultiSimilarityMiner
from dml_core.miners.no_miner import NoMiner
from dml_core.miners.pair_margin import PairMarginMiner
from dml_core.miners.triplet_margin import (DEFAULT_MAX_TRIPLETS, TooManyTripletsError, TripletMarginMiner,
                                            TripletType)
from dml_core.tuples import Mined, Pairs, Triplets

__all__ = ["MINERS", "COMPATIBLE_MINERS", "DEFAULT_MAX_TRIPLETS", "Miner", "Mined", "Pairs", "Triplets",
           "compatible_miners", "make_miner", "miner_hparams", "BatchHardMiner", "DistanceWeightedMiner",
           "MultiSimilarityMiner", "NoMiner", "PairMarginMiner", "TripletMarginMiner", "TripletType",
           "TooManyTripletsError"]

MINERS: dict[str, type[Miner]] = {
    "none": NoMiner,
    "multi_similarity": MultiSimilarityMiner,
    "triplet_margin": TripletMarginMiner,
    "batch_hard": BatchHardMiner,
    "pair_margin": PairMarginMiner,
    "distance_weighted": DistanceWeightedMiner,
}


def _miner_class(name: str) -> type[Miner]:
    return lookup(MINERS, name, "miner")


def miner_hparams(name: str) -> dict[str, Any]:
    """The hyperparameters miner `name` accepts, with their defaults (PML 2.9's names, units and defaults)."""
    return _miner_class(name).hparam_defaults()


def make_miner(name: str, *, generator: torch.Generator | None = None, **hparams: Any) -> Miner:
    """Build miner `name`; unknown names and hyperparameters raise ValueError listing the valid ones.

    `generator` feeds the miners that sample (distance_weighted); the deterministic ones ignore it, so a trainer
    can always pass its generator.
    """
    cls = _miner_class(name)
    check_known(hparams, miner_hparams(name), "hyperparameter(s)", f"miner {name!r}")
    if "generator" in inspect.signature(cls.__init__).parameters:
        return cls(generator=generator, **hparams)
    return cls(**hparams)
