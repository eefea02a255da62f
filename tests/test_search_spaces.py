"""search_spaces distributions (each knows its kind, bounds, grid, sampling, Optuna form and YAML form), domains,
the YAML form of a distribution, boundary configurations, and the package's import hygiene (no Optuna, no Ray)."""

from __future__ import annotations

import ast
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from dml_core.errors import ConfigError
from search_spaces import (Choice, Domain, Fixed, Grid, IntRange, LogUniform, LossSpace, MinerSpace, Param,
                           StudySpace, Uniform, ValueKind, boundary_configs, parse_spec)

PACKAGE = Path(__file__).resolve().parents[1] / "search_spaces"

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---- what each distribution knows about itself ---------------------------------------------------------------------

@pytest.mark.parametrize("param, kind, log", [
    (Fixed(0.5), ValueKind.FLOAT, False),
    (Fixed(3), ValueKind.INT, False),
    (Fixed("semihard"), ValueKind.STR, False),
    (Fixed(True), ValueKind.BOOL, False),
    (Uniform(0, 1), ValueKind.FLOAT, False),
    (LogUniform(1e-3, 1.0), ValueKind.FLOAT, True),
    (IntRange(2, 20), ValueKind.INT, False),
    (IntRange(1, 64, log=True), ValueKind.INT, True),
    (Choice(["all", "hard"]), ValueKind.STR, False),
    (Choice([0.1, 1.0], log=True), ValueKind.FLOAT, True),
    (Grid([0, 1, 2]), ValueKind.INT, False),
    (Grid([False, True]), ValueKind.BOOL, False),
])
def test_distribution_kind_log_scale_and_yaml_round_trip(param, kind, log):
    assert param.kind is kind
    assert param.log_scaled is log
    parsed = parse_spec(param.to_spec(), "p")
    assert parsed == param and type(parsed) is type(param)


# One of each of the six kinds, with what it must say about itself: its boundary values, its grid values (None: a
# range, which grid search refuses) and the Optuna distribution it asks for (None: a fixed value, never asked).
_SIX = [
    pytest.param(Fixed(0.25), (0.25,), (0.25,), None, id="fixed"),
    pytest.param(Uniform(0.1, 0.3), (0.1, 0.3), None, optuna.distributions.FloatDistribution(0.1, 0.3), id="uniform"),
    pytest.param(LogUniform(1e-3, 1.0), (1e-3, 1.0), None,
                 optuna.distributions.FloatDistribution(1e-3, 1.0, log=True), id="loguniform"),
    pytest.param(IntRange(2, 20), (2, 20), None, optuna.distributions.IntDistribution(2, 20), id="int"),
    pytest.param(IntRange(1, 64, log=True), (1, 64), None, optuna.distributions.IntDistribution(1, 64, log=True),
                 id="int-log"),
    pytest.param(Choice(["all", "hard", "semihard"]), ("all", "hard", "semihard"), ("all", "hard", "semihard"),
                 optuna.distributions.CategoricalDistribution(("all", "hard", "semihard")), id="choice"),
    pytest.param(Grid([0.01, 0.1, 1.0], log=True), (0.01, 0.1, 1.0), (0.01, 0.1, 1.0),
                 optuna.distributions.CategoricalDistribution((0.01, 0.1, 1.0)), id="grid"),
]


@pytest.mark.parametrize("param, boundary, grid_values, asked", _SIX)
def test_boundary_values_are_a_ranges_ends_and_every_listed_value(param, boundary, grid_values, asked):
    assert param.boundary_values() == boundary
    assert all(type(v) is type(boundary[0]) for v in param.boundary_values())


@pytest.mark.parametrize("param, boundary, grid_values, asked", _SIX)
def test_grid_values_are_the_listed_values_and_ranges_refuse_a_grid(param, boundary, grid_values, asked):
    if grid_values is None:
        with pytest.raises(ValueError, match="grid search cannot enumerate") as info:
            param.grid_values()
        assert not isinstance(info.value, ConfigError)  # no key path: the space adds it (test_search_space_sampling)
        assert repr(param.to_spec()) in str(info.value)  # the message shows the range as the YAML wrote it
    else:
        assert param.grid_values() == grid_values


