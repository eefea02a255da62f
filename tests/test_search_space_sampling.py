"""Turning a study space into configurations: random sampling, grids, Optuna (one study per loss, as the study's
searcher runs it), and the column schema and log scale."""

from __future__ import annotations

import math
import pickle

import numpy as np
import optuna
import pytest

from dml_core.errors import ConfigError
from dml_core.losses import LOSSES
from dml_core.miners import compatible_miners
from test_search_spaces import admits
from search_spaces import (Choice, Fixed, Grid, IntRange, LogUniform, LossSpace, Param, StudySpace, Uniform, columns,
                           full_comparison_space, grid, log_scale, loss_param_name, miner_param_name, sample, suggest,
                           suggest_loss)

optuna.logging.set_verbosity(optuna.logging.WARNING)

_PYTHON_TYPE = {"float": float, "int": int, "str": str, "bool": bool}


def _expected(space: StudySpace, loss_name: str, miner_name: str) -> dict[str, Param | None]:
    """The names (and distributions) a configuration of (loss, miner) must have, spelled out from the naming rule."""
    loss, miner = space.loss(loss_name), space.miners[miner_name]
    expected: dict[str, Param | None] = {"loss": None, "miner": None}
    expected |= {f"{loss.name}.{h}": p for h, p in loss.params.items()}
    expected |= {f"miner.{miner.name}.{h}": p for h, p in miner.params.items()}
    expected |= {f"train.{f}": p for f, p in space.train.items()}
    expected |= {f"model.{f}": p for f, p in space.model.items()}
    return expected


def _check_config(space: StudySpace, config: dict[str, object]) -> None:
    """A configuration holds a compatible (loss, miner) pair, exactly that pair's keys, and admissible values."""
    loss, miner = str(config["loss"]), str(config["miner"])
    assert miner in space.loss(loss).miners and miner in compatible_miners(loss)
    expected = _expected(space, loss, miner)
    assert set(config) == set(expected), (sorted(config), sorted(expected))
    for key, param in expected.items():
        if param is not None:
            assert admits(param, config[key]), (key, config[key], param)


def _train_space() -> dict[str, Param]:
    return {"lr": LogUniform(1e-5, 1e-3), "seed": Grid([0, 1, 2]), "epochs": IntRange(2, 4)}


def _model_space() -> dict[str, Param]:
    return {"embedding_dim": Grid([32, 64, 128], log=True)}


# ---- random sampling ----------------------------------------------------------------------------------------------

def test_sample_draws_only_compatible_pairs_with_only_the_chosen_components_keys():
    space = full_comparison_space(train=_train_space(), model=_model_space())
    rng = np.random.default_rng(0)
    configs = [sample(space, rng) for _ in range(3000)]
    for config in configs:
        _check_config(space, config)
        assert all(type(v) in (float, int, str, bool) for v in config.values())  # no numpy scalars
    pairs = {(c["loss"], c["miner"]) for c in configs}
    assert pairs == {(loss, miner) for loss in LOSSES for miner in compatible_miners(loss)}


def test_sample_is_reproducible_from_the_generator_alone():
    space = full_comparison_space(train=_train_space(), model=_model_space())
    first = [sample(space, np.random.default_rng(5)) for _ in range(20)]
    again = [sample(space, np.random.default_rng(5)) for _ in range(20)]
    other = [sample(space, np.random.default_rng(6)) for _ in range(20)]
    assert first == again
    assert first != other


def test_log_uniform_and_int_ranges_have_their_distributions():
    # TrainConfig fields with no meaning for these ranges, sampled only for their distributions.
    space = StudySpace((LossSpace("npair", {}),), train={
        "lr": LogUniform(1e-4, 1.0), "weight_decay": Uniform(1e-4, 1.0), "epochs": IntRange(1, 3),
        "batch_size": IntRange(1, 100, log=True)})
    rng = np.random.default_rng(1)
    draws = [sample(space, rng) for _ in range(4000)]
    below = lambda key, x: np.mean([d[key] < x for d in draws])  # noqa: E731
    assert abs(below("train.lr", 1e-2) - 0.5) < 0.04  # the log-midpoint of [1e-4, 1]
    assert below("train.weight_decay", 1e-2) < 0.03
    assert {d["train.epochs"] for d in draws} == {1, 2, 3}  # both ends included
    # Each integer k gets the log-width of [k - 1/2, k + 1/2]: P(k <= 10) = log(10.5 / 0.5) / log(100.5 / 0.5).
    expected = math.log(10.5 / 0.5) / math.log(100.5 / 0.5)
    assert abs(np.mean([d["train.batch_size"] <= 10 for d in draws]) - expected) < 0.04
    assert min(d["train.batch_size"] for d in draws) == 1 and max(d["train.batch_size"] for d in draws) <= 100


