"""Proxy and classification losses: loop references, PML equality, validation, degenerate batches, autocast."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

import reference_losses_proxy as ref
from dml_core.losses import loss_hparams, make_loss
from dml_core.losses._proxy import ProxyLoss
from dml_core.losses.arcface import ArcFaceLoss
from dml_core.losses.center import CenterLoss
from dml_core.losses.cosface import CosFaceLoss
from dml_core.losses.normalized_softmax import NormalizedSoftmaxLoss
from dml_core.losses.proxy_anchor import ProxyAnchorLoss
from dml_core.losses.proxy_nca import ProxyNCALoss
from dml_core.losses.soft_triple import SoftTripleLoss
from dml_core.tuples import all_pairs, all_triplets

C, D = 5, 6  # classes, embedding size of the small test problems


@dataclass(frozen=True)
class Case:
    """One loss: its class, a loop reference taking (x, labels, *weights, **hparams), and test settings."""

    name: str
    cls: type[ProxyLoss]
    reference: Callable[..., torch.Tensor]
    settings: tuple[dict[str, Any], ...]  # two non-default settings; defaults are always tested too
    pml: str | None = None  # PML class name


CASES = [
    Case("proxy_nca", ProxyNCALoss, ref.proxy_nca, ({"softmax_scale": 8.0}, {"softmax_scale": 0.3}), "ProxyNCALoss"),
    Case("proxy_anchor", ProxyAnchorLoss, ref.proxy_anchor,
         ({"margin": 0.2, "alpha": 16.0}, {"margin": 0.0, "alpha": 4.0}), "ProxyAnchorLoss"),
    Case("soft_triple", SoftTripleLoss, ref.soft_triple,
         ({"la": 10.0, "gamma": 0.2, "margin": 0.05}, {"centers_per_class": 3, "la": 30.0, "gamma": 0.05}),
         "SoftTripleLoss"),
    Case("normalized_softmax", NormalizedSoftmaxLoss, ref.normalized_softmax,
         ({"temperature": 0.1}, {"temperature": 1.0}), "NormalizedSoftmaxLoss"),
    Case("arcface", ArcFaceLoss, ref.arcface, ({"margin": 20.0, "scale": 32.0}, {"margin": 100.0, "scale": 8.0}),
         "ArcFaceLoss"),
    Case("cosface", CosFaceLoss, ref.cosface, ({"margin": 0.2, "scale": 32.0}, {"margin": 0.0, "scale": 10.0}),
         "CosFaceLoss"),
    Case("center", CenterLoss, ref.center, ({"center_weight": 0.003}, {"center_weight": 5.0})),
]
PML_CASES = [c for c in CASES if c.pml]
IDS = [c.name for c in CASES]


def defaults(case: Case) -> dict[str, Any]:
    return loss_hparams(case.name)


def all_settings(case: Case) -> list[dict[str, Any]]:
    return [{}, *case.settings]


def build(case: Case, dtype: torch.dtype = torch.float64, seed: int = 0, num_classes: int = C,
          **hparams: Any) -> ProxyLoss:
    torch.manual_seed(seed)
    loss = case.cls(num_classes=num_classes, embedding_dim=D, **hparams).to(dtype)
    if isinstance(loss, CenterLoss):  # move the centres off their zero start so the reference sees general values
        with torch.no_grad():
            loss.proxies.normal_(0.0, 0.5)
    return loss


def batch(loss: ProxyLoss, dtype: torch.dtype, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of varied norms with labels that repeat and skip a class; sample 0 points almost exactly away
    from its own proxy (cos ≈ -1, ArcFace's fallback branch) and sample 1 almost onto it (cos ≈ 1).

    Near cos = 1 ArcFace's gradient (∝ 1/sin θ) is ill-conditioned: float32's rounding of cos alone moves it by
    ~20% at 1 - cos ≈ 1e-7, in the acos form as much as in ours. So float32 stays at 1 - cos ≈ 1e-3 there, and
    float64 probes the near-singular point.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 1, 1, 2, 2, 2, 4, 0, 1, 4])
    x = torch.randn(len(labels), D, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2.0, len(labels))[:, None]
    own = loss.proxies.detach().double()
    if own.ndim == 3:
        own = own[:, 0]
    x[0] = -own[labels[0]] * 1.3 + 1e-3 * x[0]
    x[1] = own[labels[1]] * 0.7 + (1e-3 if dtype == torch.float64 else 5e-2) * x[1]
    return x.to(dtype), labels


def weights_of(loss: ProxyLoss) -> list[torch.Tensor]:
    """The learnable tensors in the order the references take them."""
    if isinstance(loss, CenterLoss):
        return [loss.proxies, loss.classifier.weight, loss.classifier.bias]
    return [loss.proxies]


def reference_hparams(case: Case, loss: ProxyLoss) -> dict[str, Any]:
    names = [n for n in inspect.signature(case.reference).parameters if n not in ("x", "labels")]
    values = {k: getattr(loss, k) for k in defaults(case)}
    values.pop("centers_per_class", None)
    if case.name == "arcface":
        values["margin_degrees"] = values.pop("margin")
    return {k: v for k, v in values.items() if k in names}


def value_and_grads(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    params: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = x.clone().requires_grad_(True)
    value = fn(x)
    grads = torch.autograd.grad(value, [x, *params])
    return value.detach(), list(grads)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


TOL = {torch.float64: 1e-9, torch.float32: 2e-4}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("setting", [0, 1, 2], ids=["defaults", "setting1", "setting2"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_loop_reference(case: Case, setting: int, dtype: torch.dtype) -> None:
    loss = build(case, dtype, **all_settings(case)[setting])
    x, labels = batch(loss, dtype)
    params = weights_of(loss)
    ours, ours_grads = value_and_grads(lambda e: loss(e, labels), x, params)
    ref_params = [p.detach().clone().requires_grad_(True) for p in params]
    hp = reference_hparams(case, loss)
    theirs, ref_grads = value_and_grads(lambda e: case.reference(e, labels, *ref_params, **hp), x, ref_params)
    assert ours.dtype == dtype
    assert rel_err(ours, theirs) < TOL[dtype], (float(ours), float(theirs))
    for mine, expected in zip(ours_grads, ref_grads):
        assert rel_err(mine, expected) < TOL[dtype]


def _pml_loss(case: Case, **hparams: Any) -> torch.nn.Module:
    from pytorch_metric_learning import losses as pml_losses  # a dev dependency: missing is a failure
    return getattr(pml_losses, case.pml)(C, D, **hparams).double()


def _pml_weight_and_grad_view(case: Case, pml: torch.nn.Module) -> tuple[torch.Tensor, Callable[[torch.Tensor],
                                                                                               torch.Tensor]]:
    """PML's weight tensor and how to view its gradient in our (C, [K,] D) layout."""
    if case.name in ("proxy_nca", "proxy_anchor"):
        return pml.proxies, lambda g: g
    if case.name == "soft_triple":
        return pml.fc, lambda g: g.T.reshape(C, -1, D)
    return pml.W, lambda g: g.T