def admits(param: Param, value: object) -> bool:
    """Whether `param` can produce `value`, its type included (written out here, not asked of the distribution)."""
    if isinstance(param, Fixed):
        return value == param.value and type(value) is type(param.value)
    if isinstance(param, (Uniform, LogUniform)):
        return type(value) is float and param.low <= value <= param.high
    if isinstance(param, IntRange):
        return type(value) is int and param.low <= value <= param.high
    return value in param.values and type(value) is type(param.values[0])


@pytest.mark.parametrize("param, boundary, grid_values, asked", _SIX)
def test_sample_stays_in_bounds_reaches_both_ends_of_lists_and_is_reproducible(param, boundary, grid_values, asked):
    draws = [param.sample(np.random.default_rng(0)) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]  # the generator is the only source of randomness
    rng = np.random.default_rng(1)
    values = [param.sample(rng) for _ in range(2000)]
    assert all(admits(param, v) for v in values), param
    if isinstance(param, (Fixed, Choice, Grid)):
        assert set(values) == set(boundary)  # every listed value is drawn
    elif isinstance(param, IntRange):
        assert {param.low, param.high} <= set(values)  # both ends included
    else:
        assert min(values) < param.low + 0.1 * (param.high - param.low) and max(values) > param.high * 0.9


@pytest.mark.parametrize("param, boundary, grid_values, asked", _SIX)
def test_suggest_asks_a_real_optuna_trial_for_the_distribution_under_the_given_name(param, boundary, grid_values,
                                                                                 asked):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        value = param.suggest(trial, "triplet.margin")
        assert admits(param, value)
        if asked is None:
            assert trial.params == {}  # a fixed value is not a parameter Optuna could tune
        else:
            assert trial.params == {"triplet.margin": value}
            assert trial.distributions["triplet.margin"] == asked
        study.tell(trial, 0.0)


@pytest.mark.parametrize("param", [Choice(["hard"]), Grid([0.1])])
def test_a_list_of_one_value_is_not_asked(param):
    trial = optuna.create_study().ask()
    assert param.suggest(trial, "x") == param.values[0]
    assert trial.params == {}


@pytest.mark.parametrize("param, boundary, grid_values, asked", _SIX)
def test_to_spec_round_trips_through_parse_spec(param, boundary, grid_values, asked):
    spec = param.to_spec()
    parsed = parse_spec(spec, "search.space.x.y")
    assert parsed == param and type(parsed) is type(param)
    assert parsed.log_scaled is param.log_scaled
    assert parsed.to_spec() == spec


def test_retyped_widens_ints_to_floats_and_refuses_other_kinds():
    assert Fixed(1).retyped(ValueKind.FLOAT) == Fixed(1.0)
    assert type(Fixed(1).retyped(ValueKind.FLOAT).value) is float  # type: ignore[union-attr]
    widened = Grid([1, 2], log=True).retyped(ValueKind.FLOAT)
    assert widened == Grid((1.0, 2.0), log=True) and all(type(v) is float for v in widened.values)
    assert Uniform(0.0, 1.0).retyped(ValueKind.FLOAT) == Uniform(0.0, 1.0)
    with pytest.raises(ValueError, match="expects int values, got a float range"):
        Uniform(0.0, 1.0).retyped(ValueKind.INT)
    with pytest.raises(ValueError, match="expects float values, got an int range"):
        IntRange(1, 3).retyped(ValueKind.FLOAT)
    with pytest.raises(ValueError, match="expects str values"):
        Choice([1, 2]).retyped(ValueKind.STR)


def test_ranges_store_floats_and_lists_widen_ints_mixed_with_floats():
    uniform = Uniform(0, 2)
    assert (type(uniform.low), type(uniform.high)) == (float, float)
    mixed = Choice([1, 0.5])
    assert mixed.values == (1.0, 0.5) and all(type(v) is float for v in mixed.values)
    assert Grid((3, 4)).values == (3, 4)  # any sequence is accepted and stored as a tuple
    assert Choice(["a", "b"]) == Choice(("a", "b"))