# ---- grid ---------------------------------------------------------------------------------------------------------

def _grid_space() -> StudySpace:
    return full_comparison_space(
        ["triplet", "npair"], ["none", "triplet_margin", "batch_hard"],
        loss_params={"triplet": {"margin": Grid([0.1, 0.2])}},
        miner_params={"triplet_margin": {"margin": Fixed(0.2), "type_of_triplets": Choice(["hard", "semihard"])}},
        train={"lr": Grid([1e-3, 1e-4]), "seed": Fixed(0)}, model={"embedding_dim": Fixed(32)})


def test_grid_enumerates_every_combination_once():
    configs = grid(_grid_space())
    keyed = {tuple(sorted(c.items())) for c in configs}
    assert len(keyed) == len(configs)
    expected = set()
    for lr in (1e-3, 1e-4):
        run = {"train.lr": lr, "train.seed": 0, "model.embedding_dim": 32}
        expected.add(tuple(sorted({"loss": "npair", "miner": "none", **run}.items())))
        for margin in (0.1, 0.2):
            triplet = {"loss": "triplet", "triplet.margin": margin, **run}
            expected.add(tuple(sorted({**triplet, "miner": "none"}.items())))
            expected.add(tuple(sorted({**triplet, "miner": "batch_hard"}.items())))
            for kind in ("hard", "semihard"):
                expected.add(tuple(sorted({**triplet, "miner": "triplet_margin", "miner.triplet_margin.margin": 0.2,
                                           "miner.triplet_margin.type_of_triplets": kind}.items())))
    assert keyed == expected
    assert len(configs) == 18  # (triplet: 2 margins x (1 + 2 + 1 miner settings) + npair: 1) x 2 lr


def test_grid_varies_the_last_value_fastest_within_each_loss_and_miner():
    configs = grid(_grid_space())
    assert [(c["loss"], c["miner"]) for c in configs[:4]] == [("triplet", "none")] * 4
    assert [(c["triplet.margin"], c["train.lr"]) for c in configs[:4]] == [
        (0.1, 1e-3), (0.1, 1e-4), (0.2, 1e-3), (0.2, 1e-4)]


def test_grid_configs_are_valid_samples_of_the_same_space():
    space = _grid_space()
    for config in grid(space):
        _check_config(space, config)


@pytest.mark.parametrize("loss_params, miner_params, train, model, path", [
    ({"triplet": {"margin": Uniform(0.0, 0.3)}}, {}, {}, {}, "search.space.triplet.margin"),
    ({}, {"triplet_margin": {"margin": Uniform(0.0, 0.3)}}, {}, {}, "search.space.miner.triplet_margin.margin"),
    ({}, {}, {"lr": LogUniform(1e-5, 1e-3)}, {}, "search.space.train.lr"),
    ({}, {}, {"epochs": IntRange(2, 4)}, {}, "search.space.train.epochs"),
    ({}, {}, {}, {"embedding_dim": IntRange(32, 128)}, "search.space.model.embedding_dim"),
])
def test_grid_refuses_ranges_with_a_config_error_at_the_parameter_path(loss_params, miner_params, train, model, path):
    fixed_grid = {"triplet": {"margin": Grid([0.1])}}
    fixed_miner = {"triplet_margin": {"margin": Grid([0.1]), "type_of_triplets": Fixed("hard")}}
    space = full_comparison_space(["triplet"], ["none", "triplet_margin"], loss_params={**fixed_grid, **loss_params},
                                  miner_params={**fixed_miner, **miner_params}, train=train, model=model)
    with pytest.raises(ConfigError) as info:
        grid(space)
    assert info.value.path == path
    assert info.value.message.startswith("grid search cannot enumerate")
    assert str(info.value) == f"{path}: {info.value.message}" and "\n" not in str(info.value)