@pytest.mark.parametrize("setting", [0, 1, 2], ids=["defaults", "setting1", "setting2"])
@pytest.mark.parametrize("case", PML_CASES, ids=[c.name for c in PML_CASES])
def test_matches_pml(case: Case, setting: int) -> None:
    hparams = all_settings(case)[setting]
    loss = build(case, **hparams)
    pml = _pml_loss(case, **hparams)
    pml_weight, view = _pml_weight_and_grad_view(case, pml)
    proxies = loss.proxies.detach()
    with torch.no_grad():
        pml_weight.copy_(view(proxies) if case.name != "soft_triple" else proxies.reshape(-1, D).T)
    x, labels = batch(loss, torch.float64, seed=5)
    ours, (gx, gp) = value_and_grads(lambda e: loss(e, labels), x, [loss.proxies])
    theirs, (tx, tp) = value_and_grads(lambda e: pml(e, labels), x, [pml_weight])
    assert rel_err(ours, theirs) < 1e-9
    assert rel_err(gx, tx) < 1e-9
    assert rel_err(gp, view(tp)) < 1e-9


@pytest.mark.parametrize("case", PML_CASES, ids=[c.name for c in PML_CASES])
def test_hparams_and_defaults_are_pmls(case: Case) -> None:
    """Every hyperparameter of ours is a PML constructor argument (its own or a base class's) with our default."""
    from pytorch_metric_learning import losses as pml_losses  # a dev dependency: missing is a failure
    pml_defaults: dict[str, Any] = {}
    for klass in reversed(getattr(pml_losses, case.pml).__mro__):  # subclasses override their bases' defaults
        init = klass.__dict__.get("__init__")
        if init is not None:
            pml_defaults.update({k: p.default for k, p in inspect.signature(init).parameters.items()
                                 if p.default is not inspect.Parameter.empty})
    ours = defaults(case)
    assert ours and {k: pml_defaults.get(k, "missing") for k in ours} == ours


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_make_loss_builds_it_with_proxies(case: Case) -> None:
    loss = make_loss(case.name, num_classes=7, embedding_dim=3)
    assert type(loss) is case.cls
    assert isinstance(loss.proxies, torch.nn.Parameter)
    per_class = (loss.centers_per_class,) if case.name == "soft_triple" else ()
    assert loss.proxies.shape == (7, *per_class, 3)
    assert any(p is loss.proxies for p in loss.parameters())


