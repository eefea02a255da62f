"""The contract every loss in LOSSES meets: degenerate batches, mixed precision, determinism, factory checks.

One parametrised suite over the whole name table, so a new loss is held to it by being registered.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
import torch
from torch import nn

from dml_core.losses import LOSSES, loss_hparams, make_loss
from dml_core.losses.base import MetricLoss
from dml_core.tuples import Pairs, Triplets

C, D = 6, 8  # classes of the problem, embedding size
NAMES = list(LOSSES)
MINED_NAMES = [n for n in NAMES if LOSSES[n].takes_mined]


def build(name: str, **hparams: Any) -> MetricLoss:
    return make_loss(name, num_classes=C, embedding_dim=D, **hparams)


def embeddings(size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(size, D, generator=torch.Generator().manual_seed(seed))


def run(loss: MetricLoss, x: torch.Tensor, labels: torch.Tensor,
        mined: Pairs | Triplets | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The loss value and the gradients w.r.t. the embeddings and every parameter of the loss."""
    x = x.detach().clone().requires_grad_(True)
    loss.zero_grad()
    value = loss(x, labels, mined)
    value.backward()
    grads = [x.grad] + [p.grad for p in loss.parameters() if p.grad is not None]
    return value.detach(), grads


def assert_finite_and_backpropagates(value: torch.Tensor, grads: list[torch.Tensor]) -> None:
    assert value.ndim == 0, f"loss must be a scalar, got shape {tuple(value.shape)}"
    assert math.isfinite(float(value)), f"loss is {float(value)}"
    assert grads[0] is not None, "no gradient reached the embeddings"
    for grad in grads:
        assert torch.isfinite(grad).all(), "non-finite gradient"


# A batch with nothing to learn from gives exactly 0 for these losses (the others still have something to learn:
# e.g. contrastive pulls a one-class batch together, a proxy loss pulls it towards its proxy).
DEGENERATE = {
    "one_class": (torch.zeros(8, dtype=torch.long), {"triplet", "lifted_structure", "npair", "eet"}),
    "all_distinct": (torch.arange(C), {"triplet", "lifted_structure", "npair"}),
    "single_sample": (torch.tensor([2]), {"contrastive", "triplet", "lifted_structure", "npair",
                                          "multi_similarity", "ranked_list", "eet"}),
}


@pytest.mark.parametrize("batch", list(DEGENERATE))
@pytest.mark.parametrize("name", NAMES)
def test_degenerate_batches_are_finite(name: str, batch: str) -> None:
    labels, zero_for = DEGENERATE[batch]
    value, grads = run(build(name), embeddings(labels.numel()), labels)
    assert_finite_and_backpropagates(value, grads)
    if name in zero_for:
        assert float(value) == 0.0


@pytest.mark.parametrize("kind", ["pairs", "triplets"])
@pytest.mark.parametrize("name", MINED_NAMES)
def test_nothing_left_after_mining(name: str, kind: str) -> None:
    """An empty Pairs / Triplets (the miner kept nothing) gives a finite loss; 0 unless the loss has a batch-level
    term that does not depend on the tuples (EET's equidistributed constraint)."""
    empty = torch.empty(0, dtype=torch.long)
    mined = Pairs(empty, empty, empty, empty) if kind == "pairs" else Triplets(empty, empty, empty)
    labels = torch.arange(12) % 4
    value, grads = run(build(name), embeddings(12), labels, mined)
    assert_finite_and_backpropagates(value, grads)
    if name != "eet":
        assert float(value) == 0.0
    else:
        assert float(value) == pytest.approx(float(run(build(name, equidistant_weight=0.0), embeddings(12), labels,
                                                       mined)[0]))


@pytest.mark.parametrize("name", NAMES)
def test_collapsed_and_large_embeddings_are_finite(name: str) -> None:
    """All embeddings equal (a collapsed model: every distance 0), and embeddings of norm ~300."""
    labels = torch.arange(12) % 4
    collapsed = embeddings(1).expand(12, D)
    for x in (collapsed, 100.0 * embeddings(12)):
        assert_finite_and_backpropagates(*run(build(name), x, labels))


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_stays_finite(name: str) -> None:
    loss = build(name)
    x = embeddings(16).requires_grad_(True)
    labels = torch.arange(16) // 4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(x, labels)
    value.backward()
    assert math.isfinite(float(value.detach()))
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in loss.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result(name: str) -> None:
    labels = torch.arange(16) // 4
    results = []
    for _ in range(2):
        torch.manual_seed(0)  # the loss's own initialisation (proxies) draws from the global generator
        results.append(run(build(name), embeddings(16, seed=1), labels))
    (v1, g1), (v2, g2) = results
    assert float(v1) != 0.0
    assert torch.equal(v1, v2)
    assert len(g1) == len(g2) and all(torch.equal(a, b) for a, b in zip(g1, g2))


@pytest.mark.parametrize("name", NAMES)
def test_learnable_class_weights_are_exposed_as_proxies(name: str) -> None:
    loss = build(name)
    if loss.proxies is None:
        return
    assert isinstance(loss.proxies, nn.Parameter)
    expected = (C, loss_hparams(name)["centers_per_class"], D) if name == "soft_triple" else (C, D)
    assert tuple(loss.proxies.shape) == expected


# ---------------------------------------------------------------- make_loss / loss_hparams
def test_unknown_loss_name_is_refused() -> None:
    with pytest.raises(ValueError, match="tripplet"):
        make_loss("tripplet", num_classes=C, embedding_dim=D)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_hyperparameter_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not_a_hyperparameter"):
        build(name, not_a_hyperparameter=1.0)


@pytest.mark.parametrize("name", NAMES)
def test_hyperparameters_are_keyword_only_with_defaults(name: str) -> None:
    """loss_hparams lists keyword-only arguments with defaults, and passing them explicitly builds the same loss."""
    params = inspect.signature(LOSSES[name].__init__).parameters
    hparams = loss_hparams(name)
    for key, default in hparams.items():
        assert params[key].kind is inspect.Parameter.KEYWORD_ONLY
        assert default is not inspect.Parameter.empty, f"{name}.{key} has no default: make_loss(name) would fail"
    labels = torch.arange(16) // 4
    torch.manual_seed(0)
    implicit = run(build(name), embeddings(16), labels)[0]
    torch.manual_seed(0)
    explicit = run(build(name, **hparams), embeddings(16), labels)[0]
    assert torch.equal(implicit, explicit)


NAN_CASES = [pytest.param(n, h, id=f"{n}-{h}") for n in NAMES for h, v in loss_hparams(n).items()
             if isinstance(v, float)]


@pytest.mark.parametrize(("name", "hparam"), NAN_CASES)
def test_nan_hyperparameters_are_refused(name: str, hparam: str) -> None:
    """Every real-valued hyperparameter refuses NaN with a ValueError that names it."""
    with pytest.raises(ValueError, match=hparam):
        build(name, **{hparam: float("nan")})
