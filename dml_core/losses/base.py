"""The base class every loss fills in: input checks once, the formula in `compute`."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from dml_core.tuples import Mined, Pairs

__all__ = ["MetricLoss", "at_most_one_pair_each", "zero_loss"]


def zero_loss(embeddings: torch.Tensor) -> torch.Tensor:
    """A 0 that is still connected to the graph, so `backward()` works on a batch with nothing to learn from."""
    return embeddings.sum() * 0.0


def at_most_one_pair_each(pairs: Pairs) -> bool:
    """Whether every index tensor of `pairs` holds at most one element (at most one positive and one negative
    pair: a single mined triplet, say). PML's GenericPairLoss then gives 0, and so do our losses derived from it
    (contrastive, multi_similarity, lifted_structure). Without a miner this never happens on a batch with a pair:
    all pairs come in both orders."""
    return pairs.a1.numel() <= 1 and pairs.a2.numel() <= 1


class MetricLoss(nn.Module):
    """`loss(embeddings (B, D), labels (B,), mined=None) -> scalar`.

    Subclasses take their hyperparameters as keyword-only constructor arguments with defaults (that signature is
    what `make_loss` validates against) and implement `compute`. Losses with class weights set `self.proxies`.
    Losses whose formula runs over miner output (`Pairs` / `Triplets`) set `takes_mined = True`; the contract
    suite reads it to know which losses must handle "nothing left after mining".
    """

    proxies: nn.Parameter | None
    # False by default: a loss opts in to miner output explicitly (proxy and classification losses have none).
    takes_mined: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.proxies = None

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, mined: Mined | None = None) -> torch.Tensor:
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be (batch, dim), got shape {tuple(embeddings.shape)}")
        if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
            raise ValueError(f"labels must be ({embeddings.shape[0]},), got shape {tuple(labels.shape)}")
        return self.compute(embeddings, labels, mined)

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, mined: Mined | None) -> torch.Tensor:
        raise NotImplementedError