def test_center_loss_keeps_its_classifier_as_ordinary_parameters() -> None:
    loss = CenterLoss(num_classes=7, embedding_dim=3)
    names = {name for name, _ in loss.named_parameters()}
    assert names == {"proxies", "classifier.weight", "classifier.bias"}
    assert loss.classifier.weight.shape == (7, 3)
    assert torch.count_nonzero(loss.proxies) == 0  # centres start at the origin (documented)


BAD_HPARAMS = [
    (ProxyNCALoss, {"softmax_scale": 0.0}, "softmax_scale"),
    (ProxyNCALoss, {"softmax_scale": float("nan")}, "softmax_scale"),
    (ProxyAnchorLoss, {"margin": -0.1}, "margin"),
    (ProxyAnchorLoss, {"alpha": -1.0}, "alpha"),
    (SoftTripleLoss, {"centers_per_class": 0}, "centers_per_class"),
    (SoftTripleLoss, {"centers_per_class": 2.5}, "centers_per_class"),
    (SoftTripleLoss, {"la": 0.0}, "la"),
    (SoftTripleLoss, {"gamma": -0.1}, "gamma"),
    (SoftTripleLoss, {"margin": float("inf")}, "margin"),
    (NormalizedSoftmaxLoss, {"temperature": 0.0}, "temperature"),
    (ArcFaceLoss, {"margin": 180.0}, "margin"),
    (ArcFaceLoss, {"margin": -1.0}, "margin"),
    (ArcFaceLoss, {"scale": 0.0}, "scale"),
    (CosFaceLoss, {"margin": -0.35}, "margin"),
    (CosFaceLoss, {"scale": "64"}, "scale"),
    (CenterLoss, {"center_weight": -1.0}, "center_weight"),
    (CenterLoss, {"num_classes": 0}, "num_classes"),
    (CosFaceLoss, {"embedding_dim": True}, "embedding_dim"),
]


