"""search_spaces primitives, their YAML form, and the package's import hygiene."""

from __future__ import annotations

import ast
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest

from search_spaces import (Choice, Domain, Fixed, Grid, IntRange, LogUniform, Uniform, ValueKind, parse_spec,
                           to_spec)

PACKAGE = Path(__file__).resolve().parents[1] / "search_spaces"


# ---- primitives ---------------------------------------------------------------------------------------------------

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
def test_primitive_kind_log_and_yaml_round_trip(param, kind, log):
    assert param.kind is kind
    assert param.log_scaled is log
    assert parse_spec(to_spec(param), "p") == param


def test_ranges_store_floats_and_choices_widen_ints_mixed_with_floats():
    uniform = Uniform(0, 2)
    assert (type(uniform.low), type(uniform.high)) == (float, float)
    mixed = Choice([1, 0.5])
    assert mixed.options == (1.0, 0.5) and all(type(v) is float for v in mixed.options)
    assert Grid((3, 4)).values == (3, 4)  # any sequence is accepted and stored as a tuple


def test_primitives_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Uniform(0, 1).low = 0.5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Choice(["a"]).options = ("b",)  # type: ignore[misc]


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
def test_bad_primitive_raises_one_line_value_error_naming_the_field(build, words):
    with pytest.raises(ValueError) as info:
        build()
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
def test_yaml_spec_builds_its_primitive(spec, expected):
    parsed = parse_spec(spec, "search.space.x.y")
    assert parsed == expected and type(parsed) is type(expected)


@pytest.mark.parametrize("spec, words", [
    ({"uniform": [0.5]}, "uniform needs [low, high], got [0.5]"),
    ({"uniform": "0, 1"}, "uniform needs [low, high]"),
    ({"loguniform": [0.5, 0.1]}, "loguniform needs 0 < low < high, got low=0.5, high=0.1"),
    ({"uniform": [0, 1], "grid": [1]}, "expected exactly one of uniform, loguniform, int, choice, grid"),
    ({"between": [0, 1]}, "expected exactly one of"),
    ({"uniform": [0, 1], "step": 0.1}, "unknown key 'step' in a uniform spec"),
    ({"uniform": [0, 1], "log": True}, "uniform takes no log option; use loguniform"),
    ([0.1, 0.2], "a bare list is ambiguous"),
    (None, "values must be bool, int, float or str, got None"),
    ({"loguniform": [1.0e-5, "1e-3"]}, "YAML reads 1e-3 as a string"),
])
def test_bad_yaml_spec_names_the_key_path_on_one_line(spec, words):
    with pytest.raises(ValueError) as info:
        parse_spec(spec, "search.space.triplet.margin")
    message = str(info.value)
    assert message.startswith("search.space.triplet.margin: ")
    assert words in message and "\n" not in message


def test_domain_converts_ints_for_float_hyperparameters_and_rejects_the_rest():
    margin = Domain(ValueKind.FLOAT, low=0.0)
    fixed = parse_spec(0, "p", domain=margin)
    assert fixed == Fixed(0.0) and type(fixed.value) is float
    grid = parse_spec({"grid": [0, 1]}, "p", domain=margin)
    assert all(type(v) is float for v in grid.values)
    with pytest.raises(ValueError, match=r"^p: expects float values, got 'wide'"):
        parse_spec("wide", "p", domain=margin)
    with pytest.raises(ValueError, match=r"^p: values must be >= 0, got \{'uniform': \[-0.1, 0.2\]\}"):
        parse_spec({"uniform": [-0.1, 0.2]}, "p", domain=margin)
    with pytest.raises(ValueError, match=r"^p: expects int values.*use \{int: \[low, high\]\}"):
        parse_spec({"uniform": [2, 10]}, "p", domain=Domain(ValueKind.INT, low=1))
    with pytest.raises(ValueError, match="values must be in \\(0, 1\\]"):
        parse_spec({"choice": [0.5, 1.5]}, "p", domain=Domain(ValueKind.FLOAT, 0.0, 1.0, open_low=True))
    with pytest.raises(ValueError, match="values must be one of all, hard, got 'easy'"):
        parse_spec("easy", "p", domain=Domain(ValueKind.STR, options=("all", "hard")))


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


def test_only_the_optuna_adapter_imports_optuna_and_nothing_imports_ray_or_pml():
    files = sorted(PACKAGE.glob("*.py"))
    assert files
    for path in files:
        imported = _imported_modules(path)
        assert not imported & {"ray", "pytorch_metric_learning"}, path.name
        if "optuna" in imported:
            assert path.name == "_optuna.py", f"{path.name} imports optuna"


def test_using_search_spaces_loads_neither_ray_nor_optuna():
    code = ("import sys, numpy, search_spaces as s\n"
            "space = s.space_from_config({'space': {'train': {'lr': {'loguniform': [1.0e-5, 1.0e-3]}}}})\n"
            "s.sample(space, numpy.random.default_rng(0)); s.columns(space); s.log_scale(space)\n"
            "print('ray' in sys.modules, 'optuna' in sys.modules)\n"
            "s.to_optuna(space)\n"
            "print('ray' in sys.modules, 'optuna' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False", "True"]


def test_public_names_are_exported():
    import search_spaces

    for name in search_spaces.__all__:
        assert hasattr(search_spaces, name), name


# ---- boundary configurations (checked before a study starts) ------------------------------------------------------

@pytest.mark.parametrize("param, values", [
    (Fixed(0.5), (0.5,)),
    (Uniform(0.1, 0.3), (0.1, 0.3)),
    (LogUniform(1e-3, 1.0), (1e-3, 1.0)),
    (IntRange(2, 20), (2, 20)),
    (Choice(["all", "hard"]), ("all", "hard")),
    (Grid([0.01, 0.1, 1.0]), (0.01, 0.1, 1.0)),
])
def test_boundary_values_are_a_ranges_ends_and_every_option(param, values):
    from search_spaces import boundary_values

    assert boundary_values(param) == values


def test_boundary_configs_vary_one_value_at_a_time_per_loss_and_miner():
    from search_spaces import LossSpace, MinerSpace, StudySpace, boundary_configs

    space = StudySpace(
        losses=(LossSpace("triplet", {"margin": Uniform(0.01, 0.3)}, miners=("none", "triplet_margin")),
                LossSpace("normalized_softmax", {"temperature": Grid([0.01, 0.1])})),
        miners={"triplet_margin": MinerSpace("triplet_margin", {"type_of_triplets": Choice(["all", "hard"])})},
        train={"lr": LogUniform(1e-4, 1e-2)})
    configs = list(boundary_configs(space))
    paths = [path for path, _ in configs]
    # triplet x none: base + 2 margins + 2 lrs; triplet x triplet_margin: base + 2 + 2 types + 2; softmax: 1 + 2 + 2
    assert len(configs) == 5 + 7 + 5
    assert paths.count("search.space.triplet") == 2
    assert paths.count("search.space.miners.triplet_margin.type_of_triplets") == 2
    by_path = [c for p, c in configs if p == "search.space.train.lr"]
    assert sorted(c["train.lr"] for c in by_path) == [1e-4, 1e-4, 1e-4, 1e-2, 1e-2, 1e-2]
    for path, config in configs:
        changed = {k for k in config if k not in ("loss", "miner")}
        assert len(changed) <= 1  # the others stay at their defaults, so a failure names its one cause
        if config["miner"] == "none":
            assert not any(k.startswith("miner.") for k in config)
