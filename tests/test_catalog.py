"""dml_core.catalog (torch-free) says what the losses and miners themselves say; checking a config imports no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dml_core import catalog
from dml_core.losses import LOSSES
from dml_core.losses import loss_hparams as loss_signature
from dml_core.miners import MINERS
from dml_core.miners import miner_hparams as miner_signature


def test_every_loss_and_miner_is_catalogued_in_order():
    assert list(catalog.LOSS_HPARAMS) == list(LOSSES)
    assert list(catalog.MINER_HPARAMS) == list(MINERS)
    assert set(catalog.COMPATIBLE_MINERS) == set(LOSSES)
    assert all("none" in miners and miners <= set(MINERS) for miners in catalog.COMPATIBLE_MINERS.values())


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_hyperparameters_equal_the_constructor(name):
    assert catalog.loss_hparams(name) == loss_signature(name)


@pytest.mark.parametrize("name", list(MINERS))
def test_miner_hyperparameters_equal_the_constructor(name):
    assert catalog.miner_hparams(name) == miner_signature(name)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown loss 'tripplet'; expected one of: contrastive"):
        catalog.loss_hparams("tripplet")
    with pytest.raises(ValueError, match="unknown miner"):
        catalog.miner_hparams("hardest")


def test_checking_a_config_imports_neither_torch_nor_ray():
    code = ("import sys; from study.config import parse_config; from search_spaces import space_from_config;"
            "from study.config import read_yaml; import pathlib;"
            "c = parse_config(read_yaml(pathlib.Path('configs/default.yaml').read_text()));"
            "print(sorted(m for m in ('torch', 'ray', 'optuna', 'mlflow', 'torchvision') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_show_imports_neither_torch_nor_ray(tmp_path):
    """`dml-study show` is for a study that is running: it reads the tables with pandas and pyarrow only."""
    from pathlib import Path

    import numpy as np
    from results_fixtures import study_frames, write_study

    root = Path(__file__).resolve().parents[1]
    epochs, trials = study_frames(np.random.default_rng(0), study="s", losses=["triplet", "contrastive"])
    study_dir = write_study(tmp_path, "s", epochs, trials)
    blocked = tmp_path / "blocked"
    for name in ("torch", "torchvision", "ray", "optuna", "mlflow", "faiss"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} was imported')\n")
    result = subprocess.run([sys.executable, "-m", "study.cli", "show", str(study_dir)], capture_output=True,
                            text=True, cwd=tmp_path, timeout=60,
                            env={"PYTHONPATH": f"{blocked}:{root}", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and "triplet" in result.stdout, result.stderr
