"""Losses: an explicit name table and a validating factory.

Adding a loss touches three places: its module, this table, its test.
"""

from __future__ import annotations

import inspect
from typing import Any

from dml_core.losses.base import MetricLoss, zero_loss
from dml_core.names import check_known, lookup
from dml_core.losses.contrastive import ContrastiveLoss
from dml_core.losses.triplet import TripletMarginLoss
from dml_core.losses.lifted_structure import LiftedStructureLoss
from dml_core.losses.npair import NPairsLoss
from dml_core.losses.multi_similarity import MultiSimilarityLoss
from dml_core.losses.ranked_list import RankedListLoss
from dml_core.losses.eet import EETLoss
from dml_core.losses.proxy_nca import ProxyNCALoss
from dml_core.losses.proxy_anchor import ProxyAnchorLoss
from dml_core.losses.soft_triple import SoftTripleLoss
from dml_core.losses.normalized_softmax import NormalizedSoftmaxLoss
from dml_core.losses.arcface import ArcFaceLoss
from dml_core.losses.cosface import CosFaceLoss
from dml_core.losses.center import CenterLoss

__all__ = ["LOSSES", "MetricLoss", "loss_hparams", "make_loss", "zero_loss", "ContrastiveLoss", "TripletMarginLoss", "LiftedStructureLoss", "NPairsLoss", "MultiSimilarityLoss", "RankedListLoss", "EETLoss", "ProxyNCALoss", "ProxyAnchorLoss", "SoftTripleLoss", "NormalizedSoftmaxLoss", "ArcFaceLoss", "CosFaceLoss", "CenterLoss"]

LOSSES: dict[str, type[MetricLoss]] = {
    "contrastive": ContrastiveLoss,
    "triplet": TripletMarginLoss,
    "lifted_structure": LiftedStructureLoss,
    "npair": NPairsLoss,
    "multi_similarity": MultiSimilarityLoss,
    "ranked_list": RankedListLoss,
    "eet": EETLoss,
    "proxy_nca": ProxyNCALoss,
    "proxy_anchor": ProxyAnchorLoss,
    "soft_triple": SoftTripleLoss,
    "normalized_softmax": NormalizedSoftmaxLoss,
    "arcface": ArcFaceLoss,
    "cosface": CosFaceLoss,
    "center": CenterLoss,
}

# Constructor arguments that describe the problem, not the loss: make_loss supplies them, search spaces never do.
_PROBLEM_ARGS = ("num_classes", "embedding_dim")


def _loss_class(name: str) -> type[MetricLoss]:
    return lookup(LOSSES, name, "loss")


def loss_hparams(name: str) -> dict[str, Any]:
    """The hyperparameters loss `name` accepts, with their defaults (`inspect.Parameter.empty` when required)."""
    params = inspect.signature(_loss_class(name).__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self" and k not in _PROBLEM_ARGS
            and p.kind is inspect.Parameter.KEYWORD_ONLY}


def make_loss(name: str, *, num_classes: int, embedding_dim: int, **hparams: Any) -> MetricLoss:
    """Build loss `name`; unknown names and hyperparameters raise ValueError listing the valid ones."""
    cls = _loss_class(name)
    check_known(hparams, loss_hparams(name), "hyperparameter(s)", f"loss {name!r}")
    if num_classes < 1 or embedding_dim < 1:
        raise ValueError(f"loss {name!r} needs positive sizes, got {num_classes=}, {embedding_dim=}")
    signature = inspect.signature(cls.__init__).parameters
    problem = {k: v for k, v in (("num_classes", num_classes), ("embedding_dim", embedding_dim)) if k in signature}
    return cls(**problem, **hparams)
