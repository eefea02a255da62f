"""The one-name rule: each sampled value has one name, used alike as the key of a configuration (`sample`, `grid`,
`suggest`), the column (`columns`), the Optuna parameter (`trial.params`, `params_<name>` in Optuna's trials
table), the key path below `search.space` in the YAML, the key path of its errors, and the key `to_train_config`
reads into TrainConfig."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import optuna
import pytest
import yaml

from dml_core.config import ModelConfig, TrainConfig
from dml_core.errors import ConfigError
from search_spaces import (MODEL_FIELDS, REPEAT_NAMES, TRAIN_FIELDS, Choice, Grid, LossSpace, MinerSpace, Param,
                           StudySpace, columns, grid, sample, space_from_config, suggest, suggest_loss,
                           to_train_config)

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Several losses, several miners each (multi_similarity is both a loss and a miner), train and model fields.
_SEARCH = yaml.safe_load("""
search:
  losses: [triplet, contrastive, multi_similarity, normalized_softmax]
  miners: [none, triplet_margin, multi_similarity, batch_hard]
  space:
    train: {lr: {loguniform: [1.0e-5, 1.0e-3]}, seed: {grid: [0, 1]}, include_nmi: {choice: [false, true]}}
    model: {embedding_dim: {grid: [32, 64]}}
""")["search"]


def _space(section: dict[str, Any] | None = None) -> StudySpace:
    return space_from_config(section if section is not None else _SEARCH)


def _names() -> list[str]:
    """Every name of the space except `loss` and `miner`, which are set by lists, not below `search.space`."""
    return [name for name in columns(_space()) if name not in ("loss", "miner")]


def _with_space_key(name: str, spec: object) -> dict[str, Any]:
    """The `search` section with `search.space.<name>` (the name split at its dots) set to `spec`."""
    section = copy.deepcopy(_SEARCH)
    node = section["space"]
    *parents, leaf = name.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = spec
    return section


def _params(space: StudySpace) -> dict[str, Param]:
    """Name -> distribution, from the space's own entries."""
    return {entry.name: entry.param for _, entry in space.all_entries()}


def test_the_space_has_every_kind_of_name():
    names = set(columns(_space()))
    assert names == {"loss", "miner", "triplet.margin", "contrastive.pos_margin", "contrastive.neg_margin",
                     "multi_similarity.alpha", "multi_similarity.beta", "multi_similarity.base",
                     "normalized_softmax.temperature", "miner.triplet_margin.margin",
                     "miner.triplet_margin.type_of_triplets", "miner.multi_similarity.epsilon", "train.lr",
                     "train.seed", "train.include_nmi", "model.embedding_dim"}


def test_every_entry_is_named_by_its_yaml_key_below_search_space():
    for path in ("search", "studies.a.search"):
        space = space_from_config(_SEARCH, path=path)
        entries = [entry for _, entry in space.all_entries()]
        assert entries
        for entry in entries:
            assert entry.path == f"{path}.space.{entry.name}"
        assert {e.name for e in entries} == set(columns(space)) - {"loss", "miner"}


def test_sample_produces_exactly_the_column_names():
    space = _space()
    schema = columns(space)
    rng = np.random.default_rng(0)
    seen: set[str] = set()
    for _ in range(400):
        config = sample(space, rng)
        assert set(config) <= set(schema)
        seen |= set(config)
    assert seen == set(schema)


def _as_grid(space: StudySpace) -> StudySpace:
    """The same space with every range replaced by a grid of its ends."""
    to_grid = lambda params: {h: Grid(p.boundary_values()) for h, p in params.items()}  # noqa: E731
    return StudySpace(tuple(LossSpace(loss.name, to_grid(loss.params), loss.miners) for loss in space.losses),
                      {m: MinerSpace(m, to_grid(s.params)) for m, s in space.miners.items()},
                      to_grid(space.train), to_grid(space.model))


