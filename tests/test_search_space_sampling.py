"""Turning a study space into configurations: random sampling, grids, Optuna, and the column schema."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from dml_core.losses import LOSSES
from dml_core.miners import compatible_miners
from search_spaces import (Choice, Fixed, Grid, IntRange, LogUniform, LossSpace, Param, StudySpace, Uniform,
                           columns, full_comparison, grid, log_scale, sample, to_optuna)

optuna.logging.set_verbosity(optuna.logging.WARNING)

_PYTHON_TYPE = {"float": float, "int": int, "str": str, "bool": bool}


def _admits(param: Param, value: object) -> bool:
    """Whether `param` can produce `value` (its type included)."""
    if isinstance(param, Fixed):
        return value == param.value and type(value) is type(param.value)
    if isinstance(param, (Uniform, LogUniform)):
        return type(value) is float and param.low <= value <= param.high
    if isinstance(param, IntRange):
        return type(value) is int and param.low <= value <= param.high
    options = param.options if isinstance(param, Choice) else param.values
    return value in options and type(value) is type(options[0])


def _check_config(space: StudySpace, config: dict[str, object]) -> None:
    """A configuration holds a compatible (loss, miner) pair, exactly that pair's keys, and admissible values."""
    loss = space.loss(str(config["loss"]))
    miner = space.miners[str(config["miner"])]
    assert miner.name in loss.miners and miner.name in compatible_miners(loss.name)
    expected = {"loss": None, "miner": None}
    expected |= {f"loss.{h}": p for h, p in loss.params.items()}
    expected |= {f"miner.{h}": p for h, p in miner.params.items()}
    expected |= {f"train.{f}": p for f, p in space.train.items()}
    assert set(config) == set(expected), (sorted(config), sorted(expected))
    for key, param in expected.items():
        if param is not None:
            assert _admits(param, config[key]), (key, config[key], param)


def _train_space() -> dict[str, Param]:
    return {"lr": LogUniform(1e-5, 1e-3), "seed": Grid([0, 1, 2]), "epochs": IntRange(2, 4)}


# ---- random sampling ----------------------------------------------------------------------------------------------

def test_sample_draws_only_compatible_pairs_with_only_the_chosen_components_keys():
    space = full_comparison(train=_train_space())
    rng = np.random.default_rng(0)
    configs = [sample(space, rng) for _ in range(3000)]
    for config in configs:
        _check_config(space, config)
        assert all(type(v) in (float, int, str, bool) for v in config.values())  # no numpy scalars
    pairs = {(c["loss"], c["miner"]) for c in configs}
    assert pairs == {(loss, miner) for loss in LOSSES for miner in compatible_miners(loss)}


def test_sample_is_reproducible_from_the_generator_alone():
    space = full_comparison(train=_train_space())
    first = [sample(space, np.random.default_rng(5)) for _ in range(20)]
    again = [sample(space, np.random.default_rng(5)) for _ in range(20)]
    other = [sample(space, np.random.default_rng(6)) for _ in range(20)]
    assert first == again
    assert first != other


def test_log_uniform_and_int_ranges_have_their_distributions():
    space = StudySpace((LossSpace("npair", {}),), train={
        "log": LogUniform(1e-4, 1.0), "flat": Uniform(1e-4, 1.0), "few": IntRange(1, 3),
        "many": IntRange(1, 100, log=True)})
    rng = np.random.default_rng(1)
    draws = [sample(space, rng) for _ in range(4000)]
    below = lambda key, x: np.mean([d[key] < x for d in draws])  # noqa: E731
    assert abs(below("train.log", 1e-2) - 0.5) < 0.04  # the log-midpoint of [1e-4, 1]
    assert below("train.flat", 1e-2) < 0.03
    assert {d["train.few"] for d in draws} == {1, 2, 3}  # both ends included
    # Each integer k gets the log-width of [k - 1/2, k + 1/2]: P(k <= 10) = log(10.5 / 0.5) / log(100.5 / 0.5).
    expected = math.log(10.5 / 0.5) / math.log(100.5 / 0.5)
    assert abs(np.mean([d["train.many"] <= 10 for d in draws]) - expected) < 0.04
    assert min(d["train.many"] for d in draws) == 1 and max(d["train.many"] for d in draws) <= 100


# ---- grid ---------------------------------------------------------------------------------------------------------

def _grid_space() -> StudySpace:
    return full_comparison(
        ["triplet", "npair"], ["none", "triplet_margin", "batch_hard"],
        loss_params={"triplet": {"margin": Grid([0.1, 0.2])}},
        miner_params={"triplet_margin": {"margin": Fixed(0.2), "type_of_triplets": Choice(["hard", "semihard"])}},
        train={"lr": Grid([1e-3, 1e-4]), "seed": Fixed(0)})


