"""The study YAML: parsing, defaults, and one-line errors that name the key path (exit code 2, nothing written)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dml_core.errors import ConfigError
from dml_core.mode import Mode
from study.config import (Algorithm, ProtocolKind, ProtocolSection, SchedulerKind, SchedulerSection, load_config,
                          parse_config)

ROOT = Path(__file__).resolve().parents[1]


def test_default_config_parses():
    config = load_config(ROOT / "configs" / "default.yaml")
    assert config.name == "default"
    assert config.train.dataset.name == "glyphs"
    assert config.search.algorithm is Algorithm.OPTUNA
    assert config.scheduler.kind is SchedulerKind.ASHA
    assert config.search.metric == "recall@1"


def test_every_shipped_config_parses():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path)


def test_sections_map_onto_train_config():
    config = parse_config({
        "name": "x", "dataset": {"name": "glyphs", "options": {"samples_per_face": 2}},
        "model": {"trunk": "small_cnn", "embedding_dim": 32},
        "train": {"epochs": 3, "batch_size": 32, "m_per_class": 4, "optimizer": "adamw", "lr": 0.01},
        "search": {"algorithm": "random", "num_samples": 5, "metric": "map@r", "mode": "max"},
        "scheduler": {"kind": "fifo"},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.5, "max_concurrent_trials": 2},
    })
    # One name per key: YAML `dataset.options` is TrainConfig.dataset.options, `model.embedding_dim` is
    # TrainConfig.model.embedding_dim, `train.epochs` is TrainConfig.epochs.
    assert config.train.dataset.options == {"samples_per_face": 2}
    assert config.train.model.embedding_dim == 32 and config.train.epochs == 3
    assert config.train.optimizer.value == "adamw"
    assert config.search.algorithm is Algorithm.RANDOM and config.search.mode is Mode.MAX
    assert config.scheduler.kind is SchedulerKind.FIFO
    assert config.resources.gpus_per_trial == 0.5


def test_the_reality_check_protocol_section():
    config = parse_config({"name": "x", "protocol": {"kind": "reality_check", "folds": 3, "trials_per_loss": 5,
                                                     "final_runs": 4}})
    assert config.protocol == ProtocolSection(ProtocolKind.REALITY_CHECK, folds=3, trials_per_loss=5, final_runs=4)
    assert config.protocol.reality_check and config.train.num_folds == 3 and config.train.fold is None
    # The default is today's search, with the paper's numbers ready for the protocol.
    plain = parse_config({"name": "x"})
    assert plain.protocol == ProtocolSection() and not plain.protocol.reality_check
    assert (ProtocolSection().folds, ProtocolSection().trials_per_loss, ProtocolSection().final_runs) == (4, 50, 10)
    with pytest.raises(ConfigError) as info:
        parse_config({"name": "x", "protocol": {"kind": "reality_check"}}, num_samples=3)
    assert info.value.path == "--num-samples"


def test_command_line_overrides():
    config = parse_config({"name": "a", "search": {"num_samples": 3}}, storage="/tmp/s", name="b",
                          address="auto", num_samples=7)
    assert (config.name, config.storage, config.ray.address, config.search.num_samples) == ("b", "/tmp/s", "auto", 7)
    assert config.search.history == 200 and parse_config({"search": {"history": 50}}).search.history == 50
    assert config.study_dir == "/tmp/s/b"


@pytest.mark.parametrize("doc, path", [
    ({"nme": "x"}, "nme"),
    ({"train": {"epochz": 3}}, "train.epochz"),
    ({"train": {"batch_size": 30, "m_per_class": 4}}, "train.batch_size"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"lr": -1.0}}, "train.lr"),
    ({"train": {"optimizer": "adamax"}}, "train.optimizer"),
    ({"model": {"embedding_dim": "big"}}, "model.embedding_dim"),
    ({"model": {"trunk_name": "x"}}, "model.trunk_name"),
    ({"dataset": {"nam": "glyphs"}}, "dataset.nam"),
    ({"dataset": {"options": [1, 2]}}, "dataset.options"),
    ({"search": {"algorithm": "bayes"}}, "search.algorithm"),
    ({"search": {"num_samples": 0}}, "search.num_samples"),
    ({"search": {"metric": "recall@3"}}, "search.metric"),
    ({"search": {"mode": "up"}}, "search.mode"),
    ({"search": {"sampler": "tpe"}}, "search.sampler"),
    ({"scheduler": {"kind": "hyperband"}}, "scheduler.kind"),
    ({"scheduler": {"type": "asha"}}, "scheduler.type"),
    ({"dataset": {"root": 5}}, "dataset.root"),
    ({"model": {"freeze_batchnorm": "yes"}}, "model.freeze_batchnorm"),
    ({"train": {"device": "tpu:0"}}, "train.device"),
    ({"train": {"ks": [1, 1]}}, "train.ks"),
    ({"scheduler": {"reduction_factor": 1}}, "scheduler.reduction_factor"),
    ({"scheduler": {"grace_period": 9}, "train": {"epochs": 4}}, "scheduler.grace_period"),
    ({"resources": {"gpus_per_trial": -0.5}}, "resources.gpus_per_trial"),
    ({"resources": {"gpus_per_trial": 1.5}}, "resources.gpus_per_trial"),
    ({"resources": {"max_concurrent_trials": 0}}, "resources.max_concurrent_trials"),
    ({"tracking": {"url": "http://x"}}, "tracking.url"),
    ({"ray": {"num_cpus": 0}}, "ray.num_cpus"),
    ({"ray": {"num_gpus": -1}}, "ray.num_gpus"),
    ({"failure": {"max_failures": "two"}}, "failure.max_failures"),
    ({"name": "bad/name"}, "name"),
    ({"protocol": {"kind": "bake_off"}}, "protocol.kind"),
    ({"protocol": {"folds": 3}}, "protocol.folds"),
    ({"protocol": {"kind": "reality_check", "folds": 1}}, "protocol.folds"),
    ({"protocol": {"kind": "reality_check", "trials_per_loss": 0}}, "protocol.trials_per_loss"),
    ({"protocol": {"kind": "reality_check", "final_runs": 1}}, "protocol.final_runs"),
    ({"protocol": {"kind": "reality_check", "rounds": 1}}, "protocol.rounds"),
    ({"protocol": {"kind": "reality_check"}, "search": {"num_samples": 10}}, "search.num_samples"),
    ({"protocol": {"kind": "reality_check"}, "search": {"algorithm": "grid"}}, "search.algorithm"),
    ({"protocol": {"kind": "reality_check"}, "train": {"fold": 0}}, "train.fold"),
    ({"protocol": {"kind": "reality_check", "folds": 4}, "train": {"num_folds": 3}}, "train.num_folds"),
    ({"protocol": {"kind": "reality_check"}, "search": {"space": {"train": {"fold": {"grid": [0, 1]}}}}},
     "search.space.train.fold"),
    ({"search": ["optuna"]}, "search"),
    ({"search": {"history": 1}}, "search.history"),
])
def test_bad_values_name_their_key_path(doc, path):
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    message = str(info.value)
    assert info.value.path == path, message  # carried structurally, not parsed out of the text
    assert message.startswith(f"{path}:"), message
    assert "\n" not in message


def test_scheduler_defaults_are_stated_once():
    """A YAML without a scheduler section gets the grace period the docs argue for, and configs/default.yaml
    does not restate (and so cannot contradict) the code's defaults."""
    config = parse_config({"name": "x", "train": {"epochs": 4}})
    assert config.scheduler == SchedulerSection() and config.scheduler.grace_period == 2
    default = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    assert "grace_period" not in default.get("scheduler", {})
    assert load_config(ROOT / "configs" / "default.yaml").scheduler.grace_period == 2


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("content, expected", [
    (b"", "empty config"),
    (b"# only a comment\n", "empty config"),
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not a text file"),
    (b"just some words\n", "expected a mapping"),
    (b"- a\n- b\n", "expected a mapping"),
])
def test_empty_binary_and_non_mapping_files_are_refused_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "study.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path) and expected in str(info.value) and "\n" not in str(info.value)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "study.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)