@pytest.mark.parametrize("cls, bad, field_name", BAD_HPARAMS)
def test_out_of_range_hyperparameters_raise(cls: type[ProxyLoss], bad: dict[str, Any], field_name: str) -> None:
    kwargs = {"num_classes": C, "embedding_dim": D, **bad}
    with pytest.raises(ValueError, match=rf"{field_name}="):
        cls(**kwargs)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_inputs_raise(case: Case) -> None:
    loss = build(case)
    x = torch.randn(4, D, dtype=torch.float64)
    with pytest.raises(ValueError, match="labels must be in"):
        loss(x, torch.tensor([0, 1, 2, C]))
    with pytest.raises(ValueError, match="labels must be in"):
        loss(x, torch.tensor([0, -1, 2, 3]))
    with pytest.raises(ValueError, match="embeddings must be"):
        loss(torch.randn(4, D + 1, dtype=torch.float64), torch.tensor([0, 1, 2, 3]))


def _assert_finite_and_backpropagates(loss: ProxyLoss, x: torch.Tensor, labels: torch.Tensor) -> None:
    x = x.clone().requires_grad_(True)
    value = loss(x, labels)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for p in loss.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


DEGENERATE = {
    "one_class": torch.tensor([3, 3, 3, 3]),
    "all_distinct": torch.tensor([0, 1, 2, 3]),
    "single_sample": torch.tensor([2]),
}


