"""The default search space of every miner's hyperparameters (PML 2.9 names and defaults, see ANCHORS)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from search_spaces._hparam import HParamDef, label, real
from search_spaces._params import Choice, Uniform

__all__ = ["MINER_DEFAULTS", "TRIPLET_TYPES"]

# Every type the triplet_margin miner accepts (PML's type_of_triplets).
TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


def _frozen(table: dict[str, HParamDef]) -> Mapping[str, HParamDef]:
    return MappingProxyType(table)


MINER_DEFAULTS: Mapping[str, Mapping[str, HParamDef]] = MappingProxyType({
    "none": _frozen({}),
    "batch_hard": _frozen({}),
    "multi_similarity": _frozen({
        # PML 0.1, official MS mining margin 0.1; RC 0.39 (MS + miner on CUB).
        "epsilon": real(Uniform(0.0, 0.5), low=0.0),
    }),
    "triplet_margin": _frozen({
        # PML 0.2; up to a quarter of the unit sphere's diameter.
        "margin": real(Uniform(0.0, 0.5)),
        # PML "all". "easy" triplets already satisfy the margin, so they give a triplet loss nothing to learn:
        # accepted in an override, left out of the default space.
        "type_of_triplets": label(Choice(("all", "hard", "semihard")), TRIPLET_TYPES),
    }),
    "pair_margin": _frozen({
        # PML 0.2 (positives farther than this are kept).
        "pos_margin": real(Uniform(0.0, 0.5)),
        # PML 0.8 (negatives closer than this are kept); ranges meet at 0.5 so pos_margin <= neg_margin.
        "neg_margin": real(Uniform(0.5, 1.5)),
    }),
    "distance_weighted": _frozen({
        # PML 0.5 (Wu et al. 2017's distance cut-off for the weights).
        "cutoff": real(Uniform(0.25, 0.75), low=0.0, high=2.0, open_low=True, open_high=True),
        # PML 1.4 (Wu et al. 2017); 2 is the unit sphere's diameter, where nothing is cut.
        "nonzero_loss_cutoff": real(Uniform(1.0, 2.0), low=0.0, open_low=True),
    }),
})
