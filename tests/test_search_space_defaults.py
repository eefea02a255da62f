"""The default spaces against dml_core, the run-time source of truth for names, hyperparameters and defaults."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from dml_core.config import TrainConfig
from dml_core.losses import LOSSES, loss_hparams, make_loss
from dml_core.miners import MINERS, make_miner, miner_hparams
from search_spaces import (LOSS_DEFAULTS, MINER_DEFAULTS, Fixed, Grid, IntRange, LogUniform, LossSpace, Param,
                           StudySpace, Uniform, full_comparison_space, loss_param_name, sample, to_train_config)


def _admits(param: Param, value: object) -> bool:
    """Whether `value` lies in the default space (ints admitted by float ranges: a default of 1 means 1.0)."""
    if isinstance(param, Fixed):
        return value == param.value
    if isinstance(param, (Uniform, LogUniform, IntRange)):
        return param.low <= value <= param.high  # type: ignore[operator]
    return value in param.values


def test_every_loss_and_miner_has_a_default_space():
    assert set(LOSS_DEFAULTS) == set(LOSSES)
    assert set(MINER_DEFAULTS) == set(MINERS)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_loss_default_space_uses_the_losses_own_names_and_contains_its_defaults(loss):
    accepted = loss_hparams(loss)
    for name, definition in LOSS_DEFAULTS[loss].items():
        assert name in accepted, f"{loss}: {name} is not a hyperparameter of the loss ({sorted(accepted)})"
        default = accepted[name]
        if default is inspect.Parameter.empty or default is None:
            continue
        assert _admits(definition.space, default), f"{loss}.{name}: default {default!r} outside the default space"
        assert definition.domain.contains(default), f"{loss}.{name}: default {default!r} outside the valid values"
        assert isinstance(default, bool) == (definition.domain.kind.value == "bool")


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_a_required_loss_hyperparameter_always_gets_a_value(loss):
    required = [h for h, d in loss_hparams(loss).items() if d is inspect.Parameter.empty]
    for name in required:
        assert name in LOSS_DEFAULTS[loss], f"{loss}.{name} is required but has no default space"
        assert LOSS_DEFAULTS[loss][name].reference is not None  # for the sensitivity preset
    space = full_comparison_space([loss])
    rng = np.random.default_rng(0)
    for _ in range(5):
        config = sample(space, rng)
        assert all(loss_param_name(loss, h) in config for h in required)


@pytest.mark.parametrize("miner", sorted(MINERS))
def test_miner_default_space_uses_the_miners_own_names_and_contains_its_defaults(miner):
    accepted = miner_hparams(miner)
    assert not [h for h, d in accepted.items() if d is inspect.Parameter.empty]
    for name, definition in MINER_DEFAULTS[miner].items():
        assert name in accepted, f"{miner}: {name} is not a hyperparameter of the miner ({sorted(accepted)})"
        default = getattr(accepted[name], "value", accepted[name])  # an enum default compares by its value
        assert _admits(definition.space, default), f"{miner}.{name}: default {default!r} outside the default space"


def _configs_to_build() -> list[dict[str, object]]:
    """Both corners of every loss's default space (no miner), and random configurations with their miners."""
    space = full_comparison_space()
    configs = []
    for loss in space.losses:
        for corner in (0, -1):  # a range's low and high ends, a list's first and last value
            configs.append({"loss": loss.name, "miner": "none",
                            **{e.name: e.param.boundary_values()[corner] for e in space.branch(loss.name, "none")}})
    rng = np.random.default_rng(0)
    configs += [sample(space, rng) for _ in range(60)]
    return configs


def test_configurations_from_the_default_spaces_build_and_give_finite_losses():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(4)  # (16,): 4 classes x 4, as an m-per-class batch
    for config in _configs_to_build():
        # Built as a trial builds them: the configuration's names become TrainConfig's loss and miner params.
        train = to_train_config(TrainConfig(), config)
        assert (train.loss, train.miner) == (config["loss"], config["miner"])
        assert len(train.loss_params) + len(train.miner_params) == len(config) - 2
        loss = make_loss(train.loss, num_classes=4, embedding_dim=8, **train.loss_params)
        miner = make_miner(train.miner, **train.miner_params)
        embeddings = torch.nn.functional.normalize(torch.randn(16, 8, generator=generator), dim=1)  # (B, D)
        embeddings.requires_grad_(True)
        value = loss(embeddings, labels, miner(embeddings.detach(), labels))
        value.backward()
        assert torch.isfinite(value), config
        assert torch.isfinite(embeddings.grad).all(), config


def test_a_grid_over_every_soft_triple_centre_count_builds():
    # The one int hyperparameter: its values must reach the loss as ints.
    space = StudySpace((LossSpace("soft_triple", {"centers_per_class": Grid([2, 20])}),))
    for value in space.loss("soft_triple").params["centers_per_class"].values:  # type: ignore[union-attr]
        loss = make_loss("soft_triple", num_classes=3, embedding_dim=4, centers_per_class=value)
        assert loss.proxies is not None and loss.proxies.shape == (3, value, 4)