def test_grid_produces_exactly_the_column_names():
    space = _as_grid(_space())
    assert list(columns(space)) == list(columns(_space()))
    keys = [set(config) for config in grid(space)]
    assert all(k <= set(columns(space)) for k in keys)
    assert set().union(*keys) == set(columns(space))


def _ask_every_branch(space: StudySpace) -> tuple[optuna.Study, dict[str, optuna.Study], list[dict[str, Any]]]:
    """A `loss` chooser study and one study per loss, as the study's searcher has them; every (loss, miner) once."""
    chooser = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    studies = {loss: optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)) for loss in space.loss_names}
    configs = []
    for loss in space.losses:
        for miner in loss.miners:
            chooser.enqueue_trial({"loss": loss.name})
            studies[loss.name].enqueue_trial({"miner": miner})
            asked = chooser.ask()
            assert suggest_loss(space, asked) == loss.name
            trial = studies[loss.name].ask()
            config = suggest(space, loss.name, trial)
            assert config["miner"] == miner
            # The Optuna parameters are the configuration's own names, with the values it holds.
            assert trial.params == {name: config[name] for name in trial.params}
            assert asked.params == {"loss": loss.name}
            chooser.tell(asked, 0.0)
            studies[loss.name].tell(trial, 0.0)
            configs.append(config)
    return chooser, studies, configs


def test_optuna_records_each_value_under_its_column_name():
    space = _space()
    chooser, studies, configs = _ask_every_branch(space)
    schema = set(columns(space))
    assert set().union(*(set(c) for c in configs)) == schema
    # No value of this space is fixed, so every name is asked of Optuna: in the chooser (loss) or a loss's study.
    recorded = {name for study in (chooser, *studies.values()) for trial in study.trials for name in trial.params}
    assert recorded == schema
    for loss, study in studies.items():
        # A loss's study asks all but `loss`, and `miner` only where the loss takes several (normalized_softmax
        # takes none of the listed miners but "none").
        several = len(space.loss(loss).miners) > 1
        assert several == (loss != "normalized_softmax")
        assert {n for t in study.trials for n in t.params} == {
            n for c in configs if c["loss"] == loss for n in c if n != "loss" and (n != "miner" or several)}


def test_optuna_trials_tables_name_their_columns_params_and_the_name():
    space = _space()
    chooser, studies, configs = _ask_every_branch(space)
    table_names = set()
    for study in (chooser, *studies.values()):
        frame = study.trials_dataframe()
        table_names |= {column[len("params_"):] for column in frame.columns if column.startswith("params_")}
    assert table_names == set(columns(space))
    triplet = studies["triplet"].trials_dataframe()
    assert {"params_miner", "params_triplet.margin", "params_miner.triplet_margin.margin", "params_train.lr",
            "params_model.embedding_dim"} <= set(triplet.columns)
    mined = triplet[triplet["params_miner"] == "triplet_margin"]
    config = next(c for c in configs if c["loss"] == "triplet" and c["miner"] == "triplet_margin")
    assert mined["params_miner.triplet_margin.margin"].tolist() == [config["miner.triplet_margin.margin"]]


@pytest.mark.parametrize("yaml_text, name, value", [
    ("search: {losses: [triplet], space: {triplet: {margin: 0.125}}}", "triplet.margin", 0.125),
    ("search: {losses: [triplet], miners: [triplet_margin], space: {miner: {triplet_margin: {margin: 0.375}}}}",
     "miner.triplet_margin.margin", 0.375),
    ("search: {losses: [triplet], space: {model: {embedding_dim: 48}}}", "model.embedding_dim", 48),
    ("search: {losses: [triplet], space: {train: {lr: 0.0025}}}", "train.lr", 0.0025),
])
def test_the_yaml_key_below_search_space_sets_the_value_of_that_name(yaml_text, name, value):
    space = space_from_config(yaml.safe_load(yaml_text)["search"])
    rng = np.random.default_rng(0)
    assert all(sample(space, rng)[name] == value for _ in range(20))
    assert f"search.space.{name}" in {entry.path for _, entry in space.all_entries()}


