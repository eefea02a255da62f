"""The YAML `search` section's space keys, and the two ready-made spaces (presets) they choose between.

    search:
      preset: full_comparison             # or sensitivity
      losses: [triplet, multi_similarity] # default: every loss
      miners: [none, triplet_margin]      # default: every miner (each loss keeps only its compatible ones)
      space:                              # keys are the names of the sampled values (search_spaces.space)
        triplet: {margin: {uniform: [0.05, 0.2]}}
        miner: {triplet_margin: {type_of_triplets: semihard}}
        train: {lr: {loguniform: [1.0e-5, 1.0e-3]}}
        model: {embedding_dim: {grid: [64, 128]}}
      sensitivity: {loss: normalized_softmax, param: temperature, values: [0.01, 0.05, 0.1], fixed: {}}

`full_comparison_space`: every loss (or the chosen ones) with its default space and all its compatible miners.
`sensitivity_space`: one loss, one of its hyperparameters on a grid, the others fixed, no miner.
Every problem raises a one-line ConfigError at the full key path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any

from dml_core.errors import ConfigError
from search_spaces.distributions import Fixed, Grid, Param, Scalar, is_positive_number, kind_of, parse_spec
from search_spaces.registry import (NO_MINER, HParamInfo, allowed_miners, loss_hparam_info, loss_names,
                                    miner_hparam_info, miner_names)
from search_spaces.space import MINER, LossSpace, MinerSpace, StudySpace

__all__ = ["SPACE_KEYS", "Preset", "full_comparison_space", "sensitivity_space", "space_from_config"]

# The keys of the `search` section this package reads; the study's config reader owns the others (algorithm,
# num_samples, metric, mode, seed) and passes only these.
SPACE_KEYS = ("preset", "losses", "miners", "space", "sensitivity")
_SENSITIVITY_KEYS = ("loss", "param", "values", "fixed")
# The sections of `space` besides the losses: they hold the miners' and the run's fields.
_RUN_SECTIONS = ("train", "model")


class Preset(str, Enum):
    FULL_COMPARISON = "full_comparison"
    SENSITIVITY = "sensitivity"


# ---------------------------------------------------------------------------------------------------------------
# The presets.


def _known_names(names: Sequence[str] | None, known: tuple[str, ...], path: str, what: str) -> tuple[str, ...]:
    """`names` checked against `known` (all of `known` when None)."""
    if names is None:
        return known
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ConfigError(path, f"expected a non-empty list of {what} names, got {names!r}")
    for name in names:
        if name not in known:
            raise ConfigError(path, f"unknown {what} {name!r}; expected one of: {', '.join(known)}")
        if list(names).count(name) > 1:
            raise ConfigError(path, f"{what} {name!r} appears twice")
    return tuple(names)


def _fit(build: Callable[[], Param], info: HParamInfo, path: str) -> Param:
    """The distribution `build` makes, fitted to the hyperparameter; any ValueError becomes a ConfigError."""
    try:
        return info.domain.fit(build())
    except ValueError as error:
        raise ConfigError(path, str(error)) from None


def _params(info: Mapping[str, HParamInfo], overrides: Mapping[str, Param]) -> dict[str, Param]:
    """The default space with `overrides` applied (StudySpace checks the names and fits the values)."""
    return {**{h: i.default_space for h, i in info.items() if i.default_space is not None}, **overrides}


def _check_targets(overrides: Mapping[str, object], used: Sequence[str], path: str, what: str) -> None:
    for name in overrides:
        if name not in used:
            raise ConfigError(f"{path}.{name}", f"{what} {name!r} is not part of this study "
                                                f"(selected: {', '.join(used)})")


def full_comparison_space(losses: Sequence[str] | None = None, miners: Sequence[str] | None = None, *,
                          loss_params: Mapping[str, Mapping[str, Param]] | None = None,
                          miner_params: Mapping[str, Mapping[str, Param]] | None = None,
                          train: Mapping[str, Param] | None = None, model: Mapping[str, Param] | None = None,
                          path: str = "search") -> StudySpace:
    """Every loss (or those in `losses`) with its default space and all its compatible miners (those also in
    `miners`, when given), with `loss_params[loss][h]` / `miner_params[miner][h]` replacing default spaces.
    """
    loss_params, miner_params = loss_params or {}, miner_params or {}
    selected = _known_names(losses, loss_names(), f"{path}.losses", "loss")
    allowed = _known_names(miners, miner_names(), f"{path}.miners", "miner")
    _check_targets(loss_params, selected, f"{path}.space", "loss")
    loss_spaces = []
    for loss in selected:
        taken = tuple(m for m in allowed_miners(loss) if m in allowed)
        if not taken:
            raise ConfigError(f"{path}.miners", f"no miner left for loss {loss!r}; it takes: "
                                                f"{', '.join(allowed_miners(loss))}")
        params = _params(loss_hparam_info(loss), loss_params.get(loss, {}))
        loss_spaces.append(LossSpace(loss, params, taken))
    used = [m for m in miner_names() if any(m in space.miners for space in loss_spaces)]
    _check_targets(miner_params, used, f"{path}.space.{MINER}", "miner")
    miner_spaces = {m: MinerSpace(m, _params(miner_hparam_info(m), miner_params.get(m, {}))) for m in used}
    return StudySpace(tuple(loss_spaces), miner_spaces, train or {}, model or {}, path)


def _swept(info: HParamInfo, values: Sequence[Scalar], path: str) -> Param:
    """The swept values as a grid, log-scaled like the hyperparameter's default space when all are positive."""
    swept = _fit(lambda: Grid(tuple(values)), info, path)
    if isinstance(swept, Grid) and info.default_space is not None and info.default_space.log_scaled and all(
            is_positive_number(v) for v in swept.values):
        return Grid(swept.values, log=True)
    return swept