@pytest.mark.parametrize("labels_name", list(DEGENERATE))
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_degenerate_batches_give_finite_loss_that_backpropagates(case: Case, labels_name: str) -> None:
    loss = build(case, torch.float32)
    labels = DEGENERATE[labels_name]
    x = torch.randn(len(labels), D)
    _assert_finite_and_backpropagates(loss, x, labels)
    # and the same batch matches the loop reference (a one-class or single-sample batch is still a real loss)
    hp = reference_hparams(case, loss)
    expected = case.reference(x.double(), labels, *[p.detach().double() for p in weights_of(loss)], **hp)
    with torch.no_grad():
        assert math.isclose(float(loss.double()(x.double(), labels)), float(expected), rel_tol=1e-9)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_empty_batch_gives_zero_that_backpropagates(case: Case) -> None:
    loss = build(case, torch.float32)
    x = torch.randn(0, D, requires_grad=True)
    value = loss(x, torch.zeros(0, dtype=torch.long))
    value.backward()
    assert float(value.detach()) == 0.0 and x.grad is not None


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_embedding_on_its_proxy_keeps_gradients_finite(case: Case) -> None:
    """cos = ±1 exactly: where acos or sqrt(1 - cos²) would have infinite slope (ArcFace)."""
    loss = build(case, torch.float64)
    own = loss.proxies.detach()
    own = own[:, 0] if own.ndim == 3 else own
    labels = torch.tensor([0, 1, 2])
    x = torch.stack([own[0], -own[1], 2 * own[2]])
    _assert_finite_and_backpropagates(loss, x, labels)


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16], ids=["f32_in", "bf16_in"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bf16_autocast_stays_finite_and_close(case: Case, input_dtype: torch.dtype) -> None:
    loss = build(case, torch.float32)
    x, labels = batch(loss, torch.float32)
    exact = float(loss(x, labels).detach())
    x_in = x.to(input_dtype).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(x_in, labels)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x_in.grad).all()
    assert value.dtype == torch.float32  # computed in float32 under autocast, by design
    # bf16 input rounding (2^-8 relative) moves a scale-64 logit by up to ~0.25
    assert math.isclose(float(value.detach()), exact, rel_tol=0.05, abs_tol=0.3)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mined_tuples_are_ignored(case: Case) -> None:
    loss = build(case)
    x, labels = batch(loss, torch.float64)
    plain = loss(x, labels)
    assert torch.equal(loss(x, labels, all_triplets(labels)), plain)
    assert torch.equal(loss(x, labels, all_pairs(labels)), plain)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_same_seed_same_result_and_seed_matters(case: Case) -> None:
    def run(seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(seed)
        loss = case.cls(num_classes=C, embedding_dim=D)
        x = torch.randn(8, D, generator=torch.Generator().manual_seed(3))
        return loss(x, torch.arange(8) % C).detach(), [p.detach().clone() for p in loss.parameters()]

    (v1, p1), (v2, p2), (_, p3) = run(0), run(0), run(1)
    assert torch.equal(v1, v2) and all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert not all(torch.equal(a, b) for a, b in zip(p1, p3))


@pytest.mark.parametrize("case", [c for c in CASES if c.name != "proxy_anchor"],
                         ids=[c.name for c in CASES if c.name != "proxy_anchor"])
def test_per_sample_losses_are_batch_means(case: Case) -> None:
    """The documented reduction: a batch repeated twice has the same loss (a mean, not a sum, over samples)."""
    loss = build(case)
    x, labels = batch(loss, torch.float64)
    with torch.no_grad():
        once, twice = loss(x, labels), loss(torch.cat([x, x]), torch.cat([labels, labels]))
    assert math.isclose(float(once), float(twice), rel_tol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_training_separates_classes(case: Case) -> None:
    """A few optimiser steps on embeddings and class weights lower the loss and put each embedding nearest to its
    own class (its proxy, or for center loss its classifier row)."""
    torch.manual_seed(0)
    loss = case.cls(num_classes=4, embedding_dim=8)
    labels = torch.arange(16) % 4
    x = torch.randn(16, 8, requires_grad=True)
    opt = torch.optim.Adam([x, *loss.parameters()], lr=0.05)
    start = float(loss(x, labels).detach())
    for _ in range(60):
        opt.zero_grad()
        loss(x, labels).backward()
        opt.step()
    assert float(loss(x, labels).detach()) < start
    with torch.no_grad():
        if isinstance(loss, CenterLoss):
            predicted = loss.classifier(x).argmax(1)
        else:
            centres = loss.proxies.reshape(4, -1, 8)  # (C, K, D), K = 1 but for soft_triple
            cos = torch.einsum("bd,ckd->bck", F.normalize(x, dim=1), F.normalize(centres, dim=2))
            predicted = cos.amax(2).argmax(1)
    assert torch.equal(predicted, labels)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_arcface_on_its_class_weight_is_exact(dtype: torch.dtype) -> None:
    """cos θ = 1 exactly (embeddings along basis-vector class weights, so no rounding): the value is PML's, whose
    acos form is exact there (the former floor under sin θ, eps, moved this loss by 3e-5 relative in float32 and
    1e-9 in float64), and the gradient is finite; the embeddings off their weights get PML's gradient (PML's own is
    NaN on the others)."""
    from pytorch_metric_learning import losses as pml_losses  # a dev dependency: missing is a failure

    torch.manual_seed(0)
    loss = ArcFaceLoss(num_classes=C, embedding_dim=D, scale=1.0).to(dtype)  # scale 1: every row's loss is O(1)
    basis = torch.eye(D, dtype=dtype)
    with torch.no_grad():
        loss.proxies[0], loss.proxies[1] = 2.5 * basis[0], 0.3 * basis[1]
    labels = torch.tensor([0, 1, 2, 3, 1])
    x = torch.randn(len(labels), D, dtype=dtype, generator=torch.Generator().manual_seed(7))
    x[0], x[1] = 0.7 * basis[0], 4.0 * basis[1]  # on their class weights
    pml = pml_losses.ArcFaceLoss(C, D, scale=1.0).to(dtype)
    with torch.no_grad():
        pml.W.copy_(loss.proxies.T)
    ours, (gx, gp) = value_and_grads(lambda e: loss(e, labels), x, [loss.proxies])
    theirs, (tx, _) = value_and_grads(lambda e: pml(e, labels), x, [pml.W])
    assert torch.isfinite(gx).all() and torch.isfinite(gp).all()
    assert rel_err(ours, theirs) < (1e-6 if dtype == torch.float32 else 1e-12), (float(ours), float(theirs))
    assert rel_err(gx[2:], tx[2:]) < (1e-5 if dtype == torch.float32 else 1e-12)
