"""Edge cases a differential fuzzer found against PML 2.9: equal embeddings, which must be exactly 0 apart at every
batch size, and mined sets of at most one pair each, which PML's pair losses turn into 0.

(The retrieval metrics' full depth is tested in test_metrics.py, ArcFace on its class weight in
test_losses_proxy.py.)
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

import reference_losses as ref
from dml_core.distances import LpDistance
from dml_core.losses import loss_hparams, make_loss
from dml_core.losses._pairwise import self_pairwise
from dml_core.miners import make_miner
from dml_core.tuples import Pairs, Triplets

D = 37
DTYPES = [torch.float64, torch.float32]
# Relative tolerance of a loss value or gradient against PML / a float64 loop reference.
TOLERANCE = {torch.float64: 1e-7, torch.float32: 1e-4}
PML_NAMES = {"contrastive": "ContrastiveLoss", "triplet": "TripletMarginLoss",
             "lifted_structure": "LiftedStructureLoss", "npair": "NPairsLoss",
             "multi_similarity": "MultiSimilarityLoss", "ranked_list": "RankedListLoss"}


def labels_of(size: int) -> torch.Tensor:
    return torch.arange(size) % 6


def with_duplicates(size: int, dtype: torch.dtype) -> torch.Tensor:
    """Random rows, many copied onto others, within a class (row i onto i + 6) and across classes (i onto i + 1).

    Whether the Gram form leaves noise between two equal rows depends on the row (some cancel exactly), so the
    batch holds many copies of different rows."""
    x = torch.randn(size, D, dtype=dtype, generator=torch.Generator().manual_seed(0))
    for i in range(0, size - 6, 4):
        x[i + 6] = x[i]
    for i in range(1, size - 1, 5):
        x[i + 1] = x[i]
    return x


def collapsed(size: int, dtype: torch.dtype) -> torch.Tensor:
    """Every embedding equal: a collapsed model. The row (entries over a few decades, seed 4) is one whose Gram-form
    self-distance was not 0 before the fix in any kernel and dtype tested below (many rows cancel exactly in some)."""
    g = torch.Generator().manual_seed(4)
    row = torch.randn(1, D, dtype=dtype, generator=g) * torch.exp(2 * torch.randn(1, D, dtype=dtype, generator=g))
    return row.expand(size, D).clone()


BATCHES: dict[str, Callable[[int, torch.dtype], torch.Tensor]] = {"duplicates": with_duplicates,
                                                                  "collapsed": collapsed}

# Every way a Euclidean matrix is computed: the losses' fused kernel and LpDistance (the miners'), which runs
# torch.cdist, whose own Gram path starts above 25 rows; with and without normalisation; a batch against a copy.
KERNELS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], bool]] = {
    "loss-kernel": (lambda x: self_pairwise(LpDistance(), x), True),
    "loss-kernel-raw": (lambda x: self_pairwise(LpDistance(normalize_embeddings=False), x), False),
    "lp-distance": (lambda x: LpDistance().pairwise(x), True),
    "lp-distance-raw": (lambda x: LpDistance(normalize_embeddings=False).pairwise(x), False),
    "lp-distance-cross": (lambda x: LpDistance().pairwise(x, x.clone()), True),
}


def direct_distances(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    """float64 distances from the differences themselves (cdist without its Gram path)."""
    u = F.normalize(x.double(), dim=1) if normalize else x.double()
    return torch.cdist(u, u, compute_mode="donot_use_mm_for_euclid_dist")


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", [8, 24, 100, 300])
def test_equal_embeddings_are_exactly_zero_apart(size: int, dtype: torch.dtype, batch: str, kernel: str) -> None:
    """Equal rows are at distance exactly 0 (not the Gram form's 1e-8 in float64, 5e-4 in float32), every other
    distance is the direct one, and the gradient is the direct computation's, with 0 from the equal pairs."""
    compute, normalize = KERNELS[kernel]
    x = BATCHES[batch](size, dtype).requires_grad_(True)
    mat = compute(x)
    equal = (x[:, None, :] == x[None, :, :]).all(-1)  # (B, B)
    assert equal.sum() > size, "the batch must hold equal rows"
    assert (mat.detach()[equal] == 0).all(), f"largest distance between equal rows {mat.detach()[equal].max()}"
    expected = direct_distances(x.detach(), normalize)
    scale = 1.0 if normalize else float(x.detach().norm(dim=1).max())
    atol = (1e-4 if dtype == torch.float32 else 1e-12) * scale
    assert torch.allclose(mat.detach().double(), expected, rtol=0, atol=atol)
    with torch.no_grad():  # as miners call it: corrected in place, the same values
        assert torch.equal(compute(x.detach()), mat.detach())

    weights = torch.randn(size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(size))
    (grad,) = torch.autograd.grad((mat * weights.to(dtype)).sum(), x)
    x64 = x.detach().double().requires_grad_(True)
    (expected_grad,) = torch.autograd.grad((direct_distances(x64, normalize) * weights).sum(), x64)
    assert torch.isfinite(grad).all()
    err = float((grad.double() - expected_grad).abs().max() / expected_grad.abs().max().clamp_min(1.0))
    assert err <= (1e-4 if dtype == torch.float32 else 1e-10), f"gradient differs by {err:.1e}"


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_near_but_distinct_embeddings_get_direct_distances(dtype: torch.dtype, kernel: str) -> None:
    """Rows a few rounding-noise widths apart (1e-3 in float32, 1e-7 in float64: the Gram form's noise is of that
    size, so it gets them wrong by tens of percent) get their direct distance and gradient, next to equal rows."""
    compute, normalize = KERNELS[kernel]
    step = 1e-3 if dtype == torch.float32 else 1e-7
    g = torch.Generator().manual_seed(5)
    x = torch.randn(100, D, dtype=dtype, generator=g)
    x[1] = x[0] + step * F.normalize(torch.randn(D, dtype=dtype, generator=g), dim=0)  # near, distinct
    x[2] = x[0]  # equal to row 0, so near row 1 as well
    x[50] = x[49] + step * F.normalize(torch.randn(D, dtype=dtype, generator=g), dim=0)
    x = x.requires_grad_(True)
    mat = compute(x)
    expected = direct_distances(x.detach(), normalize)
    values = mat.detach()
    for i, j in ((0, 1), (1, 2), (49, 50)):
        assert 0 < float(values[i, j]) == float(values[j, i])
        assert abs(float(values[i, j]) - float(expected[i, j])) <= 1e-2 * float(expected[i, j])
    assert float(values[0, 2]) == 0.0
    weights = torch.randn(100, 100, dtype=torch.float64, generator=g)
    (grad,) = torch.autograd.grad((mat * weights.to(dtype)).sum(), x)
    x64 = x.detach().double().requires_grad_(True)
    (expected_grad,) = torch.autograd.grad((direct_distances(x64, normalize) * weights).sum(), x64)
    err = float((grad.double() - expected_grad).abs().max() / expected_grad.abs().max())
    assert err <= 1e-2, f"gradient differs by {err:.1e}"


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_rows_grouped_by_accident_are_not_taken_as_equal(kernel: str) -> None:
    """Equal rows are found by grouping rows on a weighted sum of their coordinates (weights sqrt(1), sqrt(2), ...);
    two different rows with the same sum, (sqrt 2, 0, ...) and (0, 1, ...), must not become 0 apart."""
    from dml_core import distances

    x = torch.zeros(30, D, dtype=torch.float64)
    weights = torch.arange(1, D + 1, dtype=torch.float64).sqrt_()  # as _row_groups computes them
    x[0, 0], x[1, 1] = weights[1], 1.0  # the same weighted sum, different rows
    assert float(x[0] @ weights) == float(x[1] @ weights)
    x[2:] = x[0]  # equal rows, so the grouping runs
    groups = distances._row_groups(x)
    assert groups[0] != groups[1] and bool((groups[2:] == groups[0]).all())
    compute, normalize = KERNELS[kernel]
    mat = compute(x)
    expected = direct_distances(x, normalize)
    assert float(mat[0, 1]) == pytest.approx(float(expected[0, 1]), rel=1e-12) and float(expected[0, 1]) > 0.5
    assert float(mat[0, 2]) == 0.0


@pytest.mark.parametrize("precision", ["bf16", "tf32"])
def test_reduced_precision_matmuls_still_give_exact_zeros(precision: str) -> None:
    """With float32 matrix products allowed to round their operands (here oneDNN's on the CPU; TF32 on a GPU),
    the Gram form's noise grows with that rounding, and so does the bound that finds the pairs to recompute."""
    backend = torch.backends.mkldnn.matmul
    before = backend.fp32_precision
    try:
        backend.fp32_precision = precision
        x = with_duplicates(300, torch.float32)
        equal = (x[:, None, :] == x[None, :, :]).all(-1)
        for mat in (self_pairwise(LpDistance(), x), LpDistance().pairwise(x)):
            assert (mat[equal] == 0).all()
    finally:
        backend.fp32_precision = before


# ---------------------------------------------------------------- losses on equal embeddings
def build(name: str, **hparams: Any) -> torch.nn.Module:
    return make_loss(name, num_classes=6, embedding_dim=D, **hparams)


def pml_loss(name: str, dtype: torch.dtype) -> torch.nn.Module:
    with warnings.catch_warnings():  # PML warns about RankedList's Tn > 5, the official setting
        warnings.simplefilter("ignore", UserWarning)
        return getattr(pml_losses, PML_NAMES[name])(**loss_hparams(name)).to(dtype)


def value_and_grad(loss: Callable[..., torch.Tensor], x: torch.Tensor,
                   *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    value = loss(x, *args)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def assert_close(ours: tuple[torch.Tensor, torch.Tensor], theirs: tuple[torch.Tensor, torch.Tensor],
                 tol: float) -> None:
    value_err = abs(float(ours[0]) - float(theirs[0])) / max(abs(float(theirs[0])), 1e-12)
    assert value_err <= tol, f"value {float(ours[0])} vs {float(theirs[0])}"
    # Relative to the largest entry, or to 1e-3 where every entry is rounding noise around 0 (a collapsed batch).
    grad_err = float((ours[1].double() - theirs[1].double()).abs().max() / theirs[1].abs().max().clamp_min(1e-3))
    assert grad_err <= tol, f"gradient differs by {grad_err:.1e}"


@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(PML_NAMES))
def test_losses_on_equal_embeddings_equal_pml(name: str, dtype: torch.dtype, batch: str) -> None:
    """At B = 24 PML's cdist computes directly, so its equal embeddings are exactly 0 apart: ours must agree."""
    x, labels = BATCHES[batch](24, dtype), labels_of(24)
    assert_close(value_and_grad(build(name), x, labels), value_and_grad(pml_loss(name, dtype), x, labels),
                 TOLERANCE[dtype])


@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_contrastive_on_easy_triplets_of_equal_embeddings_equals_pml(dtype: torch.dtype, batch: str) -> None:
    """The fuzzer's worst case (0.086 against PML's 0.541): contrastive on the tuples of an easy-triplet miner,
    whose positive pairs are the equal embeddings."""
    x, labels = BATCHES[batch](24, dtype), labels_of(24)
    easy = pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="easy")(x, labels)
    ours_easy = make_miner("triplet_margin", margin=0.2, type_of_triplets="easy")(x, labels)
    assert sorted(zip(*(t.tolist() for t in ours_easy))) == sorted(zip(*(t.tolist() for t in easy)))
    mined = Triplets(*easy)
    assert_close(value_and_grad(build("contrastive"), x, labels, mined),
                 value_and_grad(pml_loss("contrastive", dtype), x, labels, easy), TOLERANCE[dtype])


