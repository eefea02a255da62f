"""Reading the `search` section: presets, restrictions, overrides (losses, miners, train and model fields), the
sensitivity sweep, and every error case as a ConfigError whose `path` is the key path."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import yaml

from dml_core.errors import ConfigError
from dml_core.losses import LOSSES, loss_hparams
from dml_core.miners import compatible_miners
from search_spaces import (LOSS_DEFAULTS, Fixed, Grid, IntRange, LossSpace, MinerSpace, StudySpace, Uniform, columns,
                           full_comparison_space, grid, log_scale, sample, space_from_config, suggest, suggest_loss)


def _space(text: str) -> StudySpace:
    """The space a YAML `search` section describes (parsed with PyYAML, as the config loader does)."""
    return space_from_config(yaml.safe_load(text)["search"])


def _samples(space: StudySpace, n: int = 400, seed: int = 0) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    return [sample(space, rng) for _ in range(n)]


def test_an_empty_section_is_the_full_comparison_of_every_loss_with_every_compatible_miner():
    space = space_from_config({})
    assert space == full_comparison_space()
    assert space.loss_names == tuple(LOSSES)
    for loss in space.losses:
        assert set(loss.miners) == set(compatible_miners(loss.name))
        assert dict(loss.params) == {h: d.space for h, d in LOSS_DEFAULTS[loss.name].items()}
    assert space.train == {} and space.model == {}
    assert space_from_config({"preset": "full_comparison"}) == space


def test_losses_and_miners_restrict_the_study():
    space = _space("""
search:
  losses: [triplet, npair, multi_similarity]
  miners: [none, triplet_margin, multi_similarity]
""")
    assert space.loss_names == ("triplet", "npair", "multi_similarity")
    assert space.loss("triplet").miners == ("none", "multi_similarity", "triplet_margin")
    assert space.loss("npair").miners == ("none",)
    assert space.loss("multi_similarity").miners == ("none", "multi_similarity")
    pairs = {(c["loss"], c["miner"]) for c in _samples(space)}
    assert pairs == {("triplet", "none"), ("triplet", "multi_similarity"), ("triplet", "triplet_margin"),
                     ("npair", "none"), ("multi_similarity", "none"), ("multi_similarity", "multi_similarity")}


def test_a_loss_keeps_only_the_restricted_miners_even_without_none():
    space = _space("search: {losses: [triplet], miners: [batch_hard]}")
    assert {c["miner"] for c in _samples(space, 50)} == {"batch_hard"}


def test_overrides_narrow_ranges_fix_values_and_set_training_fields():
    space = _space("""
search:
  losses: [triplet, contrastive, normalized_softmax]
  space:
    triplet: {margin: {uniform: [0.05, 0.1]}}
    contrastive: {pos_margin: 0, neg_margin: {choice: [0.5, 1]}}
    normalized_softmax: {temperature: {grid: [0.01, 0.1]}}
    miner:
      triplet_margin: {type_of_triplets: semihard, margin: {uniform: [0.1, 0.2]}}
    train:
      lr: {loguniform: [1.0e-5, 1.0e-3]}
      seed: {grid: [0, 1, 2]}
      loss_lr: 0.01
    model:
      embedding_dim: {grid: [32, 64]}
      trunk: small_cnn
""")
    configs = _samples(space, 1500)
    by_loss = {name: [c for c in configs if c["loss"] == name] for name in space.loss_names}
    assert all(0.05 <= c["triplet.margin"] <= 0.1 for c in by_loss["triplet"])
    assert {(c["contrastive.pos_margin"], type(c["contrastive.pos_margin"])) for c in by_loss["contrastive"]} == {
        (0.0, float)}
    assert {c["contrastive.neg_margin"] for c in by_loss["contrastive"]} == {0.5, 1.0}
    assert {c["normalized_softmax.temperature"] for c in by_loss["normalized_softmax"]} == {0.01, 0.1}
    mined = [c for c in configs if c["miner"] == "triplet_margin"]
    assert mined and all(c["miner.triplet_margin.type_of_triplets"] == "semihard"
                         and 0.1 <= c["miner.triplet_margin.margin"] <= 0.2 for c in mined)
    assert all(1e-5 <= c["train.lr"] <= 1e-3 and c["train.seed"] in (0, 1, 2) and c["train.loss_lr"] == 0.01
               for c in configs)
    assert {c["model.embedding_dim"] for c in configs} == {32, 64}
    assert all(c["model.trunk"] == "small_cnn" for c in configs)
    schema = columns(space)
    assert (schema["train.lr"], schema["train.seed"], schema["train.loss_lr"]) == ("float", "int", "float")
    assert (schema["model.embedding_dim"], schema["model.trunk"]) == ("int", "str")
    # The temperature grid inherits the log scale of its default space; training lr is log-scaled everywhere.
    assert log_scale(space) == {"triplet": ["train.lr"], "contrastive": ["train.lr"],
                                "normalized_softmax": ["normalized_softmax.temperature", "train.lr"]}


def test_an_override_of_a_hyperparameter_without_a_default_space_is_allowed():
    extra = sorted(set(loss_hparams("triplet")) - set(LOSS_DEFAULTS["triplet"]))
    if not extra:
        pytest.skip("the triplet loss has no hyperparameter beyond its default space")
    name = extra[0]
    default = loss_hparams("triplet")[name]
    space = space_from_config({"losses": ["triplet"], "space": {"triplet": {name: default}}})
    assert all(c[f"triplet.{name}"] == default for c in _samples(space, 20))


def test_a_fully_gridded_config_enumerates():
    space = _space("""
