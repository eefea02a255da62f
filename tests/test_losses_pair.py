"""Pair and triplet losses: equal to PML 2.9 (defaults, other settings, mined tuples, other distances), to slow
loop references from the papers' formulas (float64 and float32), and to themselves when chunked."""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses

import reference_losses as ref
from dml_core.distances import CosineSimilarity, LpDistance
from dml_core.losses import _all_triplets, loss_hparams, make_loss
from dml_core.losses.base import MetricLoss
from dml_core.tuples import Pairs, Triplets, all_pairs, all_triplets

B, D = 24, 8  # the PML comparisons
SMALL_B = 14  # the loop references
# Labels drawn at random: uneven classes, some of one sample, as a real m-per-class batch never is.
LABELS = torch.randint(0, 6, (B,), generator=torch.Generator().manual_seed(3))
SMALL_LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 1, 0])


@dataclass(frozen=True)
class Case:
    name: str
    reference: Callable[..., torch.Tensor]
    settings: tuple[dict[str, Any], ...]  # non-default settings; the defaults are always tested too
    pml: str | None  # PML class name, None for EET
    mined: str | None  # "pairs" / "triplets": the reference's keyword for explicit tuples


CASES = [
    Case("contrastive", ref.contrastive,
         ({"pos_margin": 0.1, "neg_margin": 0.6}, {"pos_margin": -0.2, "neg_margin": 0.384}), "ContrastiveLoss",
         "pairs"),
    Case("triplet", ref.triplet,
         ({"margin": 0.3}, {"margin": 0.1, "swap": True}, {"margin": 0.2, "smooth_loss": True},
          {"margin": 0.0, "swap": True, "smooth_loss": True}), "TripletMarginLoss", "triplets"),
    Case("lifted_structure", ref.lifted_structure,
         ({"neg_margin": 0.7, "pos_margin": 0.1}, {"neg_margin": 1.5, "pos_margin": 0.3}), "LiftedStructureLoss",
         "pairs"),
    Case("npair", ref.npair, (), "NPairsLoss", "pairs"),  # PML's NPairsLoss has no hyperparameters
    Case("multi_similarity", ref.multi_similarity,
         ({"alpha": 8.0, "beta": 40.0, "base": 0.6}, {"alpha": 0.5, "beta": 10.0, "base": 0.3}),
         "MultiSimilarityLoss", "pairs"),
    Case("ranked_list", ref.ranked_list,
         ({"margin": 0.4, "Tn": 5.0, "imbalance": 0.3}, {"margin": 0.3, "Tn": 2.0, "alpha": 1.3, "Tp": 3.0}),
         "RankedListLoss", None),
    Case("eet", ref.eet,
         ({"margin": 0.2, "equidistant_weight": 0.5, "equidistributed_weight": 2.0},
          {"margin": 0.0, "equidistant_weight": 0.0, "equidistributed_weight": 0.1}), None, "triplets"),
]
PML_CASES = [c for c in CASES if c.pml]


def settings_of(cases: list[Case]) -> list[Any]:
    return [pytest.param(c, s, id=f"{c.name}-{i}") for c in cases for i, s in enumerate(({}, *c.settings))]


def build(name: str, **hparams: Any) -> MetricLoss:
    return make_loss(name, num_classes=6, embedding_dim=D, **hparams)


def pml_loss(case: Case, hparams: dict[str, Any], distance: Any = None) -> torch.nn.Module:
    """PML's loss with our full hyperparameter set (RankedList's margin and Tn are required there)."""
    full = {**loss_hparams(case.name), **hparams}
    extra = {} if distance is None else {"distance": distance}
    with warnings.catch_warnings():  # PML warns about Tn > 5, the official RLL setting
        warnings.simplefilter("ignore", UserWarning)
        return getattr(pml_losses, case.pml)(**full, **extra)  # type: ignore[arg-type]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def value_and_grad(loss: Callable[..., torch.Tensor], x: torch.Tensor, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    value = loss(x, *args)
    value.backward()
    return value.detach(), x.grad