@pytest.mark.parametrize("name", _names())
def test_every_name_is_set_by_the_yaml_key_search_space_dot_name_and_nothing_else(name):
    before = _params(_space())
    value = before[name].boundary_values()[-1]  # a valid value, and not what the unchanged space always gives
    after = _params(_space(_with_space_key(name, value)))
    assert after.keys() == before.keys()
    assert [n for n in before if after[n] != before[n]] == [name]
    space = _space(_with_space_key(name, value))
    rng = np.random.default_rng(0)
    drawn = [config[name] for config in (sample(space, rng) for _ in range(600)) if name in config]
    assert len(drawn) >= 20 and set(drawn) == {value}


@pytest.mark.parametrize("name", _names())
def test_an_error_at_a_name_carries_the_yaml_key_as_its_path(name):
    with pytest.raises(ConfigError) as info:
        _space(_with_space_key(name, [1, 2]))  # a bare list is refused for any name
    assert info.value.path == f"search.space.{name}"
    assert str(info.value).startswith(f"search.space.{name}: a bare list is ambiguous")


def test_a_losses_hyperparameter_appears_in_errors_as_its_yaml_path():
    with pytest.raises(ConfigError) as info:
        space_from_config({"losses": ["triplet"], "space": {"triplet": {"margin": -0.5}}})
    assert str(info.value) == "search.space.triplet.margin: values must be >= 0, got -0.5"
    with pytest.raises(ConfigError, match=r"^search\.space\.triplet\.margin: grid search cannot enumerate"):
        grid(space_from_config({"losses": ["triplet"]}))
    with pytest.raises(ConfigError, match=r"^search\.space\.miner\.triplet_margin\.type_of_triplets: values must"):
        space_from_config({"space": {"miner": {"triplet_margin": {"type_of_triplets": "hardest"}}}})


def test_a_hyperparameter_belongs_to_its_loss():
    # Triplet's margin (a distance) and ArcFace's margin (degrees) are two names with their own ranges.
    space = space_from_config({"losses": ["triplet", "arcface"], "space": {"triplet": {"margin": 0.2}}})
    schema = columns(space)
    assert schema["triplet.margin"] == schema["arcface.margin"] == "float"
    params = _params(space)
    assert params["triplet.margin"].boundary_values() == (0.2,)
    assert params["arcface.margin"].boundary_values() == (10.0, 45.0)  # its default space, untouched
    with pytest.raises(ConfigError, match=r"^search\.space\.arcface\.margin: values must be in \[0, 90\]"):
        space_from_config({"losses": ["arcface"], "space": {"arcface": {"margin": 120.0}}})
    assert space_from_config({"losses": ["triplet"], "space": {"triplet": {"margin": 120.0}}})  # no upper bound


def test_repeat_names_and_run_names_are_train_and_model_fields():
    assert all(name.startswith("train.") and name[len("train."):] in TRAIN_FIELDS for name in REPEAT_NAMES)
    assert set(MODEL_FIELDS) == {"trunk", "embedding_dim", "pretrained_weights", "freeze_batchnorm"}
    assert not {"loss", "loss_params", "miner", "miner_params", "dataset", "model"} & set(TRAIN_FIELDS)


# ---- to_train_config: the names become TrainConfig's fields ------------------------------------------------------

_BASE = TrainConfig(model=ModelConfig(trunk="small_cnn", embedding_dim=64), epochs=3, lr=1e-3, seed=7)


def test_to_train_config_applies_loss_miner_train_and_model_values():
    config = {"loss": "triplet", "miner": "triplet_margin", "triplet.margin": 0.15, "triplet.swap": True,
              "miner.triplet_margin.margin": 0.3, "miner.triplet_margin.type_of_triplets": "hard",
              "train.lr": 2e-4, "train.seed": 1, "train.include_nmi": True, "model.embedding_dim": 32}
    train = to_train_config(_BASE, config)
    assert (train.loss, train.miner) == ("triplet", "triplet_margin")
    assert train.loss_params == {"margin": 0.15, "swap": True}
    assert train.miner_params == {"margin": 0.3, "type_of_triplets": "hard"}
    assert (train.lr, train.seed, train.include_nmi) == (2e-4, 1, True)
    assert train.model == ModelConfig(trunk="small_cnn", embedding_dim=32)
    assert (train.epochs, train.dataset) == (_BASE.epochs, _BASE.dataset)  # the rest is the base's


