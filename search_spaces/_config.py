"""Reading the search-space keys of the YAML `search` section into a StudySpace.

    search:
      preset: full_comparison            # or sensitivity
      losses: [triplet, multi_similarity] # default: every loss
      miners: [none, triplet_margin]      # default: every miner (each loss keeps only its compatible ones)
      space:
        triplet: {margin: {uniform: [0.05, 0.2]}}
        miners: {triplet_margin: {type_of_triplets: semihard}}
        train: {lr: {loguniform: [1.0e-5, 1.0e-3]}}
      sensitivity: {loss: normalized_softmax, param: temperature, values: [0.01, 0.05, 0.1], fixed: {}}

Every problem raises a one-line ValueError that starts with the full key path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from search_spaces._params import Param
from search_spaces._presets import Preset, full_comparison, sensitivity
from search_spaces._registry import HParamInfo, loss_hparam_info, loss_names, miner_hparam_info, miner_names
from search_spaces._spec import parse_spec
from search_spaces._space import StudySpace
from search_spaces._values import Scalar, kind_of

__all__ = ["SPACE_KEYS", "space_from_config"]

# The keys of the `search` section this package reads; the study's config loader owns the others (algorithm,
# num_samples, metric, mode, seed) and passes only these.
SPACE_KEYS = ("preset", "losses", "miners", "space", "sensitivity")
_SENSITIVITY_KEYS = ("loss", "param", "values", "fixed")


def _mapping(value: object, path: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{path}: expected a mapping, got {value!r}")
    return value


def _only_keys(section: Mapping[Any, Any], allowed: Sequence[str], path: str) -> None:
    for key in section:
        if key not in allowed:
            raise ValueError(f"{path}.{key}: unknown key; expected one of: {', '.join(allowed)}")


def _preset(value: object, path: str) -> Preset:
    try:
        return Preset(value)
    except ValueError:
        raise ValueError(f"{path}: unknown preset {value!r}; expected one of: "
                         f"{', '.join(p.value for p in Preset)}") from None


def _hparams(section: object, info: Mapping[str, HParamInfo], path: str, owner: str) -> dict[str, Param]:
    """`{<hparam>: spec}` parsed against the hyperparameters `owner` accepts."""
    parsed = {}
    for h, spec in _mapping(section, path).items():
        if h not in info:
            raise ValueError(f"{path}.{h}: unknown hyperparameter of {owner}; "
                             f"expected one of: {', '.join(info) or '(none)'}")
        default = info[h].default_space
        parsed[h] = parse_spec(spec, f"{path}.{h}", domain=info[h].domain,
                               inherit_log=default is not None and default.log_scaled)
    return parsed


def _train(section: object, path: str) -> dict[str, Param]:
    """`{<TrainConfig field>: spec}`: any identifier (the study checks the names against TrainConfig)."""
    parsed = {}
    for field, spec in _mapping(section, path).items():
        if not isinstance(field, str) or not field.isidentifier():
            raise ValueError(f"{path}.{field}: training field names must be identifiers")
        parsed[field] = parse_spec(spec, f"{path}.{field}")
    return parsed


def _miner_overrides(section: object, path: str) -> dict[str, dict[str, Param]]:
    parsed = {}
    for miner, hparams in _mapping(section, path).items():
        if miner not in miner_names():
            raise ValueError(f"{path}.{miner}: unknown miner; expected one of: {', '.join(miner_names())}")
        parsed[miner] = _hparams(hparams, miner_hparam_info(miner), f"{path}.{miner}", f"miner {miner!r}")
    return parsed


def _loss_overrides(space: Mapping[Any, Any], path: str) -> dict[str, dict[str, Param]]:
    parsed = {}
    for loss, hparams in space.items():
        if loss in ("miners", "train"):
            continue
        if loss not in loss_names():
            raise ValueError(f"{path}.{loss}: unknown key; expected a loss name ({', '.join(loss_names())}), "
                             f"'miners' or 'train'")
        parsed[loss] = _hparams(hparams, loss_hparam_info(loss), f"{path}.{loss}", f"loss {loss!r}")
    return parsed


def _fixed_values(section: object, path: str) -> dict[str, Scalar]:
    values = {}
    for h, value in _mapping(section, path).items():
        try:
            kind_of(value)
        except ValueError as error:
            raise ValueError(f"{path}.{h}: fixed values must be plain values: {error}") from None
        values[h] = value
    return values


def _sensitivity(section: object, train: dict[str, Param], path: str) -> StudySpace:
    where = f"{path}.sensitivity"
    sweep = _mapping(section, where)
    _only_keys(sweep, _SENSITIVITY_KEYS, where)
    for key in ("loss", "param", "values"):
        if key not in sweep:
            raise ValueError(f"{where}.{key}: required by the sensitivity preset")
    for key in ("loss", "param"):
        if not isinstance(sweep[key], str):
            raise ValueError(f"{where}.{key}: expected a name, got {sweep[key]!r}")
    values = sweep["values"]
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}.values: expected a non-empty list of values, got {values!r}")
    fixed = _fixed_values(sweep.get("fixed", {}), f"{where}.fixed")
    return sensitivity(sweep["loss"], sweep["param"], values, fixed=fixed, train=train, path=path)


def space_from_config(section: Mapping[str, Any], *, path: str = "search") -> StudySpace:
    """The study space that the search-space keys of a YAML `search` section describe (see the module doc)."""
    section = _mapping(section, path)
    _only_keys(section, SPACE_KEYS, path)
    preset = _preset(section.get("preset", Preset.FULL_COMPARISON.value), f"{path}.preset")
    space = _mapping(section.get("space", {}), f"{path}.space")
    train = _train(space.get("train", {}), f"{path}.space.train")
    if preset is Preset.SENSITIVITY:
        for key in ("losses", "miners"):
            if key in section:
                raise ValueError(f"{path}.{key}: not used by the sensitivity preset (one loss, miner none); "
                                 f"set {path}.sensitivity.loss instead")
        for key in space:
            if key != "train":
                raise ValueError(f"{path}.space.{key}: the sensitivity preset takes only space.train; "
                                 f"fix loss hyperparameters in {path}.sensitivity.fixed")
        if "sensitivity" not in section:
            raise ValueError(f"{path}.sensitivity: required by preset sensitivity")
        return _sensitivity(section["sensitivity"], train, path)
    if "sensitivity" in section:
        raise ValueError(f"{path}.sensitivity: only used with preset: sensitivity")
    return full_comparison(section.get("losses"), section.get("miners"),
                           loss_params=_loss_overrides(space, f"{path}.space"),
                           miner_params=_miner_overrides(space.get("miners", {}), f"{path}.space.miners"),
                           train=train, path=path)