def test_the_default_full_comparison_cannot_be_a_grid():
    with pytest.raises(ConfigError, match=r"^search\.space\.\w+\.\w+: grid search cannot enumerate"):
        grid(full_comparison_space())


# ---- columns and log scale ----------------------------------------------------------------------------------------

def test_columns_cover_every_key_sample_produces_with_its_type():
    space = full_comparison_space(train={**_train_space(), "include_nmi": Choice([False, True])},
                                  model=_model_space())
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
    assert schema["soft_triple.centers_per_class"] == "int"
    assert schema["miner.triplet_margin.type_of_triplets"] == "str"
    assert schema["train.include_nmi"] == "bool" and schema["train.seed"] == "int"
    assert schema["model.embedding_dim"] == "int"


def test_columns_list_the_losses_hyperparameters_before_the_miners_and_the_runs():
    schema = list(columns(_grid_space()))
    assert schema == ["loss", "miner", "triplet.margin", "miner.triplet_margin.margin",
                      "miner.triplet_margin.type_of_triplets", "train.lr", "train.seed", "model.embedding_dim"]


def test_columns_of_a_grid_space_cover_every_grid_key():
    space = _grid_space()
    schema = columns(space)
    keys = {key for config in grid(space) for key in config}
    assert keys == set(schema)


def test_log_scale_lists_each_losses_log_scaled_columns():
    space = full_comparison_space(["normalized_softmax", "triplet", "soft_triple"],
                                  loss_params={"triplet": {"margin": Grid([0.05, 0.5], log=True)}},
                                  train={"lr": LogUniform(1e-5, 1e-3), "seed": Grid([0, 1])}, model=_model_space())
    scaled = log_scale(space)
    assert set(scaled) == {"normalized_softmax", "triplet", "soft_triple"}
    assert scaled["normalized_softmax"] == ["model.embedding_dim", "normalized_softmax.temperature", "train.lr"]
    assert scaled["triplet"] == ["model.embedding_dim", "train.lr", "triplet.margin"]
    for loss, cols in scaled.items():
        for col in cols:
            assert col in columns(space)
    # Every log-scaled distribution reachable from a loss is listed, and nothing else.
    for loss in space.losses:
        expected = {f"{loss.name}.{h}" for h, p in loss.params.items() if p.log_scaled}
        expected |= {f"miner.{m}.{h}" for m in loss.miners for h, p in space.miners[m].params.items()
                     if p.log_scaled}
        expected |= {"train.lr", "model.embedding_dim"}
        assert set(scaled[loss.name]) == expected


# ---- Optuna: one study per loss, and one that chooses the loss ----------------------------------------------------

def _optuna_space() -> StudySpace:
    return full_comparison_space(
        ["triplet", "multi_similarity", "normalized_softmax", "soft_triple", "npair"],
        loss_params={"multi_similarity": {"base": Fixed(0.5)}},
        miner_params={"triplet_margin": {"type_of_triplets": Fixed("semihard")}},
        train={"lr": LogUniform(1e-5, 1e-3), "seed": Fixed(3)}, model={"embedding_dim": Grid([32])})


def _toy_objective(config: dict[str, object]) -> float:
    # Rewards a mid-sized margin and low temperatures, so TPE has something to model after its start-up trials.
    value = -abs(float(config.get("triplet.margin", 0.3)) - 0.1)
    value -= float(config.get("normalized_softmax.temperature", 0.1))
    return value + (0.05 if config["miner"] == "none" else 0.0)


class _Run:
    """Configurations asked of Optuna as the study's searcher asks them: the loss of a `loss` chooser study, the
    rest of that loss's own study."""

    def __init__(self, space: StudySpace, seed: int) -> None:
        tpe = lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=10)  # noqa: E731
        self.chooser = optuna.create_study(direction="maximize", sampler=tpe(seed))
        self.studies = {loss: optuna.create_study(direction="maximize", sampler=tpe(seed + 1 + i))
                        for i, loss in enumerate(space.loss_names)}
        self.asked: list[tuple[dict[str, object], optuna.Trial, optuna.Trial]] = []
        for loss in space.loss_names:  # every loss once first, as the searcher does
            self.chooser.enqueue_trial({"loss": loss})
        self.space = space

    def run(self, trials: int) -> _Run:
        for _ in range(trials):
            chooser = self.chooser.ask()
            loss = suggest_loss(self.space, chooser)
            trial = self.studies[loss].ask()
            config = suggest(self.space, loss, trial)
            self.asked.append((config, chooser, trial))
            value = _toy_objective(config)
            self.chooser.tell(chooser, value)
            self.studies[loss].tell(trial, value)
        return self

    @property
    def configs(self) -> list[dict[str, object]]:
        return [config for config, _, _ in self.asked]