def test_to_train_config_reads_every_configuration_of_the_space():
    space = _space()
    rng = np.random.default_rng(3)
    _, _, asked = _ask_every_branch(space)
    for config in [*(sample(space, rng) for _ in range(200)), *grid(_as_grid(space)), *asked]:
        train = to_train_config(_BASE, config)
        loss, miner = config["loss"], config["miner"]
        assert (train.loss, train.miner) == (loss, miner)
        for name, value in config.items():
            if name.startswith(f"{loss}."):
                assert train.loss_params[name[len(loss) + 1:]] == value
            elif name.startswith(f"miner.{miner}."):
                assert train.miner_params[name[len(f"miner.{miner}."):]] == value
            elif name.startswith("train."):
                assert getattr(train, name[len("train."):]) == value
            elif name.startswith("model."):
                assert getattr(train.model, name[len("model."):]) == value
            else:
                assert name in ("loss", "miner"), name
        assert len(train.loss_params) == sum(n.startswith(f"{loss}.") for n in config)
        assert len(train.miner_params) == sum(n.startswith("miner.") for n in config)


@pytest.mark.parametrize("config, key", [
    ({"loss": "triplet", "miner": "none", "contrastive.pos_margin": 0.1}, "contrastive.pos_margin"),
    ({"loss": "multi_similarity", "miner": "none", "miner.multi_similarity.epsilon": 0.1},
     "miner.multi_similarity.epsilon"),
    ({"loss": "triplet", "miner": "batch_hard", "miner.triplet_margin.margin": 0.1}, "miner.triplet_margin.margin"),
    ({"loss": "triplet", "miner": "triplet_margin", "multi_similarity.alpha": 2.0}, "multi_similarity.alpha"),
    ({"loss": "triplet", "miner": "none", "train.xyz": 1}, "train.xyz"),
    ({"loss": "triplet", "miner": "none", "train.loss": "contrastive"}, "train.loss"),
    ({"loss": "triplet", "miner": "none", "model.depth": 3}, "model.depth"),
    # The names before the refactor, and bare hyperparameter names, are refused rather than dropped.
    ({"loss": "triplet", "miner": "none", "loss.margin": 0.1}, "loss.margin"),
    ({"loss": "triplet", "miner": "triplet_margin", "miner.margin": 0.1}, "miner.margin"),
    ({"loss": "triplet", "miner": "none", "margin": 0.1}, "margin"),
    # A configuration names its loss and its miner; bad values are errors at their names.
    ({"loss": "triplet", "triplet.margin": 0.1}, "miner"),
    ({"miner": "none"}, "loss"),
    ({"loss": "triplet", "miner": "none", "train.lr": -1.0}, "train.lr"),
    ({"loss": "triplet", "miner": "none", "model.embedding_dim": 0}, "model.embedding_dim"),
])
def test_to_train_config_refuses_a_key_of_another_branch_naming_the_key(config, key):
    with pytest.raises(ConfigError) as info:
        to_train_config(_BASE, config)
    assert info.value.path == key
    assert str(info.value).startswith(f"{key}: ")


def test_a_choice_of_run_values_reaches_train_config_with_its_type():
    space = StudySpace((LossSpace("npair", {}),), train={"include_nmi": Choice([False, True])},
                       model={"freeze_batchnorm": Choice([False, True])})
    for config in grid(space):
        train = to_train_config(_BASE, config)
        assert train.include_nmi is config["train.include_nmi"]
        assert train.model.freeze_batchnorm is config["model.freeze_batchnorm"]
