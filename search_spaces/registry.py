"""The registry of per-loss and per-miner spaces: dml_core's names and defaults, with this package's knowledge.

dml_core is the source of truth for names: which losses and miners exist, which hyperparameters each accepts and
their defaults, which miners a loss takes (read from dml_core.catalog, so that a config is checked without torch). This module adds, per hyperparameter, its default search space (with
the source of each range), the values it accepts (a `Domain`) and, where the loss has no default, a reference
value. A default space naming a hyperparameter that dml_core does not accept is an error here, before any study.

Sources in the comments: PML = pytorch-metric-learning 2.9's constructor default; RC = the best values found by
"A Metric Learning Reality Check" (Musgrave et al., ECCV 2020) on CUB / Cars / SOP; official = the paper's
official repository or README. A range is chosen to contain the reference default and every published best value,
with some room either side; hyperparameters without a default space keep the loss's own default.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from dml_core.catalog import LOSS_HPARAMS, MINER_HPARAMS, compatible_miners, loss_hparams, miner_hparams
from search_spaces.distributions import (Choice, Domain, Fixed, IntRange, LogUniform, Param, Scalar, Uniform,
                                         ValueKind, coerce, kind_of)

__all__ = ["LOSS_DEFAULTS", "MINER_DEFAULTS", "NO_MINER", "TRIPLET_TYPES", "HParamDef", "HParamInfo",
           "allowed_miners", "loss_hparam_info", "loss_names", "miner_hparam_info", "miner_names"]

# The miner name that means "no miner" (dml_core.catalog.compatible_miners always contains it).
NO_MINER = "none"
# Every type the triplet_margin miner accepts (PML's type_of_triplets).
TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


@dataclass(frozen=True)
class HParamDef:
    """A hyperparameter as this package defines it: its default search space and the values it accepts."""

    space: Param
    domain: Domain
    # Only used where the loss itself has no default (PML's RankedListLoss requires margin and Tn): the sensitivity
    # preset fixes the unswept hyperparameters at their defaults, so a required one needs a value from somewhere.
    reference: Scalar | None = None

    def __post_init__(self) -> None:
        if self.domain.fit(self.space) != self.space:
            raise ValueError(f"default space {self.space.to_spec()!r} must already have the {self.domain.kind} type")
        if self.reference is not None and not self.domain.contains(self.reference):
            raise ValueError(f"reference={self.reference!r} must be {self.domain.describe()}")


def real(space: Param, *, low: float | None = None, high: float | None = None, open_low: bool = False,
         open_high: bool = False, reference: float | None = None) -> HParamDef:
    """A float hyperparameter valid in [low, high] (None: unbounded on that side)."""
    return HParamDef(space, Domain(ValueKind.FLOAT, low, high, open_low, open_high), reference)


def count(space: Param, *, low: int = 1, reference: int | None = None) -> HParamDef:
    """An int hyperparameter valid from `low` up."""
    return HParamDef(space, Domain(ValueKind.INT, low), reference)


def label(space: Param, options: tuple[str, ...]) -> HParamDef:
    """A str hyperparameter that takes one of `options`."""
    return HParamDef(space, Domain(ValueKind.STR, options=options))


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
        # Xu et al. 2020 publish no weights (the loss is reconstructed from write-ups of the paper): two decades
        # either side of 1.
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
        # PML 0.05 (Zhai & Wu 2018); RC 0.1087 / 0.0886 / 0.0630; published temperature sweeps on CUB span
        # 0.005-1.0 (R@1 peaks at 0.05-0.1 and falls by two thirds at 0.005).
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


@dataclass(frozen=True)
class HParamInfo:
    """One hyperparameter of a loss or miner, as the config reader and the presets need it."""

    domain: Domain
    # The default search space, or None where this package has none (the loss's own default then applies).
    default_space: Param | None
    # The component's own default when it is a plain value, else the reference value of the default space entry.
    default: Scalar | None
    # True when the component's constructor has no default: every configuration must then carry a value.
    required: bool


def loss_names() -> tuple[str, ...]:
    return tuple(LOSS_HPARAMS)


def miner_names() -> tuple[str, ...]:
    """Every miner name, "none" first."""
    return (NO_MINER, *(m for m in MINER_HPARAMS if m != NO_MINER))


def allowed_miners(loss: str) -> tuple[str, ...]:
    """The miners `loss` may take, in miner_names() order (a frozenset's order changes with the hash seed)."""
    compatible = compatible_miners(loss) | {NO_MINER}
    return tuple(m for m in miner_names() if m in compatible)


def _scalar_default(value: Any) -> Scalar | None:
    try:
        kind_of(value)
    except ValueError:
        return None  # None, inspect.Parameter.empty, or a non-scalar default: nothing to record
    return value  # type: ignore[no-any-return]


def _info(owner: str, runtime: Mapping[str, Any], defaults: Mapping[str, HParamDef]) -> dict[str, HParamInfo]:
    """dml_core's hyperparameters of `owner` (the source of truth for names) with this package's knowledge."""
    stray = [name for name in defaults if name not in runtime]
    if stray:  # a renamed hyperparameter: fail before a study starts, not in every trial
        raise ValueError(f"the default space of {owner} names {stray[0]!r}, which it does not accept "
                         f"(it takes: {', '.join(runtime) or 'nothing'})")
    table: dict[str, HParamInfo] = {}
    for name in (*defaults, *(n for n in runtime if n not in defaults)):
        own = _scalar_default(runtime[name])
        known = defaults.get(name)
        if known is not None:
            domain = known.domain
        else:
            domain = Domain(kind_of(own)) if own is not None else Domain()
        default = own if own is not None else (known.reference if known is not None else None)
        if default is not None and domain.kind is not None:
            default = coerce(default, domain.kind)
        table[name] = HParamInfo(domain, known.space if known else None, default,
                                 required=runtime[name] is inspect.Parameter.empty)
    return table


def loss_hparam_info(loss: str) -> dict[str, HParamInfo]:
    """Every hyperparameter of `loss` that dml_core or this package knows, default spaces first."""
    return _info(f"loss {loss!r}", loss_hparams(loss), LOSS_DEFAULTS.get(loss, {}))


def miner_hparam_info(miner: str) -> dict[str, HParamInfo]:
    return _info(f"miner {miner!r}", miner_hparams(miner), MINER_DEFAULTS.get(miner, {}))