def sensitivity_space(loss: str, param: str, values: Sequence[Scalar], *, fixed: Mapping[str, Scalar] | None = None,
                      train: Mapping[str, Param] | None = None, model: Mapping[str, Param] | None = None,
                      path: str = "search") -> StudySpace:
    """One loss, its hyperparameter `param` on a grid of `values`, every other hyperparameter with a default
    space fixed (at `fixed[h]`, else the loss's default), no miner. Other hyperparameters keep the loss's own
    defaults.
    """
    fixed = fixed or {}
    where = f"{path}.sensitivity"
    _known_names([loss], loss_names(), f"{where}.loss", "loss")
    info = loss_hparam_info(loss)
    if param not in info:
        raise ConfigError(f"{where}.param", f"unknown hyperparameter {param!r} of loss {loss!r}; "
                                            f"expected one of: {', '.join(info) or '(none)'}")
    params: dict[str, Param] = {param: _swept(info[param], values, f"{where}.values")}
    for h, value in fixed.items():
        if h == param:
            raise ConfigError(f"{where}.fixed.{h}", f"{h!r} is the swept parameter; it cannot also be fixed")
        if h not in info:
            raise ConfigError(f"{where}.fixed.{h}", f"unknown hyperparameter of loss {loss!r}; "
                                                    f"expected one of: {', '.join(info)}")
        params[h] = _fit(lambda: Fixed(value), info[h], f"{where}.fixed.{h}")  # noqa: B023  # called at once
    for h, i in info.items():
        if h in params or (i.default_space is None and not i.required):
            continue
        if i.default is None:
            if i.required:
                raise ConfigError(f"{where}.fixed.{h}", f"loss {loss!r} requires {h!r}; give it a value here")
            continue  # a None default (ranked_list's alpha = 1 + margin / 2): the loss works it out
        params[h] = Fixed(i.default)
    ordered = {h: params[h] for h in info if h in params}
    return StudySpace((LossSpace(loss, ordered, (NO_MINER,)),), {}, train or {}, model or {}, path)


# ---------------------------------------------------------------------------------------------------------------
# Reading the YAML.


def _mapping(value: object, path: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a mapping, got {value!r}")
    return value


def _only_keys(section: Mapping[Any, Any], allowed: Sequence[str], path: str) -> None:
    for key in section:
        if key not in allowed:
            raise ConfigError(f"{path}.{key}", f"unknown key; expected one of: {', '.join(allowed)}")


def _preset(value: object, path: str) -> Preset:
    try:
        return Preset(value)
    except ValueError:
        raise ConfigError(path, f"unknown preset {value!r}; expected one of: "
                                f"{', '.join(p.value for p in Preset)}") from None


def _hparams(section: object, info: Mapping[str, HParamInfo], path: str, owner: str) -> dict[str, Param]:
    """`{<hparam>: spec}` parsed against the hyperparameters `owner` accepts."""
    parsed = {}
    for h, spec in _mapping(section, path).items():
        if h not in info:
            raise ConfigError(f"{path}.{h}", f"unknown hyperparameter of {owner}; "
                                             f"expected one of: {', '.join(info) or '(none)'}")
        default = info[h].default_space
        parsed[h] = parse_spec(spec, f"{path}.{h}", domain=info[h].domain,
                               inherit_log=default is not None and default.log_scaled)
    return parsed


def _run_fields(section: object, path: str) -> dict[str, Param]:
    """`{<field>: spec}` of the train or model section (StudySpace checks the field names)."""
    parsed = {}
    for name, spec in _mapping(section, path).items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"{path}.{name}", "field names must be identifiers")
        parsed[name] = parse_spec(spec, f"{path}.{name}")
    return parsed