REFERENCES = {"contrastive": ref.contrastive, "triplet": ref.triplet, "lifted_structure": ref.lifted_structure,
              "npair": ref.npair, "multi_similarity": ref.multi_similarity, "ranked_list": ref.ranked_list,
              "eet": ref.eet}


@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(REFERENCES))
def test_losses_on_equal_embeddings_equal_loop_references(name: str, dtype: torch.dtype, batch: str) -> None:
    """Above cdist's 25 rows, against the loops over pairs and triplets (direct differences, float64)."""
    x, labels = BATCHES[batch](30, dtype), labels_of(30)
    ours = value_and_grad(build(name), x, labels)
    expected = value_and_grad(REFERENCES[name], x.double(), labels)
    assert ours[0].dtype == dtype
    if name == "eet":
        # EET's minima over class pairs tie between copies of a row; a tie's gradient may go to any of them (the
        # loop to the first, amin's backward to all alike), so the gradients are compared per group of copies.
        _, group = torch.unique(x, dim=0, return_inverse=True)
        ours, expected = ((v, torch.zeros_like(g).index_add_(0, group, g)) for v, g in (ours, expected))
    assert_close(ours, expected, TOLERANCE[dtype])


def test_ranked_list_leaves_out_a_fully_collapsed_batch() -> None:
    """Its docstring's promise: pairs at distance 0 are left out, so a collapsed batch gives exactly 0 (was 0.6)."""
    assert float(build("ranked_list")(collapsed(64, torch.float32), labels_of(64))) == 0.0


