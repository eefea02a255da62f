"""The default search space of every loss's hyperparameters, with the source of each range.

Names and units are PML 2.9's constructor arguments (issue 2). Abbreviations in the comments:
PML = pytorch-metric-learning 2.9 constructor default; RC = best values found by "A Metric Learning Reality Check"
(Musgrave et al., ECCV 2020) on CUB / Cars / SOP; official = the paper's official repository or README
(all as listed in ../shared/ANCHORS.md). A range is chosen to contain the reference default and every published
best value, with some room either side; hyperparameters without a default space here keep the loss's own default.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from search_spaces._hparam import HParamDef, count, real
from search_spaces._params import Fixed, IntRange, LogUniform, Uniform

__all__ = ["LOSS_DEFAULTS"]


def _frozen(table: dict[str, HParamDef]) -> Mapping[str, HParamDef]:
    return MappingProxyType(table)


LOSS_DEFAULTS: Mapping[str, Mapping[str, HParamDef]] = MappingProxyType({
    "contrastive": _frozen({
        # PML 0; RC -0.20 / 0.265 / 0.285. Kept below neg_margin's range so a positive pair never has to be
        # closer than a negative one is allowed to be.
        "pos_margin": real(Uniform(-0.25, 0.35)),
        # PML 1; RC 0.384 / 0.541 / 0.513 (Euclidean distance on the unit sphere, so at most 2).
        "neg_margin": real(Uniform(0.35, 1.25)),
    }),
    "triplet": _frozen({
        # PML 0.05; RC 0.0961 / 0.1190 / 0.0451; FaceNet (Schroff et al. 2015) 0.2.
        "margin": real(Uniform(0.01, 0.3), low=0.0),
    }),
    "lifted_structure": _frozen({
        # PML 0 (Song et al. 2016 have no positive margin); up to a quarter of the unit sphere's diameter.
        "pos_margin": real(Uniform(0.0, 0.5)),
        # PML 1 (Song et al. 2016: margin 1.0), half a unit either side.
        "neg_margin": real(Uniform(0.5, 1.5)),
    }),
    "npair": _frozen({}),
    "multi_similarity": _frozen({
        # PML 2, official 2; RC 0.01 / 14.35 / 8.49, and 17.97 with the MS miner: four decades, so log-scaled.
        "alpha": real(LogUniform(0.01, 50.0), low=0.0, open_low=True),
        # PML 50, official 40; RC 50.6 / 75.83 / 57.38 (and 75.66 with the miner).
        "beta": real(Uniform(10.0, 100.0), low=0.0, open_low=True),
        # PML 0.5, official 0.5; RC 0.56 / 0.66 / 0.41 (0.77 with the miner). A cosine similarity threshold.
        "base": real(Uniform(0.0, 1.0), low=-1.0, high=1.0),
    }),
    "ranked_list": _frozen({
        # Required in PML; official configs: CUB 0.2, SOP 0.4.
        "margin": real(Uniform(0.1, 0.6), low=0.0, open_low=True, reference=0.2),
        # Required in PML; official configs: Tn = 10 (CUB and SOP).
        "Tn": real(Uniform(0.0, 15.0), low=0.0, reference=10.0),
        # PML 0.5 (the positive/negative balance), kept away from ignoring either set.
        "imbalance": real(Uniform(0.3, 0.7), low=0.0, high=1.0),
        # The negative boundary: official CUB 1.4, PML 1 + margin / 2. Starts at 1.0 so that the positive
        # boundary alpha - margin (at least 0.4 here) stays positive.
        "alpha": real(Uniform(1.0, 1.6), low=0.0, open_low=True),
        # PML 0 and the official configs 0 (RLL-Simpler); override to sample it.
        "Tp": real(Fixed(0.0), low=0.0),
    }),
    "eet": _frozen({
        # The margin constraint is a triplet margin loss: the triplet range (PML 0.05, RC 0.045-0.119).
        "margin": real(Uniform(0.01, 0.3), low=0.0),
        # Xu et al. 2020 publish no weights (ANCHORS: reconstructed formulas): two decades either side of 1.
        "equidistant_weight": real(LogUniform(0.01, 10.0), low=0.0),
        "equidistributed_weight": real(LogUniform(0.01, 10.0), low=0.0),
    }),
    "proxy_nca": _frozen({
        # PML 1; RC 13.98 / 7.97 / 10.73: one to two decades, log-scaled.
        "softmax_scale": real(LogUniform(1.0, 100.0), low=0.0, open_low=True),
    }),
    "proxy_anchor": _frozen({
        # PML 0.1, official README delta = 0.1: from no margin to four times the reference.
        "margin": real(Uniform(0.0, 0.4), low=0.0),
        # PML 32, official README alpha = 32: two octaves either side.
        "alpha": real(LogUniform(8.0, 128.0), low=0.0, open_low=True),
    }),
    "soft_triple": _frozen({
        # PML 10 (Qian et al. 2019: K = 10); at least 2, else it is a one-centre normalised softmax.
        "centers_per_class": count(IntRange(2, 20)),
        # PML 20 (the paper's lambda): a scale, log-scaled around it.
        "la": real(LogUniform(5.0, 80.0), low=0.0, open_low=True),
        # PML 0.1 (1/gamma is the soft-assignment temperature): a decade either side.
        "gamma": real(LogUniform(0.01, 1.0), low=0.0, open_low=True),
        # PML 0.01 (the paper's delta): a decade either side.
        "margin": real(LogUniform(0.001, 0.1), low=0.0),
    }),
    "normalized_softmax": _frozen({
        # PML 0.05 (Zhai & Wu 2018); RC 0.1087 / 0.0886 / 0.0630; the temperature table in ANCHORS spans 0.005-1.0.
        "temperature": real(LogUniform(0.005, 1.0), low=0.0, open_low=True),
    }),
    "arcface": _frozen({
        # Degrees. PML 28.6 (0.5 rad, Deng et al. 2019); RC 23.22 / 20.52 / 18.63.
        "margin": real(Uniform(10.0, 45.0), low=0.0, high=90.0),
        # PML 64; RC 100 / 49.5 / 220.3.
        "scale": real(LogUniform(8.0, 256.0), low=0.0, open_low=True),
    }),
    "cosface": _frozen({
        # PML 0.35 (Wang et al. 2018), a cosine margin: from nearly none to 0.5.
        "margin": real(Uniform(0.05, 0.5), low=0.0),
        # PML 64, as for ArcFace.
        "scale": real(LogUniform(8.0, 256.0), low=0.0, open_low=True),
    }),
    "center": _frozen({
        # Our loss's default is 1.0, not Wen et al. 2016's lambda = 0.003: the embeddings are unit-norm, so the
        # centre term is at most 4 and a tiny weight leaves plain softmax (dml_core/losses/center.py). Two decades
        # below the default, one above.
        "center_weight": real(LogUniform(0.01, 10.0), low=0.0),
    }),
})