def _miner_overrides(section: object, path: str) -> dict[str, dict[str, Param]]:
    parsed = {}
    for miner, hparams in _mapping(section, path).items():
        if miner not in miner_names():
            raise ConfigError(f"{path}.{miner}", f"unknown miner; expected one of: {', '.join(miner_names())}")
        parsed[miner] = _hparams(hparams, miner_hparam_info(miner), f"{path}.{miner}", f"miner {miner!r}")
    return parsed


def _loss_overrides(space: Mapping[Any, Any], path: str) -> dict[str, dict[str, Param]]:
    parsed = {}
    for loss, hparams in space.items():
        if loss in (MINER, *_RUN_SECTIONS):
            continue
        if loss not in loss_names():
            raise ConfigError(f"{path}.{loss}", f"unknown key; expected a loss name ({', '.join(loss_names())}), "
                                                f"{MINER}, {' or '.join(_RUN_SECTIONS)}")
        parsed[loss] = _hparams(hparams, loss_hparam_info(loss), f"{path}.{loss}", f"loss {loss!r}")
    return parsed


def _fixed_values(section: object, path: str) -> dict[str, Scalar]:
    values = {}
    for h, value in _mapping(section, path).items():
        try:
            kind_of(value)
        except ValueError as error:
            raise ConfigError(f"{path}.{h}", f"fixed values must be plain values: {error}") from None
        values[h] = value
    return values


def _sensitivity(section: object, run: dict[str, dict[str, Param]], path: str) -> StudySpace:
    where = f"{path}.sensitivity"
    sweep = _mapping(section, where)
    _only_keys(sweep, _SENSITIVITY_KEYS, where)
    for key in ("loss", "param", "values"):
        if key not in sweep:
            raise ConfigError(f"{where}.{key}", "required by the sensitivity preset")
    for key in ("loss", "param"):
        if not isinstance(sweep[key], str):
            raise ConfigError(f"{where}.{key}", f"expected a name, got {sweep[key]!r}")
    values = sweep["values"]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}.values", f"expected a non-empty list of values, got {values!r}")
    fixed = _fixed_values(sweep.get("fixed", {}), f"{where}.fixed")
    return sensitivity_space(sweep["loss"], sweep["param"], values, fixed=fixed, path=path, **run)


def space_from_config(section: Mapping[str, Any], *, path: str = "search") -> StudySpace:
    """The study space that the space keys of a YAML `search` section describe (see the module doc)."""
    section = _mapping(section, path)
    _only_keys(section, SPACE_KEYS, path)
    preset = _preset(section.get("preset", Preset.FULL_COMPARISON.value), f"{path}.preset")
    space = _mapping(section.get("space", {}), f"{path}.space")
    run = {name: _run_fields(space.get(name, {}), f"{path}.space.{name}") for name in _RUN_SECTIONS}
    if preset is Preset.SENSITIVITY:
        for key in ("losses", "miners"):
            if key in section:
                raise ConfigError(f"{path}.{key}", "not used by the sensitivity preset (one loss, miner none); "
                                                   f"set {path}.sensitivity.loss instead")
        for key in space:
            if key not in _RUN_SECTIONS:
                raise ConfigError(f"{path}.space.{key}", "the sensitivity preset takes only space.train and "
                                                         f"space.model; fix loss hyperparameters in "
                                                         f"{path}.sensitivity.fixed")
        if "sensitivity" not in section:
            raise ConfigError(f"{path}.sensitivity", "required by preset sensitivity")
        return _sensitivity(section["sensitivity"], run, path)
    if "sensitivity" in section:
        raise ConfigError(f"{path}.sensitivity", "only used with preset: sensitivity")
    return full_comparison_space(section.get("losses"), section.get("miners"),
                                 loss_params=_loss_overrides(space, f"{path}.space"),
                                 miner_params=_miner_overrides(space.get(MINER, {}), f"{path}.space.{MINER}"),
                                 path=path, **run)