# ---------------------------------------------------------------- mined sets of one pair
def idx(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


SIX_LABELS = torch.tensor([0, 0, 1, 1, 2, 2])
# PML's GenericPairLoss returns 0 when every index tensor (after triplets become pairs) holds at most one element.
ONE_PAIR_SETS: dict[str, Pairs | Triplets] = {
    "one-pos-one-neg": Pairs(idx(0), idx(1), idx(0), idx(2)),
    "one-pos-one-neg-apart": Pairs(idx(0), idx(1), idx(3), idx(4)),
    "one-pos": Pairs(idx(0), idx(1), idx(), idx()),
    "one-neg": Pairs(idx(), idx(), idx(0), idx(2)),
    "one-triplet": Triplets(idx(0), idx(1), idx(2)),
}
# One more pair anywhere and the set is a real one again, for PML as for us.
LARGER_SETS: dict[str, Pairs | Triplets] = {
    "two-pos-one-neg": Pairs(idx(0, 1), idx(1, 0), idx(0), idx(2)),
    "one-pos-two-neg": Pairs(idx(0), idx(1), idx(0, 1), idx(2, 4)),
    "two-triplets": Triplets(idx(0, 2), idx(1, 3), idx(2, 4)),
}
PAIR_LOSSES = ["contrastive", "multi_similarity", "lifted_structure"]  # PML's GenericPairLoss subclasses


def six() -> torch.Tensor:
    return torch.randn(6, D, dtype=torch.float64, generator=torch.Generator().manual_seed(11))


@pytest.mark.parametrize("mined", list(ONE_PAIR_SETS))
@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_pair_losses_give_zero_for_one_pair_each_as_pml(name: str, mined: str) -> None:
    tuples = ONE_PAIR_SETS[mined]
    x = six().requires_grad_(True)
    value = build(name)(x, SIX_LABELS, tuples)
    value.backward()  # still connected to the graph
    assert float(value.detach()) == 0.0 and x.grad is not None and (x.grad == 0).all()
    assert float(pml_loss(name, torch.float64)(six(), SIX_LABELS, tuple(tuples))) == 0.0


@pytest.mark.parametrize("mined", list(ONE_PAIR_SETS) + list(LARGER_SETS))
@pytest.mark.parametrize("name", ["contrastive", "multi_similarity", "lifted_structure", "triplet", "npair"])
def test_small_mined_sets_equal_pml(name: str, mined: str) -> None:
    """Every mined loss PML has, on sets of one pair (where only the pair losses give 0: PML's triplet loss
    counts a single triplet, its N-pair loss gives 0 for one pair by its formula) and of one pair more."""
    tuples = {**ONE_PAIR_SETS, **LARGER_SETS}[mined]
    ours = value_and_grad(build(name), six(), SIX_LABELS, tuples)
    theirs = value_and_grad(pml_loss(name, torch.float64), six(), SIX_LABELS, tuple(tuples))
    assert_close(ours, theirs, 1e-9)


def test_ms_miner_on_three_samples_gives_zero_losses_as_pml() -> None:
    """The fuzzer's case: labels [0, 0, 2]; the multi-similarity miner keeps one positive and one negative pair
    (sample 1 is far from the negative, so its pairs are easy), and the pair losses gave 0.44 / 2.08 against 0."""
    angles = torch.tensor([0.0, 60.0, -50.0]).deg2rad()
    x = torch.zeros(3, D, dtype=torch.float64)
    x[:, 0], x[:, 1] = angles.cos(), angles.sin()
    labels = torch.tensor([0, 0, 2])
    mined = make_miner("multi_similarity")(x, labels)
    theirs = pml_miners.MultiSimilarityMiner()(x, labels)
    assert [t.tolist() for t in mined] == [t.tolist() for t in theirs] == [[0], [1], [0], [2]]
    for name in PAIR_LOSSES:
        assert float(build(name)(x, labels, mined)) == 0.0
        assert float(pml_loss(name, torch.float64)(x, labels, theirs)) == 0.0