def test_distributions_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Uniform(0, 1).low = 0.5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Choice(["a"]).values = ("b",)  # type: ignore[misc]


@pytest.mark.parametrize("build, words", [
    (lambda: Uniform(1.0, 0.0), "uniform needs low < high, got low=1.0, high=0.0"),
    (lambda: Uniform(0.5, 0.5), "uniform needs low < high"),
    (lambda: Uniform("a", 1.0), "uniform low must be a finite number, got 'a'"),
    (lambda: Uniform(True, 2.0), "uniform low must be a finite number, got True"),
    (lambda: Uniform(0.0, math.inf), "uniform high must be a finite number"),
    (lambda: LogUniform(0.0, 1.0), "loguniform needs 0 < low < high, got low=0.0, high=1.0"),
    (lambda: LogUniform(-1.0, 1.0), "loguniform needs 0 < low < high"),
    (lambda: IntRange(1.5, 3), "int low must be an int, got 1.5"),
    (lambda: IntRange(3, 3), "int needs low < high, got low=3, high=3"),
    (lambda: IntRange(0, 5, log=True), "int with log needs 1 <= low < high"),
    (lambda: IntRange(1, 5, log="yes"), "int log must be true or false"),
    (lambda: Choice([]), "choice needs at least one value"),
    (lambda: Choice("abc"), "choice needs a list of values"),
    (lambda: Choice([1, "a"]), "values must share one type"),
    (lambda: Choice([True, 1]), "values must share one type"),
    (lambda: Choice([0.1, 0.1]), "choice values must be distinct"),
    (lambda: Choice(["a", "b"], log=True), "choice with log needs positive numbers"),
    (lambda: Grid([0.0, 1.0], log=True), "grid with log needs positive numbers"),
    (lambda: Grid([None]), "values must be bool, int, float or str, got None"),
    (lambda: Fixed(None), "values must be bool, int, float or str, got None"),
    (lambda: Fixed([1]), "values must be bool, int, float or str"),
    (lambda: Fixed(math.nan), "values must be finite"),
])
def test_a_bad_distribution_raises_a_plain_one_line_value_error_naming_the_field(build, words):
    with pytest.raises(ValueError) as info:
        build()
    assert type(info.value) is ValueError  # library constructors have no key path; parse_spec adds one
    assert words in str(info.value)
    assert "\n" not in str(info.value)


# ---- YAML form ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    (0.1, Fixed(0.1)),
    ("semihard", Fixed("semihard")),
    (True, Fixed(True)),
    ({"uniform": [0, 1]}, Uniform(0.0, 1.0)),
    ({"loguniform": [1.0e-5, 1.0e-3]}, LogUniform(1e-5, 1e-3)),
    ({"int": [2, 20]}, IntRange(2, 20)),
    ({"int": [1, 64], "log": True}, IntRange(1, 64, log=True)),
    ({"choice": ["all", "hard"]}, Choice(("all", "hard"))),
    ({"grid": [0.01, 0.1]}, Grid((0.01, 0.1))),
    ({"grid": [0.01, 0.1], "log": True}, Grid((0.01, 0.1), log=True)),
])
def test_yaml_spec_builds_its_distribution(spec, expected):
    parsed = parse_spec(spec, "search.space.x.y")
    assert parsed == expected and type(parsed) is type(expected)


@pytest.mark.parametrize("spec, words", [
    ({"uniform": [0.5]}, "uniform needs [low, high], got [0.5]"),
    ({"uniform": "0, 1"}, "uniform needs [low, high]"),
    ({"loguniform": [0.5, 0.1]}, "loguniform needs low < high, got low=0.5, high=0.1"),
    ({"uniform": [0, 1], "grid": [1]}, "expected exactly one of uniform, loguniform, int, choice, grid"),
    ({"between": [0, 1]}, "expected exactly one of"),
    ({"uniform": [0, 1], "step": 0.1}, "unknown key 'step' in a uniform spec"),
    ({"uniform": [0, 1], "log": True}, "uniform takes no log option; use loguniform"),
    ([0.1, 0.2], "a bare list is ambiguous"),
    (None, "values must be bool, int, float or str, got None"),
    ({"loguniform": [1.0e-5, "1e-3"]}, "YAML reads 1e-3 as a string"),
])
def test_bad_yaml_spec_raises_a_config_error_at_the_key_path_on_one_line(spec, words):
    with pytest.raises(ConfigError) as info:
        parse_spec(spec, "search.space.triplet.margin")
    assert info.value.path == "search.space.triplet.margin"
    assert words in info.value.message
    assert str(info.value) == f"search.space.triplet.margin: {info.value.message}"
    assert "\n" not in str(info.value)