def test_grid_enumerates_every_combination_once():
    configs = grid(_grid_space())
    keyed = {tuple(sorted(c.items())) for c in configs}
    assert len(keyed) == len(configs)
    expected = set()
    for lr in (1e-3, 1e-4):
        train = {"train.lr": lr, "train.seed": 0}
        expected.add(tuple(sorted({"loss": "npair", "miner": "none", **train}.items())))
        for margin in (0.1, 0.2):
            triplet = {"loss": "triplet", "loss.margin": margin, **train}
            expected.add(tuple(sorted({**triplet, "miner": "none"}.items())))
            expected.add(tuple(sorted({**triplet, "miner": "batch_hard"}.items())))
            for kind in ("hard", "semihard"):
                expected.add(tuple(sorted({**triplet, "miner": "triplet_margin", "miner.margin": 0.2,
                                           "miner.type_of_triplets": kind}.items())))
    assert keyed == expected
    assert len(configs) == 18  # (triplet: 2 margins x (1 + 2 + 1 miner settings) + npair: 1) x 2 lr


def test_grid_configs_are_valid_samples_of_the_same_space():
    space = _grid_space()
    for config in grid(space):
        _check_config(space, config)


@pytest.mark.parametrize("loss_params, miner_params, train, path", [
    ({"triplet": {"margin": Uniform(0.0, 0.3)}}, {}, {}, "search.space.triplet.margin"),
    ({}, {"triplet_margin": {"margin": Uniform(0.0, 0.3)}}, {}, "search.space.miners.triplet_margin.margin"),
    ({}, {}, {"lr": LogUniform(1e-5, 1e-3)}, "search.space.train.lr"),
    ({}, {}, {"epochs": IntRange(2, 4)}, "search.space.train.epochs"),
])
def test_grid_refuses_ranges_naming_the_parameter_path(loss_params, miner_params, train, path):
    fixed_grid = {"triplet": {"margin": Grid([0.1])}}
    fixed_miner = {"triplet_margin": {"margin": Grid([0.1]), "type_of_triplets": Fixed("hard")}}
    space = full_comparison(["triplet"], ["none", "triplet_margin"], loss_params={**fixed_grid, **loss_params},
                            miner_params={**fixed_miner, **miner_params}, train=train)
    with pytest.raises(ValueError) as info:
        grid(space)
    assert str(info.value).startswith(f"{path}: grid search cannot enumerate")
    assert "\n" not in str(info.value)


def test_the_default_full_comparison_cannot_be_a_grid():
    with pytest.raises(ValueError, match=r"^search\.space\.\w+\.\w+: grid search cannot enumerate"):
        grid(full_comparison())


# ---- columns and log scale ----------------------------------------------------------------------------------------

def test_columns_cover_every_key_sample_produces_with_its_type():
    space = full_comparison(train={**_train_space(), "amp": Choice([False, True])})
    schema = columns(space)
    assert set(schema.values()) <= {"float", "int", "str", "bool"}
    rng = np.random.default_rng(2)
    seen: set[str] = set()
    for _ in range(3000):
        config = sample(space, rng)
        for key, value in config.items():
            assert type(value) is _PYTHON_TYPE[schema[key]], (key, value, schema[key])
        seen |= set(config)
    assert seen == set(schema)  # and no column that no configuration can have
    assert list(schema)[:2] == ["loss", "miner"]
    assert schema["loss.centers_per_class"] == "int" and schema["miner.type_of_triplets"] == "str"
    assert schema["train.amp"] == "bool" and schema["train.seed"] == "int"


def test_columns_of_a_grid_space_cover_every_grid_key():
    space = _grid_space()
    schema = columns(space)
    keys = {key for config in grid(space) for key in config}
    assert keys == set(schema)


def test_log_scale_lists_each_losses_log_scaled_columns():
    space = full_comparison(["normalized_softmax", "triplet", "soft_triple"],
                            loss_params={"triplet": {"margin": Grid([0.05, 0.5], log=True)}},
                            train={"lr": LogUniform(1e-5, 1e-3), "seed": Grid([0, 1])})
    scaled = log_scale(space)
    assert set(scaled) == {"normalized_softmax", "triplet", "soft_triple"}
    assert scaled["normalized_softmax"] == ["loss.temperature", "train.lr"]
    assert scaled["triplet"] == ["loss.margin", "train.lr"]
    for loss, cols in scaled.items():
        for col in cols:
            assert col in columns(space)
    # Every log-scaled primitive reachable from a loss is listed, and nothing else.
    for loss in space.losses:
        expected = {f"loss.{h}" for h, p in loss.params.items() if p.log_scaled}
        expected |= {f"miner.{h}" for m in loss.miners for h, p in space.miners[m].params.items() if p.log_scaled}
        expected |= {"train.lr"}
        assert set(scaled[loss.name]) == expected