def embeddings(size: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    return torch.randn(size, D, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def assert_close(ours: tuple[torch.Tensor, torch.Tensor], theirs: tuple[torch.Tensor, torch.Tensor],
                 tol: float) -> None:
    value_err = abs(float(ours[0]) - float(theirs[0])) / max(abs(float(theirs[0])), 1e-12)
    assert value_err <= tol, f"value {float(ours[0])} vs {float(theirs[0])}"
    assert ours[1] is not None and theirs[1] is not None
    assert rel(ours[1], theirs[1].to(ours[1].dtype)) <= tol, "gradient differs"


# ---------------------------------------------------------------- PML equality
@pytest.mark.parametrize(("case", "hparams"), settings_of(PML_CASES))
def test_equals_pml(case: Case, hparams: dict[str, Any]) -> None:
    x = embeddings(B)
    ours = value_and_grad(build(case.name, **hparams), x, LABELS)
    theirs = value_and_grad(pml_loss(case, hparams).double(), x, LABELS)
    assert float(ours[0]) != 0.0, "a zero loss would make this comparison vacuous"
    assert_close(ours, theirs, 1e-7)


def random_mined(kind: str, seed: int) -> Pairs | Triplets:
    """A random subset of the batch's pairs or triplets, with repeats, as a miner might return."""
    g = torch.Generator().manual_seed(seed)
    if kind == "triplets":
        full = all_triplets(LABELS)
        keep = torch.randint(0, full.a.numel(), (60,), generator=g)
        return Triplets(*(t[keep] for t in full))
    a1, p, a2, n = all_pairs(LABELS)
    pos = torch.randint(0, a1.numel(), (30,), generator=g)
    neg = torch.randint(0, a2.numel(), (50,), generator=g)
    return Pairs(a1[pos], p[pos], a2[neg], n[neg])


MINED_PML = [pytest.param(c, kind, id=f"{c.name}-{kind}") for c in PML_CASES if c.mined
             for kind in ("pairs", "triplets")]


@pytest.mark.parametrize(("case", "kind"), MINED_PML)
def test_mined_equals_pml(case: Case, kind: str) -> None:
    x = embeddings(B, seed=1)
    mined = random_mined(kind, seed=len(case.name))
    ours = value_and_grad(build(case.name), x, LABELS, mined)
    theirs = value_and_grad(pml_loss(case, {}).double(), x, LABELS, tuple(mined))
    assert float(ours[0]) != 0.0
    assert_close(ours, theirs, 1e-7)


OTHER_DISTANCE = [("contrastive", {}, CosineSimilarity, pml_distances.CosineSimilarity),
                  ("triplet", {}, CosineSimilarity, pml_distances.CosineSimilarity),
                  ("triplet", {"swap": True, "margin": 0.2}, CosineSimilarity, pml_distances.CosineSimilarity),
                  ("lifted_structure", {}, CosineSimilarity, pml_distances.CosineSimilarity),
                  ("multi_similarity", {}, LpDistance, pml_distances.LpDistance)]


@pytest.mark.parametrize(("name", "hparams", "ours_cls", "pml_cls"), OTHER_DISTANCE,
                         ids=[f"{o[0]}-{i}" for i, o in enumerate(OTHER_DISTANCE)])
def test_formulas_follow_the_distance(name: str, hparams: dict[str, Any], ours_cls: type, pml_cls: type) -> None:
    """With the other kind of distance (similarity <-> distance) plugged in, still PML's result: the formulas
    ask the Distance which way is closer instead of assuming it."""
    case = next(c for c in CASES if c.name == name)
    loss = build(name, **hparams)
    loss.distance = ours_cls()
    x = embeddings(B, seed=2)
    ours = value_and_grad(loss, x, LABELS)
    theirs = value_and_grad(pml_loss(case, hparams, pml_cls()).double(), x, LABELS)
    assert float(ours[0]) != 0.0
    assert_close(ours, theirs, 1e-7)


# ---------------------------------------------------------------- loop references
TOLERANCE = {torch.float64: 1e-9, torch.float32: 2e-4}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("case", "hparams"), settings_of(CASES))
def test_equals_loop_reference(case: Case, hparams: dict[str, Any], dtype: torch.dtype) -> None:
    x = embeddings(SMALL_B, dtype, seed=4)
    ours = value_and_grad(build(case.name, **hparams), x, SMALL_LABELS)
    expected = value_and_grad(lambda z, y: case.reference(z, y, **hparams), x.double(), SMALL_LABELS)
    assert ours[0].dtype == dtype
    assert float(expected[0]) != 0.0
    assert_close(ours, expected, TOLERANCE[dtype])


def mined_for_reference(case: Case) -> tuple[Pairs | Triplets, dict[str, Any]]:
    """A mined subset and the same tuples as the reference's explicit list."""
    g = torch.Generator().manual_seed(5)
    if case.mined == "triplets":
        full = all_triplets(SMALL_LABELS)
        keep = torch.randperm(full.a.numel(), generator=g)[:40]
        mined = Triplets(*(t[keep] for t in full))
        return mined, {"triplets": list(zip(*(t.tolist() for t in mined)))}
    a1, p, a2, n = all_pairs(SMALL_LABELS)
    pos = torch.randperm(a1.numel(), generator=g)[:20]
    neg = torch.randperm(a2.numel(), generator=g)[:40]
    mined = Pairs(a1[pos], p[pos], a2[neg], n[neg])
    pos_list = list(zip(mined.a1.tolist(), mined.p.tolist()))
    neg_list = list(zip(mined.a2.tolist(), mined.n.tolist()))
    return mined, {"pairs": pos_list if case.name == "npair" else (pos_list, neg_list)}


@pytest.mark.parametrize("case", [c for c in CASES if c.mined], ids=lambda c: c.name)
def test_mined_equals_loop_reference(case: Case) -> None:
    x = embeddings(SMALL_B, seed=6)
    mined, explicit = mined_for_reference(case)
    ours = value_and_grad(build(case.name), x, SMALL_LABELS, mined)
    expected = value_and_grad(lambda z, y: case.reference(z, y, **explicit), x, SMALL_LABELS)
    assert float(expected[0]) != 0.0
    assert_close(ours, expected, 1e-9)


def test_eet_pairs_become_triplets() -> None:
    """Mined pairs reach EET as the triplets of a positive and a negative pair sharing their anchor."""
    x = embeddings(SMALL_B, seed=7)
    mined = Pairs(torch.tensor([0, 3, 5]), torch.tensor([1, 4, 6]), torch.tensor([0, 0, 5, 9]),
                  torch.tensor([3, 9, 0, 10]))
    triplets = [(0, 1, 3), (0, 1, 9), (5, 6, 0)]
    ours = value_and_grad(build("eet"), x, SMALL_LABELS, mined)
    expected = value_and_grad(lambda z, y: ref.eet(z, y, triplets=triplets), x, SMALL_LABELS)
    assert_close(ours, expected, 1e-9)


# ---------------------------------------------------------------- the chunked all-triplet sums
@pytest.mark.parametrize("dense_batch", [0, 10_000], ids=["class-members", "every-sample"])
@pytest.mark.parametrize(("name", "hparams"), [("triplet", {}), ("triplet", {"swap": True, "smooth_loss": True}),
                                                ("eet", {})])
def test_chunked_triplet_sums_equal_one_chunk(monkeypatch: pytest.MonkeyPatch, name: str, hparams: dict[str, Any],
                                              dense_batch: int) -> None:
    """Forcing many small anchor chunks (1 anchor each), with either set of candidate positives (class members,
    or every sample), changes nothing: chunking is exact."""
    x = embeddings(B, seed=8)
    whole = value_and_grad(build(name, **hparams), x, LABELS)
    monkeypatch.setattr(_all_triplets, "_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(_all_triplets, "_DENSE_BATCH", dense_batch)
    chunked = value_and_grad(build(name, **hparams), x, LABELS)
    assert float(whole[0]) != 0.0
    assert_close(chunked, whole, 1e-12)


def test_triplet_engine_keeps_bounded_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """No chunk tensor exceeds the element budget: the largest (c, K, B) block is recorded and checked."""
    seen: list[int] = []
    original = _all_triplets.HingeTerm.__call__

    def spy(self: Any, ap: torch.Tensor, an: torch.Tensor, *rest: Any) -> Any:
        seen.append(ap.shape[0] * ap.shape[1] * an.shape[1])
        return original(self, ap, an, *rest)

    monkeypatch.setattr(_all_triplets.HingeTerm, "__call__", spy)
    monkeypatch.setattr(_all_triplets, "_CHUNK_ELEMENTS", 4096)
    labels = torch.arange(256) // 8  # K = 8: one chunk may hold 2 anchors
    build("triplet")(torch.randn(256, D, requires_grad=True), labels).backward()
    assert len(seen) == 128 and max(seen) <= 4096


# ---------------------------------------------------------------- specific behaviour
def test_ranked_list_large_temperature_stays_finite() -> None:
    """exp(Tn (alpha - d)) overflows float32 at Tn = 100; the row-max shift keeps the loss exact."""
    x = embeddings(SMALL_B, torch.float32, seed=9)
    ours = value_and_grad(build("ranked_list", Tn=100.0, Tp=80.0), x, SMALL_LABELS)
    expected = value_and_grad(lambda z, y: ref.ranked_list(z, y, Tn=100.0, Tp=80.0), x.double(), SMALL_LABELS)
    assert torch.isfinite(ours[0]) and torch.isfinite(ours[1]).all()
    assert_close(ours, expected, 2e-4)


def test_ranked_list_refuses_mined_tuples() -> None:
    zero = torch.tensor([0])
    mined = Pairs(zero, zero, zero, zero)
    with pytest.raises(ValueError, match="ranked_list"):
        build("ranked_list")(embeddings(SMALL_B), SMALL_LABELS, mined)


def test_ranked_list_default_alpha_follows_margin() -> None:
    assert build("ranked_list", margin=0.4).alpha == pytest.approx(1.2)
    assert build("ranked_list", margin=0.4, alpha=1.4).alpha == pytest.approx(1.4)


BAD_VALUES = [
    ("contrastive", "pos_margin", float("nan")), ("contrastive", "neg_margin", float("inf")),
    ("triplet", "margin", -0.1), ("triplet", "swap", 1), ("triplet", "smooth_loss", "yes"),
    ("lifted_structure", "neg_margin", float("nan")), ("lifted_structure", "pos_margin", "0.1"),
    ("multi_similarity", "alpha", 0.0), ("multi_similarity", "beta", -1.0), ("multi_similarity", "base", None),
    ("ranked_list", "margin", -0.2), ("ranked_list", "Tn", -1.0), ("ranked_list", "imbalance", 1.5),
    ("ranked_list", "alpha", 0.0), ("ranked_list", "Tp", float("nan")),
    ("eet", "margin", -1.0), ("eet", "equidistant_weight", -0.5), ("eet", "equidistributed_weight", float("inf")),
]


@pytest.mark.parametrize(("name", "hparam", "value"), BAD_VALUES, ids=[f"{n}-{h}" for n, h, _ in BAD_VALUES])
def test_out_of_range_hyperparameters_are_refused(name: str, hparam: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"{hparam}="):
        build(name, **{hparam: value})


def test_hyperparameter_names_and_defaults_are_pmls() -> None:
    """Every hyperparameter PML's constructor has (bar triplets_per_anchor: sampling is the miners' job) under the
    same name with the same default; RankedList's required margin and Tn get the official CUB config."""
    for case in PML_CASES:
        ours = loss_hparams(case.name)
        theirs = {k: p.default for k, p in inspect.signature(getattr(pml_losses, case.pml).__init__).parameters.items()
                  if k not in ("self", "kwargs", "triplets_per_anchor")}
        assert set(ours) == set(theirs), case.name
        for key, default in theirs.items():
            if default is not inspect.Parameter.empty:
                assert ours[key] == default, (case.name, key)
    assert {k: loss_hparams("ranked_list")[k] for k in ("margin", "Tn")} == {"margin": 0.2, "Tn": 10.0}
