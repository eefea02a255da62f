"""Which miners make sense for which loss, so that search spaces only sample valid (loss, miner) pairs."""

from __future__ import annotations

__all__ = ["COMPATIBLE_MINERS", "compatible_miners"]

_PAIR_MINERS = ("pair_margin", "multi_similarity")
_TRIPLET_MINERS = ("triplet_margin", "batch_hard", "distance_weighted")

COMPATIBLE_MINERS: dict[str, frozenset[str]] = {
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
}


def compatible_miners(loss_name: str) -> frozenset[str]:
    """The miner names that make sense for `loss_name`; always contains "none"."""
    if loss_name not in COMPATIBLE_MINERS:
        raise ValueError(f"unknown loss {loss_name!r}; expected one of: {', '.join(COMPATIBLE_MINERS)}")
    return COMPATIBLE_MINERS[loss_name]