search:
  losses: [proxy_anchor]
  space:
    proxy_anchor: {margin: {grid: [0.0, 0.1]}, alpha: {grid: [16, 32, 64]}}
    train: {seed: {grid: [0, 1]}}
""")
    configs = grid(space)
    assert len(configs) == 12
    assert {(c["proxy_anchor.margin"], c["proxy_anchor.alpha"], c["train.seed"]) for c in configs} == {
        (m, a, s) for m in (0.0, 0.1) for a in (16.0, 32.0, 64.0) for s in (0, 1)}
    # ints in YAML, floats for a float hyperparameter
    assert all(type(c["proxy_anchor.alpha"]) is float for c in configs)


def test_a_config_path_prefix_appears_in_errors_and_grid_messages():
    space = space_from_config({"losses": ["triplet"]}, path="studies.a.search")
    with pytest.raises(ConfigError, match=r"^studies\.a\.search\.space\.triplet\.margin: grid search") as info:
        grid(space)
    assert info.value.path == "studies.a.search.space.triplet.margin"
    with pytest.raises(ConfigError, match=r"^studies\.a\.search\.bogus: unknown key") as info:
        space_from_config({"bogus": 1}, path="studies.a.search")
    assert info.value.path == "studies.a.search.bogus"
    with pytest.raises(ConfigError) as info:
        space_from_config({"space": {"triplet": {"margin": -1.0}}}, path="studies.a.search")
    assert info.value.path == "studies.a.search.space.triplet.margin"


# ---- sensitivity --------------------------------------------------------------------------------------------------

def test_sensitivity_sweeps_one_parameter_with_the_rest_fixed_and_no_miner():
    space = _space("""
search:
  preset: sensitivity
  sensitivity: {loss: normalized_softmax, param: temperature, values: [0.005, 0.01, 0.03, 0.05, 0.1, 0.5, 1.0]}
  space:
    train: {seed: {grid: [0, 1]}}
""")
    configs = grid(space)
    assert len(configs) == 14
    assert {c["normalized_softmax.temperature"] for c in configs} == {0.005, 0.01, 0.03, 0.05, 0.1, 0.5, 1.0}
    assert {(c["loss"], c["miner"]) for c in configs} == {("normalized_softmax", "none")}
    assert log_scale(space) == {"normalized_softmax": ["normalized_softmax.temperature"]}
    assert all(set(c) == {"loss", "miner", "normalized_softmax.temperature", "train.seed"} for c in configs)


def test_sensitivity_takes_train_and_model_fields():
    space = _space("""
search:
  preset: sensitivity
  sensitivity: {loss: triplet, param: margin, values: [0.05, 0.1]}
  space:
    model: {embedding_dim: {grid: [32, 64]}}
""")
    configs = grid(space)
    assert {(c["triplet.margin"], c["model.embedding_dim"]) for c in configs} == {
        (m, d) for m in (0.05, 0.1) for d in (32, 64)}


def test_sensitivity_fixes_the_other_hyperparameters_at_the_given_or_the_losses_defaults():
    space = _space("""
search:
  preset: sensitivity
  sensitivity: {loss: soft_triple, param: la, values: [10, 20, 40], fixed: {gamma: 0.2}}