def test_domain_converts_ints_for_float_hyperparameters_and_rejects_the_rest():
    margin = Domain(ValueKind.FLOAT, low=0.0)
    fixed = parse_spec(0, "p", domain=margin)
    assert fixed == Fixed(0.0) and type(fixed.value) is float  # type: ignore[union-attr]
    grid = parse_spec({"grid": [0, 1]}, "p", domain=margin)
    assert all(type(v) is float for v in grid.values)  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"^p: expects float values, got 'wide'"):
        parse_spec("wide", "p", domain=margin)
    with pytest.raises(ConfigError, match=r"^p: values must be >= 0, got \{'uniform': \[-0.1, 0.2\]\}"):
        parse_spec({"uniform": [-0.1, 0.2]}, "p", domain=margin)
    with pytest.raises(ConfigError, match=r"^p: expects int values.*use \{int: \[low, high\]\}"):
        parse_spec({"uniform": [2, 10]}, "p", domain=Domain(ValueKind.INT, low=1))
    with pytest.raises(ConfigError, match="values must be in \\(0, 1\\]"):
        parse_spec({"choice": [0.5, 1.5]}, "p", domain=Domain(ValueKind.FLOAT, 0.0, 1.0, open_low=True))
    with pytest.raises(ConfigError, match="values must be one of all, hard, got 'easy'"):
        parse_spec("easy", "p", domain=Domain(ValueKind.STR, options=("all", "hard")))


@pytest.mark.parametrize("domain, inside, outside, words", [
    (Domain(ValueKind.FLOAT, low=0.0), (0.0, 5.0), (-0.1,), ">= 0"),
    (Domain(ValueKind.FLOAT, low=0.0, open_low=True), (1e-9,), (0.0,), "> 0"),
    (Domain(ValueKind.FLOAT, 0.0, 2.0, open_low=True, open_high=True), (1.0,), (0.0, 2.0), "in (0, 2)"),
    (Domain(ValueKind.FLOAT, -1.0, 1.0), (-1.0, 1.0), (1.5,), "in [-1, 1]"),
    (Domain(ValueKind.FLOAT, high=1.0, open_high=True), (0.99,), (1.0,), "< 1"),
    (Domain(ValueKind.STR, options=("all", "hard")), ("all",), ("easy",), "one of all, hard"),
    (Domain(), (1, "x", True), (), "any scalar"),
])
def test_domain_contains_and_describes_its_values(domain, inside, outside, words):
    assert all(domain.contains(v) for v in inside)
    assert not any(domain.contains(v) for v in outside)
    assert domain.describe() == words


def test_fitting_a_distribution_checks_its_boundary_values():
    # A range's ends bound all its values: a range that starts outside the domain is refused, not clipped.
    temperature = Domain(ValueKind.FLOAT, low=0.0, open_low=True)
    assert temperature.fit(LogUniform(0.005, 1.0)) == LogUniform(0.005, 1.0)
    with pytest.raises(ValueError, match=r"values must be > 0, got \{'uniform': \[0.0, 1.0\]\}"):
        temperature.fit(Uniform(0.0, 1.0))
    with pytest.raises(ValueError, match=r"values must be > 0, got \{'grid': \[0.1, 0.0\]\}"):
        temperature.fit(Grid([0.1, 0.0]))