def _asked_names(space: StudySpace, config: dict[str, object]) -> set[str]:
    """The Optuna parameters a loss's study should record for a configuration (fixed values and lists of one value
    are not asked; nor is a miner when the loss takes only one)."""
    expected = _expected(space, str(config["loss"]), str(config["miner"]))
    names = {n for n, p in expected.items()
             if p is not None and not isinstance(p, Fixed) and not (isinstance(p, (Choice, Grid)) and len(p.values) == 1)}
    return names | ({"miner"} if len(space.loss(str(config["loss"])).miners) > 1 else set())


def test_optuna_tpe_respects_ranges_conditionals_and_fixed_values():
    space = _optuna_space()
    run = _Run(space, seed=11).run(60)
    for config, chooser, trial in run.asked:
        _check_config(space, config)
        assert chooser.params == {"loss": config["loss"]}
        assert set(trial.params) == _asked_names(space, config)
        assert all(trial.params[name] == config[name] for name in trial.params)  # one name in both
        assert config["train.seed"] == 3 and config["model.embedding_dim"] == 32
        if config["loss"] == "multi_similarity":
            assert config["multi_similarity.base"] == 0.5
        if config["miner"] == "triplet_margin":
            assert config["miner.triplet_margin.type_of_triplets"] == "semihard"
    for loss, study in run.studies.items():
        # One name means one distribution in a loss's study, whichever miner's branch suggested it.
        distributions: dict[str, optuna.distributions.BaseDistribution] = {}
        for trial in study.trials:
            for name, distribution in trial.distributions.items():
                assert distributions.setdefault(name, distribution) == distribution, (loss, name)
    assert {c["loss"] for c in run.configs} == set(space.loss_names)  # every branch explored
    assert {c["miner"] for c in run.configs if c["loss"] == "triplet"} == set(space.loss("triplet").miners)


def test_optuna_is_deterministic_with_a_seed():
    space = _optuna_space()
    first = _Run(space, seed=3).run(25).configs
    again = _Run(space, seed=3).run(25).configs
    other = _Run(space, seed=4).run(25).configs
    assert first == again
    assert first != other


def test_optuna_configs_fit_the_column_schema():
    space = _optuna_space()
    schema = columns(space)
    for config in _Run(space, seed=0).run(30).configs:
        for key, value in config.items():
            assert type(value) is _PYTHON_TYPE[schema[key]], key


def test_optuna_with_a_single_loss_and_miner_asks_only_hyperparameters():
    space = full_comparison_space(["normalized_softmax"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    assert suggest_loss(space, trial) == "normalized_softmax"  # one loss is not a choice
    config = suggest(space, "normalized_softmax", trial)
    assert config["loss"] == "normalized_softmax" and config["miner"] == "none"
    assert set(trial.params) == {"normalized_softmax.temperature"}


def test_suggest_asks_the_miner_as_one_categorical_over_the_losses_miners():
    space = full_comparison_space(["triplet"], ["none", "batch_hard", "triplet_margin"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    miners = set()
    for _ in range(40):
        trial = study.ask()
        config = suggest(space, "triplet", trial)
        assert trial.distributions["miner"] == optuna.distributions.CategoricalDistribution(
            space.loss("triplet").miners)
        miners.add(trial.params["miner"])
        assert config["miner"] == trial.params["miner"]
        study.tell(trial, 0.0)
    assert miners == {"none", "batch_hard", "triplet_margin"}


def test_spaces_survive_pickling_and_still_suggest():
    # Ray pickles searchers, the space inside, when it checkpoints a study.
    space = _optuna_space()
    restored = pickle.loads(pickle.dumps(space))
    assert restored == space
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    _check_config(space, suggest(restored, "triplet", trial))


def test_param_name_helpers_spell_the_naming_rule():
    assert loss_param_name("triplet", "margin") == "triplet.margin"
    assert miner_param_name("triplet_margin", "margin") == "miner.triplet_margin.margin"