""")
    configs = grid(space)
    assert [c["soft_triple.la"] for c in configs] == [10.0, 20.0, 40.0]
    defaults = loss_hparams("soft_triple")
    for config in configs:
        assert config["soft_triple.gamma"] == 0.2
        for h in LOSS_DEFAULTS["soft_triple"]:
            if h not in ("la", "gamma"):
                assert config[f"soft_triple.{h}"] == defaults[h]  # dml_core's default is the source of truth


def test_sensitivity_gives_a_required_hyperparameter_its_reference_value():
    space = space_from_config({"preset": "sensitivity",
                               "sensitivity": {"loss": "ranked_list", "param": "margin", "values": [0.2, 0.4]}})
    tn = loss_hparams("ranked_list").get("Tn")
    expected = tn if isinstance(tn, (int, float)) else LOSS_DEFAULTS["ranked_list"]["Tn"].reference
    assert all(c["ranked_list.Tn"] == expected for c in grid(space))


def test_sensitivity_spaces_also_sample_and_suggest():
    space = space_from_config({"preset": "sensitivity",
                               "sensitivity": {"loss": "triplet", "param": "margin", "values": [0.05, 0.1]}})
    assert {c["triplet.margin"] for c in _samples(space, 50)} == {0.05, 0.1}
    assert space.loss("triplet").params["margin"] == Grid([0.05, 0.1])
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    assert suggest(space, suggest_loss(space, trial), trial)["triplet.margin"] in (0.05, 0.1)
    assert set(trial.params) == {"triplet.margin"}  # one loss, one miner: neither is asked


# ---- errors -------------------------------------------------------------------------------------------------------

_SWEEP = {"loss": "normalized_softmax", "param": "temperature", "values": [0.01, 0.1]}


@pytest.mark.parametrize("section, message", [
    ([], "search: expected a mapping"),
    ({"algorithm": "optuna"}, "search.algorithm: unknown key; expected one of: preset, losses, miners, space"),
    ({"preset": "bogus"}, "search.preset: unknown preset 'bogus'; expected one of: full_comparison, sensitivity"),
    ({"losses": ["tripplet"]}, "search.losses: unknown loss 'tripplet'; expected one of: contrastive"),
    ({"losses": []}, "search.losses: expected a non-empty list of loss names"),
    ({"losses": "triplet"}, "search.losses: expected a non-empty list of loss names"),
    ({"losses": ["triplet", "triplet"]}, "search.losses: loss 'triplet' appears twice"),
    ({"miners": ["hardest"]}, "search.miners: unknown miner 'hardest'"),
    ({"losses": ["npair"], "miners": ["batch_hard"]}, "search.miners: no miner left for loss 'npair'; it takes: none"),
    ({"losses": ["triplet"], "miners": "none"}, "search.miners: expected a non-empty list of miner names"),
    ({"space": []}, "search.space: expected a mapping"),
    ({"space": {"tripplet": {}}}, "search.space.tripplet: unknown key; expected a loss name"),
    ({"space": {"triplet": 0.1}}, "search.space.triplet: expected a mapping"),
    ({"space": {"triplet": {"margn": 0.1}}}, "search.space.triplet.margn: unknown hyperparameter of loss 'triplet'"),
    ({"space": {"triplet": {"margin": {"loguniform": [0.5, 0.1]}}}},
     "search.space.triplet.margin: loguniform needs low < high, got low=0.5, high=0.1"),
    ({"space": {"triplet": {"margin": {"loguniform": [0.0, 0.1]}}}},
     "search.space.triplet.margin: loguniform needs 0 < low < high"),
    ({"space": {"triplet": {"margin": {"uniform": [0.2, 0.2]}}}}, "search.space.triplet.margin: uniform needs low < high"),
    ({"space": {"triplet": {"margin": {"choice": []}}}}, "search.space.triplet.margin: choice needs at least one value"),
    ({"space": {"triplet": {"margin": [0.1, 0.2]}}}, "search.space.triplet.margin: a bare list is ambiguous"),
    ({"space": {"triplet": {"margin": None}}}, "search.space.triplet.margin: values must be bool, int, float or str"),
    ({"space": {"triplet": {"margin": "wide"}}}, "search.space.triplet.margin: expects float values, got 'wide'"),
    ({"space": {"triplet": {"margin": "1e-3"}}}, "search.space.triplet.margin: expects float values, got '1e-3'; YAML"),
    ({"space": {"triplet": {"margin": -0.1}}}, "search.space.triplet.margin: values must be >= 0, got -0.1"),
    ({"space": {"normalized_softmax": {"temperature": {"uniform": [0.0, 0.1]}}}},
     "search.space.normalized_softmax.temperature: values must be > 0"),
    ({"space": {"soft_triple": {"centers_per_class": {"uniform": [2, 10]}}}},
     "search.space.soft_triple.centers_per_class: expects int values"),
    ({"space": {"soft_triple": {"centers_per_class": 0}}}, "search.space.soft_triple.centers_per_class: values must be >= 1"),
    ({"space": {"miner": []}}, "search.space.miner: expected a mapping"),
    ({"space": {"miner": {"hardest": {}}}}, "search.space.miner.hardest: unknown miner"),
    ({"space": {"miner": {"batch_hard": {"margin": 0.1}}}},
     "search.space.miner.batch_hard.margin: unknown hyperparameter of miner 'batch_hard'; expected one of: (none)"),
    ({"space": {"miner": {"triplet_margin": {"type_of_triplets": "semi-hard"}}}},
     "search.space.miner.triplet_margin.type_of_triplets: values must be one of all, hard, semihard, easy"),
    ({"space": {"miner": {"triplet_margin": {"margin": {"uniform": [0.1, 0.2], "log": True}}}}},
     "search.space.miner.triplet_margin.margin: uniform takes no log option"),
    # The key before the rename (search.space.miners) is refused, not silently ignored.
    ({"space": {"miners": {"triplet_margin": {"margin": 0.1}}}},
     "search.space.miners: unknown key; expected a loss name"),
    ({"losses": ["npair"], "space": {"triplet": {"margin": 0.1}}},
     "search.space.triplet: loss 'triplet' is not part of this study"),
    ({"losses": ["npair"], "space": {"miner": {"triplet_margin": {"margin": 0.1}}}},
     "search.space.miner.triplet_margin: miner 'triplet_margin' is not part of this study"),
    ({"space": {"train": []}}, "search.space.train: expected a mapping"),
    ({"space": {"train": {"learning-rate": 0.1}}}, "search.space.train.learning-rate: field names must be identifiers"),
    ({"space": {"train": {"xyz": 0.1}}}, "search.space.train.xyz: not a train field; expected one of: batch_size"),
    ({"space": {"train": {"loss": "triplet"}}}, "search.space.train.loss: not a train field"),  # the search's choice
    ({"space": {"train": {"model": "small_cnn"}}}, "search.space.train.model: not a train field"),
    ({"space": {"model": []}}, "search.space.model: expected a mapping"),
    ({"space": {"model": {"embedding_size": 64}}},
     "search.space.model.embedding_size: not a model field; expected one of: trunk, embedding_dim"),
    ({"space": {"model": {"embedding_dim": [32, 64]}}}, "search.space.model.embedding_dim: a bare list is ambiguous"),
    ({"space": {"train": {"lr": {"loguniform": [1.0e-5, "1e-3"]}}}},
     "search.space.train.lr: loguniform high must be a finite number, got '1e-3'; YAML reads 1e-3 as a string"),
    ({"space": {"train": {"lr": {"uniform": [0.1, 0.2], "log": True}}}}, "search.space.train.lr: uniform takes no log"),
    ({"sensitivity": _SWEEP}, "search.sensitivity: only used with preset: sensitivity"),
    ({"preset": "sensitivity"}, "search.sensitivity: required by preset sensitivity"),
    ({"preset": "sensitivity", "sensitivity": _SWEEP, "losses": ["triplet"]},
     "search.losses: not used by the sensitivity preset"),
    ({"preset": "sensitivity", "sensitivity": _SWEEP, "miners": ["none"]}, "search.miners: not used by the sensitivity"),
    ({"preset": "sensitivity", "sensitivity": _SWEEP, "space": {"triplet": {}}},
     "search.space.triplet: the sensitivity preset takes only space.train and space.model"),
    ({"preset": "sensitivity", "sensitivity": _SWEEP, "space": {"miner": {}}},
     "search.space.miner: the sensitivity preset takes only space.train and space.model"),
    ({"preset": "sensitivity", "sensitivity": _SWEEP, "space": {"model": {"depth": 3}}},
     "search.space.model.depth: not a model field"),
    ({"preset": "sensitivity", "sensitivity": [1]}, "search.sensitivity: expected a mapping"),
    ({"preset": "sensitivity", "sensitivity": {**_SWEEP, "step": 2}}, "search.sensitivity.step: unknown key"),
    ({"preset": "sensitivity", "sensitivity": {"loss": "triplet", "values": [0.1]}},
     "search.sensitivity.param: required by the sensitivity preset"),
    ({"preset": "sensitivity", "sensitivity": {**_SWEEP, "loss": "softmax"}}, "search.sensitivity.loss: unknown loss"),
    ({"preset": "sensitivity", "sensitivity": {**_SWEEP, "loss": 3}}, "search.sensitivity.loss: expected a name"),
    ({"preset": "sensitivity", "sensitivity": {**_SWEEP, "param": "temp"}},
     "search.sensitivity.param: unknown hyperparameter 'temp' of loss 'normalized_softmax'"),
    ({"preset": "sensitivity", "sensitivity": {**_SWEEP, "values": []}},
     "search.sensitivity.values: expected a non-empty list"),
    ({"preset": "sensitivity", "sensitivity": {**_SWEEP, "values": [0.1, -0.1]}},
     "search.sensitivity.values: values must be > 0"),
    ({"preset": "sensitivity", "sensitivity": {**_SWEEP, "values": [0.1, "x"]}},
     "search.sensitivity.values: values must share one type"),
    ({"preset": "sensitivity", "sensitivity": {**_SWEEP, "values": [0.1, 0.1]}},
     "search.sensitivity.values: grid values must be distinct"),
    ({"preset": "sensitivity", "sensitivity": {**_SWEEP, "fixed": {"temperature": 0.1}}},
     "search.sensitivity.fixed.temperature: 'temperature' is the swept parameter"),
    ({"preset": "sensitivity", "sensitivity": {**_SWEEP, "fixed": {"scale": 1.0}}},
     "search.sensitivity.fixed.scale: unknown hyperparameter of loss 'normalized_softmax'"),
    ({"preset": "sensitivity", "sensitivity": {"loss": "triplet", "param": "margin", "values": [0.1],
                                               "fixed": {"margin": 1}}},
     "search.sensitivity.fixed.margin: 'margin' is the swept parameter"),
    ({"preset": "sensitivity", "sensitivity": {"loss": "arcface", "param": "margin", "values": [20.0],
                                               "fixed": {"scale": {"uniform": [1, 2]}}}},
     "search.sensitivity.fixed.scale: fixed values must be plain values"),
    ({"preset": "sensitivity", "sensitivity": {"loss": "arcface", "param": "margin", "values": [20.0],
                                               "fixed": {"scale": -1.0}}},
     "search.sensitivity.fixed.scale: values must be > 0"),
])
def test_every_bad_config_raises_one_line_naming_its_key_path(section, message):
    path, _, words = message.partition(": ")
    with pytest.raises(ConfigError) as info:
        space_from_config(section)
    error = info.value
    assert error.path == path, str(error)  # the key path is carried structurally, not only in the text
    assert error.message.startswith(words), error.message
    assert str(error) == f"{path}: {error.message}"
    assert "\n" not in str(error)


@pytest.mark.parametrize("build, path", [
    (lambda: space_from_config({"space": {"triplet": {"margin": -0.1}}}), "search.space.triplet.margin"),
    (lambda: space_from_config({"space": {"miner": {"distance_weighted": {"cutoff": 2.0}}}}),
     "search.space.miner.distance_weighted.cutoff"),
    (lambda: space_from_config({"space": {"arcface": {"margin": 120.0}}}), "search.space.arcface.margin"),
    (lambda: space_from_config({"space": {"triplet": {"margn": 0.1}}}), "search.space.triplet.margn"),
    (lambda: space_from_config({"space": {"train": {"xyz": 1}}}), "search.space.train.xyz"),
    (lambda: space_from_config({"space": {"model": {"xyz": 1}}}), "search.space.model.xyz"),
    (lambda: grid(space_from_config({"losses": ["triplet"]})), "search.space.triplet.margin"),
    (lambda: grid(space_from_config({"losses": ["npair"], "space": {"train": {"lr": {"uniform": [0.1, 0.2]}}}})),
     "search.space.train.lr"),
])
def test_errors_carry_their_key_path_structurally(build, path):
    # An out-of-range value, an unknown hyperparameter, an unknown train or model field, a range under grid search.
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.path == path
    assert str(info.value) == f"{path}: {info.value.message}"
    assert info.value.within("studies.a").path == f"studies.a.{path}"


# ---- spaces built in Python are checked the same way -------------------------------------------------------------

@pytest.mark.parametrize("build, path, words", [
    (lambda: StudySpace((LossSpace("npair", {}, ("none", "batch_hard")),), {"batch_hard": MinerSpace("batch_hard")}),
     "search.miners", "miner 'batch_hard' does not go with loss 'npair'"),
    (lambda: StudySpace((LossSpace("triplet", {"margin": Fixed(0.1)}, ("triplet_margin",)),)),
     "search.space.miner.triplet_margin", "no space for miner 'triplet_margin'"),
    (lambda: StudySpace((LossSpace("triplet", {}),), {"hardest": MinerSpace("hardest")}),
     "search.space.miner.hardest", "unknown miner 'hardest'"),
    (lambda: StudySpace((LossSpace("arcface", {"margin": Fixed("wide")}),)),
     "search.space.arcface.margin", "expects float values"),
    (lambda: StudySpace((LossSpace("triplet", {"margn": Fixed(0.1)}),)),
     "search.space.triplet.margn", "unknown hyperparameter; expected one of: margin"),
    (lambda: StudySpace((LossSpace("triplet", {}, ("triplet_margin",)),),
                        {"triplet_margin": MinerSpace("triplet_margin", {"margin": IntRange(0, 2)})}),
     "search.space.miner.triplet_margin.margin", "expects float values"),
    (lambda: StudySpace((LossSpace("softmax", {}),)), "search.losses", "unknown loss 'softmax'"),
    (lambda: StudySpace(()), "search.losses", "a study needs at least one loss"),
    (lambda: StudySpace((LossSpace("npair", {}),), train={"a-b": Fixed(1)}),
     "search.space.train", "hyperparameter names must be identifiers"),
    (lambda: StudySpace((LossSpace("npair", {}),), train={"lr": 0.1}),  # type: ignore[dict-item]
     "search.space.train.lr", "expected Fixed, Uniform"),
    (lambda: StudySpace((LossSpace("npair", {}),), train={"xyz": Fixed(1)}),
     "search.space.train.xyz", "not a train field"),
    (lambda: StudySpace((LossSpace("npair", {}),), model={"embedding_size": Fixed(64)}),
     "search.space.model.embedding_size", "not a model field"),
    (lambda: StudySpace((LossSpace("npair", {}),), model={"embedding_dim": 64}),  # type: ignore[dict-item]
     "search.space.model.embedding_dim", "expected Fixed, Uniform"),
    (lambda: StudySpace((LossSpace("npair", {}),), train={"xyz": Fixed(1)}, path="studies.a.search"),
     "studies.a.search.space.train.xyz", "not a train field"),
])
def test_a_hand_built_space_is_checked_against_dml_core(build, path, words):
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.path == path
    assert info.value.message.startswith(words), info.value.message


def test_a_hand_built_space_fits_values_to_their_hyperparameters():
    # Ints for a float hyperparameter become floats, so the column has one type.
    space = StudySpace((LossSpace("triplet", {"margin": Fixed(0)}),), model={"embedding_dim": Grid([32, 64])})
    assert type(space.loss("triplet").params["margin"].value) is float  # type: ignore[union-attr]
    assert space.model == {"embedding_dim": Grid([32, 64])}
    assert space.miners["none"].params == {}  # "none" needs no space of its own


def test_a_required_hyperparameter_must_get_a_value(monkeypatch):
    import inspect

    import search_spaces.registry as registry

    # A loss whose constructor requires `margin` (as PML's RankedListLoss does): dropping it from the space fails.
    real = registry.loss_hparams
    monkeypatch.setattr(registry, "loss_hparams", lambda name: {**real(name), "margin": inspect.Parameter.empty}
                        if name == "triplet" else real(name))
    with pytest.raises(ConfigError, match=r"^search\.space\.triplet\.margin: required hyperparameter has no value"):
        StudySpace((LossSpace("triplet", {}),))
    assert StudySpace((LossSpace("triplet", {"margin": Uniform(0.1, 0.2)}),)).loss("triplet").params


def test_a_default_space_naming_a_hyperparameter_the_loss_lacks_fails_before_any_trial(monkeypatch):
    import search_spaces.registry as registry

    real = registry.loss_hparams
    renamed = {"triplet_margin" if k == "margin" else k: v for k, v in real("triplet").items()}
    monkeypatch.setattr(registry, "loss_hparams", lambda name: renamed if name == "triplet" else real(name))
    with pytest.raises(ValueError, match="default space of loss 'triplet' names 'margin', which it does not accept"):
        space_from_config({"losses": ["triplet"]})