def test_a_grid_over_a_log_scaled_hyperparameter_inherits_the_log_scale_unless_told_otherwise():
    assert parse_spec({"grid": [0.01, 0.1]}, "p", inherit_log=True).log_scaled
    assert not parse_spec({"grid": [0.01, 0.1], "log": False}, "p", inherit_log=True).log_scaled
    assert not parse_spec({"grid": [0.0, 0.1]}, "p", inherit_log=True).log_scaled  # 0 has no logarithm
    assert not parse_spec({"grid": [0.01, 0.1]}, "p").log_scaled


# ---- import hygiene -----------------------------------------------------------------------------------------------

def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_of_the_package_imports_optuna_ray_or_pml():
    files = sorted(PACKAGE.glob("*.py"))
    assert {p.name for p in files} >= {"__init__.py", "distributions.py", "registry.py", "space.py", "config.py"}
    for path in files:
        imported = _imported_modules(path)
        assert not imported & {"optuna", "ray", "pytorch_metric_learning"}, f"{path.name} imports {imported}"


def test_using_search_spaces_loads_neither_ray_nor_optuna():
    # Every walk of the space, suggest included: a distribution asks any object with the trial's suggest_* methods.
    code = """
import sys, numpy, search_spaces as s
from dml_core.config import TrainConfig

class Trial:
    def suggest_float(self, name, low, high, *, log=False): return low
    def suggest_int(self, name, low, high, *, log=False): return low
    def suggest_categorical(self, name, choices): return choices[-1]

space = s.space_from_config({'losses': ['triplet', 'normalized_softmax'],
                             'space': {'train': {'lr': {'loguniform': [1.0e-5, 1.0e-3]}},
                                       'model': {'embedding_dim': {'grid': [32, 64]}}}})
config = s.sample(space, numpy.random.default_rng(0)); s.columns(space); s.log_scale(space)
list(s.boundary_configs(space))
loss = s.suggest_loss(space, Trial())
s.to_train_config(TrainConfig(), s.suggest(space, loss, Trial()))
s.to_train_config(TrainConfig(), config)
print(loss, 'ray' in sys.modules, 'optuna' in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["normalized_softmax", "False", "False"]


def test_public_names_are_exported():
    import search_spaces

    assert len(set(search_spaces.__all__)) == len(search_spaces.__all__)
    for name in search_spaces.__all__:
        assert hasattr(search_spaces, name), name


# ---- boundary configurations (checked before a study starts) ------------------------------------------------------

def test_boundary_configs_vary_one_value_at_a_time_per_loss_and_miner():
    space = StudySpace(
        losses=(LossSpace("triplet", {"margin": Uniform(0.01, 0.3)}, miners=("none", "triplet_margin")),
                LossSpace("normalized_softmax", {"temperature": Grid([0.01, 0.1])})),
        miners={"triplet_margin": MinerSpace("triplet_margin", {"type_of_triplets": Choice(["all", "hard"])})},
        train={"lr": LogUniform(1e-4, 1e-2)}, model={"embedding_dim": Grid([32, 64])})
    configs = list(boundary_configs(space))
    paths = [path for path, _ in configs]
    # triplet x none: base + 2 margins + 2 lrs + 2 dims; triplet x triplet_margin: base + 2 + 2 types + 2 + 2;
    # softmax: base + 2 temperatures + 2 + 2
    assert len(configs) == 7 + 9 + 7
    assert paths.count("search.space.triplet") == 2
    assert paths.count("search.space.miner.triplet_margin.type_of_triplets") == 2
    by_path = [c for p, c in configs if p == "search.space.train.lr"]
    assert sorted(c["train.lr"] for c in by_path) == [1e-4, 1e-4, 1e-4, 1e-2, 1e-2, 1e-2]
    assert sorted(c["model.embedding_dim"] for p, c in configs if p == "search.space.model.embedding_dim") == [
        32, 32, 32, 64, 64, 64]
    for path, config in configs:
        changed = [k for k in config if k not in ("loss", "miner")]
        assert len(changed) <= 1  # the others stay at their defaults, so a failure names its one cause
        if changed:
            assert path == f"search.space.{changed[0]}"  # the path is the YAML key of the one changed value
        if config["miner"] == "none":
            assert not any(k.startswith("miner.") for k in config)
