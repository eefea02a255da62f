"""What dml_core offers, without importing torch: the loss and miner names, the hyperparameters each accepts with
their defaults, and which miners each loss takes.

A study's config is checked against this before torch is imported, so a bad config is refused in well under a
second. The losses and miners themselves (dml_core.losses, dml_core.miners) remain the truth: their constructors'
keyword-only arguments must equal these tables (tests/test_catalog.py compares every one).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from dml_core.names import lookup

__all__ = ["COMPATIBLE_MINERS", "LOSS_HPARAMS", "MINER_HPARAMS", "REQUIRED", "compatible_miners", "loss_hparams",
           "miner_hparams"]

# The default of a hyperparameter without one (as inspect reports a required argument).
REQUIRED = inspect.Parameter.empty

# Loss name -> its hyperparameters and their defaults (PML 2.9's names, units and defaults), in the losses' order.
LOSS_HPARAMS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "contrastive": {"pos_margin": 0.0, "neg_margin": 1.0},
    "triplet": {"margin": 0.05, "swap": False, "smooth_loss": False},
    "lifted_structure": {"neg_margin": 1.0, "pos_margin": 0.0},
    "npair": {},
    "multi_similarity": {"alpha": 2.0, "beta": 50.0, "base": 0.5},
    "ranked_list": {"margin": 0.2, "Tn": 10.0, "imbalance": 0.5, "alpha": None, "Tp": 0.0},
    "eet": {"margin": 0.05, "equidistant_weight": 1.0, "equidistributed_weight": 1.0},
    "proxy_nca": {"softmax_scale": 1.0},
    "proxy_anchor": {"margin": 0.1, "alpha": 32.0},
    "soft_triple": {"centers_per_class": 10, "la": 20.0, "gamma": 0.1, "margin": 0.01},
    "normalized_softmax": {"temperature": 0.05},
    "arcface": {"margin": 28.6, "scale": 64.0},
    "cosface": {"margin": 0.35, "scale": 64.0},
    "center": {"center_weight": 1.0},
})

# Miner name -> its hyperparameters and their defaults; "none" first.
MINER_HPARAMS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "none": {},
    "multi_similarity": {"epsilon": 0.1},
    "triplet_margin": {"margin": 0.2, "type_of_triplets": "all"},
    "batch_hard": {},
    "pair_margin": {"pos_margin": 0.2, "neg_margin": 0.8},
    "distance_weighted": {"cutoff": 0.5, "nonzero_loss_cutoff": 1.4},
})

_PAIR_MINERS = ("pair_margin", "multi_similarity")
_TRIPLET_MINERS = ("triplet_margin", "batch_hard", "distance_weighted")

COMPATIBLE_MINERS: Mapping[str, frozenset[str]] = MappingProxyType({
    # Pair and triplet losses read any tuples (triplets split into (a, p) and (a, n) pairs; pairs sharing an anchor
    # join into triplets), so every miner is a valid choice.
    "contrastive": frozenset({"none", *_PAIR_MINERS, *_TRIPLET_MINERS}),
    "triplet": frozenset({"none", *_PAIR_MINERS, *_TRIPLET_MINERS}),
    # Pair losses with a smooth max over each anchor's pair sets: pair miners thin those sets as the papers do,
    # while triplet miners would keep one negative per positive and defeat the soft weighting.
    "lifted_structure": frozenset({"none", *_PAIR_MINERS}),
    "multi_similarity": frozenset({"none", *_PAIR_MINERS}),
    # N-pair relies on its batch structure (one positive per anchor, every other class a negative) and RLL mines
    # inside the loss (its boundaries α − m and α): an outside miner would only break those definitions.
    "npair": frozenset({"none"}),
    "ranked_list": frozenset({"none"}),
    # EET's margin and equidistant constraints are defined on (a, p, n) triplets: triplet miners only.
    "eet": frozenset({"none", *_TRIPLET_MINERS}),
    # Proxy and classification losses compare embeddings with class weights, not with each other: nothing to mine.
    "proxy_nca": frozenset({"none"}),
    "proxy_anchor": frozenset({"none"}),
    "soft_triple": frozenset({"none"}),
    "normalized_softmax": frozenset({"none"}),
    "arcface": frozenset({"none"}),
    "cosface": frozenset({"none"}),
    "center": frozenset({"none"}),
})


def loss_hparams(name: str) -> dict[str, Any]:
    """The hyperparameters loss `name` accepts, with their defaults (REQUIRED when it has none)."""
    return dict(lookup(LOSS_HPARAMS, name, "loss"))


def miner_hparams(name: str) -> dict[str, Any]:
    """The hyperparameters miner `name` accepts, with their defaults."""
    return dict(lookup(MINER_HPARAMS, name, "miner"))


def compatible_miners(loss_name: str) -> frozenset[str]:
    """The miner names that make sense for `loss_name`; always contains "none"."""
    if loss_name not in COMPATIBLE_MINERS:
        raise ValueError(f"unknown loss {loss_name!r}; expected one of: {', '.join(COMPATIBLE_MINERS)}")
    return COMPATIBLE_MINERS[loss_name]