# ---- Optuna -------------------------------------------------------------------------------------------------------

def _optuna_space() -> StudySpace:
    return full_comparison(
        ["triplet", "multi_similarity", "normalized_softmax", "soft_triple", "npair"],
        loss_params={"multi_similarity": {"base": Fixed(0.5)}},
        miner_params={"triplet_margin": {"type_of_triplets": Fixed("semihard")}},
        train={"lr": LogUniform(1e-5, 1e-3), "seed": Fixed(3)})


def _toy_objective(config: dict[str, object]) -> float:
    # Rewards a mid-sized margin and low temperatures, so TPE has something to model after its start-up trials.
    value = -abs(float(config.get("loss.margin", 0.3)) - 0.1)
    value -= float(config.get("loss.temperature", 0.1))
    return value + (0.05 if config["miner"] == "none" else 0.0)


def _run_tpe(space: StudySpace, seed: int, trials: int = 40) -> tuple[list[dict[str, object]], optuna.Study]:
    define = to_optuna(space)
    configs: list[dict[str, object]] = []

    def objective(trial: optuna.Trial) -> float:
        config = define(trial)
        configs.append(config)
        return _toy_objective(config)

    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=10))
    study.optimize(objective, n_trials=trials)
    return configs, study


def _optuna_names(space: StudySpace, config: dict[str, object]) -> set[str]:
    """The Optuna parameters a configuration should have been suggested under (fixed values are not)."""
    loss = space.loss(str(config["loss"]))
    miner = space.miners[str(config["miner"])]
    names = {"loss"} | {f"{loss.name}.{h}" for h, p in loss.params.items() if not isinstance(p, Fixed)}
    names |= {f"{loss.name}.miner"} if len(loss.miners) > 1 else set()
    names |= {f"miner.{miner.name}.{h}" for h, p in miner.params.items() if not isinstance(p, Fixed)}
    return names | {f"train.{f}" for f, p in space.train.items() if not isinstance(p, Fixed)}


def test_optuna_tpe_respects_ranges_conditionals_and_fixed_values():
    space = _optuna_space()
    configs, study = _run_tpe(space, seed=11)
    distributions: dict[str, optuna.distributions.BaseDistribution] = {}
    for config, trial in zip(configs, study.trials):
        _check_config(space, config)
        assert set(trial.params) == _optuna_names(space, config)
        for name, value in trial.params.items():
            # One name means one distribution in the whole study, whichever branch suggested it.
            assert distributions.setdefault(name, trial.distributions[name]) == trial.distributions[name]
        assert config["train.seed"] == 3 and "train.seed" not in trial.params
        if config["loss"] == "multi_similarity":
            assert config["loss.base"] == 0.5 and "multi_similarity.base" not in trial.params
        if config["miner"] == "triplet_margin":
            assert config["miner.type_of_triplets"] == "semihard"
        for key, value in config.items():
            loss = str(config["loss"])
            name = {"loss": "loss", "miner": f"{loss}.miner"}.get(key) or (
                f"{loss}.{key[5:]}" if key.startswith("loss.") else
                f"miner.{config['miner']}.{key[6:]}" if key.startswith("miner.") else key)
            if name in trial.params:
                assert trial.params[name] == value  # the configuration is what Optuna suggested
    assert {c["loss"] for c in configs} == set(space.loss_names)  # TPE explored every branch


def test_optuna_is_deterministic_with_a_seed():
    space = _optuna_space()
    first, _ = _run_tpe(space, seed=3, trials=25)
    again, _ = _run_tpe(space, seed=3, trials=25)
    other, _ = _run_tpe(space, seed=4, trials=25)
    assert first == again
    assert first != other


def test_optuna_configs_fit_the_column_schema():
    space = _optuna_space()
    schema = columns(space)
    configs, _ = _run_tpe(space, seed=0, trials=30)
    for config in configs:
        for key, value in config.items():
            assert type(value) is _PYTHON_TYPE[schema[key]], key


def test_optuna_with_a_single_loss_and_miner_suggests_only_hyperparameters():
    space = full_comparison(["normalized_softmax"])
    define = to_optuna(space)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    config = define(trial)
    assert config["loss"] == "normalized_softmax" and config["miner"] == "none"
    assert set(trial.params) == {"normalized_softmax.temperature"}


def test_spaces_and_the_optuna_function_survive_pickling():
    # Ray pickles searchers (and the define-by-run function inside) when it checkpoints a study.
    import pickle

    space = _optuna_space()
    assert pickle.loads(pickle.dumps(space)) == space
    define = pickle.loads(pickle.dumps(to_optuna(space)))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    _check_config(space, define(trial))