@pytest.mark.e2e
@pytest.mark.parametrize("doc, expected", [
    ({"train": {"batch_size": 30, "m_per_class": 4}}, "train.batch_size"),
    ({"search": {"losses": ["tripletz"]}}, "tripletz"),
    ({"search": {"space": {"triplet": {"margin": {"loguniform": [0.5, 0.1]}}}}}, "search.space.triplet.margin"),
    ({"search": {"space": {"train": {"not_a_field": 1}}}}, "search.space.train.not_a_field"),
    ({"dataset": {"name": "cub200", "root": "/nonexistent/cub"}}, "/nonexistent/cub"),
    # Values only reachable at a range's end or as one of several options: every one is built before Ray starts.
    ({"search": {"space": {"train": {"lr": {"grid": [1.0e-3, -1.0]}}}}}, "search.space.train.lr: must be a positive"),
    ({"search": {"space": {"model": {"embedding_dim": {"grid": [16, 0]}}}}}, "search.space.model.embedding_dim:"),
    ({"search": {"space": {"miners": {"triplet_margin": {"margin": 0.1}}}}}, "search.space.miners:"),
    ({"search": {"space": {"train": {"batch_size": {"int": [32, 66]}}}}}, "search.space.train.batch_size:"),
    ({"search": {"space": {"train": {"optimizer": {"choice": ["adam", "lion"]}}}}},
     "search.space.train.optimizer:"),
    ({"search": {"losses": ["soft_triple"], "space": {"soft_triple": {"centers_per_class": {"grid": [2, 0]}}}}},
     "search.space.soft_triple.centers_per_class:"),
])
def test_cli_rejects_bad_config_with_exit_2_and_writes_nothing(tmp_path, doc, expected):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(doc))
    storage = tmp_path / "store"
    result = _cli("run", str(config), "--storage", str(storage), "--name", "s", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not storage.exists()
    assert "ray" not in result.stdout.lower()


@pytest.mark.e2e
@pytest.mark.parametrize("content", [b"", b"\x00\xff\xfe binary", b"plain words\n"])
def test_cli_refuses_unusable_files_with_exit_2_and_writes_nothing(tmp_path, content):
    config = tmp_path / "study.yaml"
    config.write_bytes(content)
    storage = tmp_path / "store"
    result = _cli("run", str(config), "--storage", str(storage), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(config) in lines[0], result.stderr
    assert not storage.exists()


@pytest.mark.e2e
def test_cli_help_for_every_command(tmp_path):
    for command in ([], ["run"], ["resume"], ["show"], ["rerun"], ["report"]):
        result = _cli(*command, "--help", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "usage: dml-study" in result.stdout


@pytest.mark.parametrize("doc, expected", [
    ({"train": {"epochs": -1}}, "train.epochs"),
    ({"search": {"losses": ["tripletz"]}}, "tripletz"),
    ({"search": {"space": {"triplet": {"margin": {"uniform": [0.5, 0.1]}}}}}, "search.space.triplet.margin"),
    ({"search": {"space": {"miner": {"triplet_margin": {"type_of_triplets": "hardest"}}}}},
     "search.space.miner.triplet_margin.type_of_triplets"),
])
def test_a_bad_config_is_refused_before_torch_or_ray_is_imported(tmp_path, doc, expected):
    """Importing either takes seconds: a module of that name that cannot be imported proves neither is needed."""
    blocked = tmp_path / "blocked"
    for name in ("torch", "torchvision", "ray", "optuna", "mlflow"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} was imported')\n")
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({"name": "s", **doc}))
    result = subprocess.run([sys.executable, "-m", "study.cli", "run", str(config), "--storage", str(tmp_path / "st")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60,
                            env={"PYTHONPATH": f"{blocked}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and expected in result.stderr and "was imported" not in result.stderr, \
        result.stderr


def test_the_parent_run_logs_only_what_is_fixed_for_the_study():
    from study.runner import _study_params

    config = parse_config({"name": "s", "train": {"lr": 0.001, "epochs": 4}, "model": {"embedding_dim": 32}})
    params = _study_params(config, {"loss": "str", "miner": "str", "train.lr": "float", "model.embedding_dim": "int",
                                    "triplet.margin": "float"})
    assert params["train.epochs"] == 4 and params["model.trunk"] == "small_cnn"
    assert not {"train.loss", "train.miner", "train.lr", "model.embedding_dim"} & set(params)
    assert not any(k.startswith(("train.loss_params", "train.miner_params")) for k in params)
