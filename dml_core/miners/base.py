"""The base class every miner fills in: input checks and `no_grad` once, the selection rule in `mine`.

Mining compares distances; it never back-propagates. Every miner works in *farness* units (`farness`): distances as
they are, similarities negated, so "larger is farther" holds for both kinds and one comparison serves both. Negation
is exact in floating point, so each comparison decides exactly as PML's sign-specific branches do.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar, TypeVar

import torch

from dml_core.distances import Distance
from dml_core.tuples import Mined, Pairs, Triplets

__all__ = ["Miner", "RUNTIME_ARGS", "farness", "empty_pairs", "empty_triplets", "finite_float"]

# Constructor arguments that are not searched hyperparameters: how to compute (distance), where randomness comes
# from (generator), and safety limits (max_triplets). `miner_hparams` leaves them out; `make_miner` refuses them,
# except `generator`, which it routes to the miners that sample.
RUNTIME_ARGS = frozenset({"distance", "generator", "max_triplets"})

V = TypeVar("V", torch.Tensor, float)


def farness(distance: Distance, values: V) -> V:
    """Values of `distance` (a matrix or a threshold) as "larger is farther": similarities are negated."""
    return -values if distance.is_inverted else values


def empty_pairs(device: torch.device) -> Pairs:
    empty = torch.empty(0, dtype=torch.int64, device=device)
    return Pairs(empty, empty.clone(), empty.clone(), empty.clone())


def empty_triplets(device: torch.device) -> Triplets:
    empty = torch.empty(0, dtype=torch.int64, device=device)
    return Triplets(empty, empty.clone(), empty.clone())


def finite_float(miner: str, name: str, value: float) -> float:
    """`value` as a float, or a one-line ValueError naming the miner, the hyperparameter and the bad value."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{miner} miner: {name} must be a number, got {name}={value!r}") from None
    if not math.isfinite(result):
        raise ValueError(f"{miner} miner: {name} must be finite, got {name}={value!r}")
    return result


class Miner:
    """`miner(embeddings (B, D), labels (B,)) -> Pairs | Triplets | None`, computed under `torch.no_grad`.

    Subclasses take their hyperparameters as keyword-only constructor arguments with defaults (that signature is
    what `make_miner` and `miner_hparams` read) and implement `mine`. Index tensors are int64 on the embeddings'
    device; a batch with nothing to mine gives empty tensors, never an error.
    """

    # What `mine` returns (None for the `none` miner): an empty batch gets an empty one without reaching `mine`.
    kind: ClassVar[type[Pairs] | type[Triplets] | None]

    @classmethod
    def hparam_defaults(cls) -> dict[str, Any]:
        """The searched hyperparameters of this miner, with their defaults."""
        params = inspect.signature(cls.__init__).parameters
        return {k: p.default for k, p in params.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and k not in RUNTIME_ARGS}

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Mined | None:
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be (batch, dim), got shape {tuple(embeddings.shape)}")
        if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
            raise ValueError(f"labels must be ({embeddings.shape[0]},), got shape {tuple(labels.shape)}")
        if embeddings.dtype in (torch.float16, torch.bfloat16):
            # Selection compares distances that half precision cannot tell apart; indices carry no dtype anyway.
            embeddings = embeddings.float()
        if embeddings.shape[0] == 0:
            return self.empty(embeddings.device)
        with torch.no_grad():
            return self.mine(embeddings.detach(), labels.to(embeddings.device))

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Mined | None:
        raise NotImplementedError

    def empty(self, device: torch.device) -> Mined | None:
        """The result of a batch with nothing to mine."""
        if self.kind is None:
            return None
        return empty_pairs(device) if self.kind is Pairs else empty_triplets(device)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.hparam_defaults())
        return f"{type(self).__name__}({args})"
