"""Each miner against PML 2.9 (mined index sets), distance_weighted against its sampling formula, and the API."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from dml_core.distances import CosineSimilarity, LpDistance
from dml_core.miners import (MINERS, DistanceWeightedMiner, Pairs, TripletMarginMiner, TripletType, Triplets,
                             compatible_miners, make_miner, miner_hparams)

DTYPES = [torch.float64, torch.float32]


def batch(labels: torch.Tensor, dim: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    return torch.randn(len(labels), dim, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def label_sets() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "m_per_class": torch.arange(48) // 4,
        "imbalanced": torch.randint(0, 7, (40,), generator=g),  # singletons and large classes mixed
        "with_singletons": torch.tensor([0, 0, 0, 1, 2, 3, 3, 4, 5, 5, 5, 5, 6]),
    }


def as_sets(mined: tuple[torch.Tensor, ...]) -> tuple[list[tuple[int, ...]], ...]:
    """Pairs -> (sorted positive pairs, sorted negative pairs); triplets -> (sorted triplets,)."""
    cols = [t.tolist() for t in mined]
    if len(cols) == 4:
        return sorted(zip(cols[0], cols[1])), sorted(zip(cols[2], cols[3]))
    return (sorted(zip(*cols)),)


# (our name, our hyperparameters, PML miner factory, our distance override, PML distance)
def pml_cases() -> list[tuple[str, dict[str, object], object]]:
    cases: list[tuple[str, dict[str, object], object]] = [
        ("multi_similarity", {}, lambda d: pml_miners.MultiSimilarityMiner(**d)),
        ("multi_similarity", {"epsilon": 0.4}, lambda d: pml_miners.MultiSimilarityMiner(epsilon=0.4, **d)),
        ("batch_hard", {}, lambda d: pml_miners.BatchHardMiner(**d)),
        ("pair_margin", {}, lambda d: pml_miners.PairMarginMiner(**d)),
        ("pair_margin", {"pos_margin": 0.5, "neg_margin": 1.1},
         lambda d: pml_miners.PairMarginMiner(pos_margin=0.5, neg_margin=1.1, **d)),
    ]
    for kind in ("all", "hard", "semihard", "easy"):
        # "easy" keeps t > margin: a large margin would leave small random batches with nothing to compare.
        for margin in (0.05, 0.2, -0.1) if kind == "easy" else (0.2, 0.7, -0.1):
            cases.append(("triplet_margin", {"margin": margin, "type_of_triplets": kind},
                          lambda d, m=margin, k=kind: pml_miners.TripletMarginMiner(margin=m, type_of_triplets=k,
                                                                                    **d)))
    return cases


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("labels_name", list(label_sets()))
@pytest.mark.parametrize("name, hparams, pml", pml_cases(),
                         ids=[f"{n}{h or ''}" for n, h, _ in pml_cases()])
def test_default_distance_mines_pml_sets(name, hparams, pml, labels_name, dtype):
    labels = label_sets()[labels_name]
    x = batch(labels, 16, dtype, seed=len(labels) + len(name))
    ours = make_miner(name, **hparams)(x, labels)
    theirs = pml({})(x, labels)
    assert as_sets(ours) == as_sets(theirs)
    empty_by_definition = hparams.get("type_of_triplets") == "semihard" and hparams["margin"] <= 0
    assert (sum(len(t) for t in ours) == 0) == empty_by_definition  # the case exercises mining


# The other kind of distance exercises the other branch of every comparison (similarity vs distance).
OTHER_DISTANCE = {
    "multi_similarity": (lambda: LpDistance(), lambda: pml_distances.LpDistance()),
    "batch_hard": (lambda: CosineSimilarity(), lambda: pml_distances.CosineSimilarity()),
    "pair_margin": (lambda: CosineSimilarity(), lambda: pml_distances.CosineSimilarity()),
    "triplet_margin": (lambda: CosineSimilarity(), lambda: pml_distances.CosineSimilarity()),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, hparams, pml", pml_cases(),
                         ids=[f"{n}{h or ''}" for n, h, _ in pml_cases()])
def test_other_distance_mines_pml_sets(name, hparams, pml, dtype):
    labels = label_sets()["imbalanced"]
    x = batch(labels, 8, dtype, seed=11)
    ours_distance, pml_distance = OTHER_DISTANCE[name]
    ours = MINERS[name](**hparams, distance=ours_distance())(x, labels)
    theirs = pml({"distance": pml_distance()})(x, labels)
    assert as_sets(ours) == as_sets(theirs)
    # Equal and non-empty: semihard with a negative margin is the one set that is empty by definition.
    empty_by_definition = hparams.get("type_of_triplets") == "semihard" and hparams["margin"] < 0
    assert (sum(map(len, as_sets(ours))) == 0) == empty_by_definition


def test_triplet_margin_on_exact_ties_matches_pml():
    # Repeated embeddings put many margins exactly on 0 and on the margin, where the interval ends matter.
    labels = torch.arange(24) // 3
    base = F.normalize(torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5)), dim=1)
    x = base[torch.arange(24) % 4]
    for kind in TripletType:
        ours = make_miner("triplet_margin", margin=0.0, type_of_triplets=kind)(x, labels)
        theirs = pml_miners.TripletMarginMiner(margin=0.0, type_of_triplets=kind.value)(x, labels)
        assert as_sets(ours) == as_sets(theirs), kind


def test_ms_loss_fed_by_ms_miner_equals_pml():
    from dml_core.losses import make_loss

    labels = torch.arange(48) // 4
    x1 = batch(labels, 16, torch.float64, seed=21).requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    ours = make_loss("multi_similarity", num_classes=12, embedding_dim=16)
    value = ours(x1, labels, make_miner("multi_similarity")(x1, labels))
    expected = pml_losses.MultiSimilarityLoss()(x2, labels, pml_miners.MultiSimilarityMiner()(x2, labels))
    value.backward()
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-9)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-7, atol=1e-12)


# --- distance_weighted: its distribution, not its random draws --------------------------------------------------

def inverse_density_probabilities(x: torch.Tensor, labels: torch.Tensor, cutoff: float,
                                  nonzero_loss_cutoff: float) -> list[dict[int, float]]:
    """Slow reference written from the formula: P(k | a) ∝ 1 / q(max(d, cutoff)) over eligible negatives."""
    n = x.shape[1]
    u = F.normalize(x.double(), dim=1)
    rows = []
    for a in range(len(labels)):
        weights = {}
        for k in range(len(labels)):
            d = float((u[a] - u[k]).norm())
            if labels[k] == labels[a] or d >= nonzero_loss_cutoff:
                continue
            dc = max(d, cutoff)
            q = dc ** (n - 2) * (1 - dc * dc / 4) ** ((n - 3) / 2)
            weights[k] = 1 / q
        total = sum(weights.values())
        rows.append({k: w / total for k, w in weights.items()})
    return rows


def spread_batch(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on a sphere with pairwise distances well spread over (0, 2), in 6 classes of 3."""
    g = torch.Generator().manual_seed(9)
    centre = F.normalize(torch.randn(1, dim, dtype=torch.float64, generator=g), dim=1)
    scales = torch.linspace(0.05, 1.6, 18, dtype=torch.float64)[:, None]
    x = F.normalize(centre + scales * torch.randn(18, dim, dtype=torch.float64, generator=g), dim=1)
    return x, torch.arange(18) // 3


@pytest.mark.parametrize("dim", [3, 8])
def test_distance_weighted_probabilities_follow_inverse_density(dim):
    x, labels = spread_batch(dim)
    miner = DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)
    probs = miner.probabilities(x, labels)
    reference = inverse_density_probabilities(x, labels, 0.5, 1.4)
    assert any(len(row) >= 3 for row in reference)  # several eligible negatives with different weights
    for a, row in enumerate(reference):
        expected = torch.zeros(len(labels), dtype=torch.float64)
        for k, w in row.items():
            expected[k] = w
        torch.testing.assert_close(probs[a], expected, rtol=1e-9, atol=1e-12)


def test_distance_weighted_clips_at_cutoff_and_cuts_far_negatives():
    # Anchor 0 with negatives at distances 0.1 and 0.3 (both clipped to the cutoff: equal weight), 1.0, and 1.8
    # (beyond nonzero_loss_cutoff: never drawn).
    def at(d: float) -> list[float]:
        angle = 2 * math.asin(d / 2)
        return [math.cos(angle), math.sin(angle), 0.0]
    x = torch.tensor([at(0.0), at(0.0), at(0.1), at(0.3), at(1.0), at(1.8)], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2, 3, 4])
    probs = DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4).probabilities(x, labels)[0]
    assert float(probs[2]) == pytest.approx(float(probs[3]), rel=1e-9)
    assert float(probs[5]) == 0 and float(probs[0]) == 0 and float(probs[1]) == 0
    # q(d) ∝ d (1 - d²/4)^0 for n = 3: weight 1/d, so distance 1.0 weighs half of the clipped 0.5.
    assert float(probs[4] / probs[2]) == pytest.approx(0.5, rel=1e-9)
    assert float(probs.sum()) == pytest.approx(1.0)


def draw_statistics(mine, rounds: int) -> tuple[Counter[tuple[int, int]], Counter[tuple[int, int]], Counter[int]]:
    """Counts of (anchor, negative), (anchor, positive) and anchors over `rounds` calls of `mine()`."""
    negatives: Counter[tuple[int, int]] = Counter()
    positives: Counter[tuple[int, int]] = Counter()
    anchors: Counter[int] = Counter()
    for _ in range(rounds):
        a, p, n = mine()
        negatives.update(zip(a.tolist(), n.tolist()))
        positives.update(zip(a.tolist(), p.tolist()))
        anchors.update(a.tolist())
    return negatives, positives, anchors


def total_variations(probs: torch.Tensor, negatives: Counter[tuple[int, int]], anchors: Counter[int]) -> list[float]:
    """Per anchor, the total variation distance between the empirical negative frequencies and `probs`."""
    out = []
    for a, draws in anchors.items():
        empirical = torch.tensor([negatives[(a, k)] / draws for k in range(probs.shape[1])], dtype=torch.float64)
        out.append(float((empirical - probs[a]).abs().sum()) / 2)
    return out


# Over this batch a wrong law is far off: uniform over the eligible negatives is at mean TV 0.25 from the
# inverse-density law, while 900 draws per anchor from the right law land at about 0.035.
ROUNDS, MEAN_TV, MAX_TV = 300, 0.055, 0.1


def test_distance_weighted_draws_follow_probabilities():
    x, labels = spread_batch(8)
    miner = DistanceWeightedMiner(generator=torch.Generator().manual_seed(0))
    probs = miner.probabilities(x, labels)
    negatives, positives, anchors = draw_statistics(lambda: miner(x, labels), ROUNDS)
    active = {a for a in range(len(labels)) if probs[a].sum() > 0}
    assert active and set(anchors) == active
    assert all(count == 3 * ROUNDS for count in anchors.values())  # PML's count: class size per anchor and round
    assert all(probs[a, n] > 0 for a, n in negatives)  # never a zero-probability negative
    tvs = total_variations(probs, negatives, anchors)
    assert sum(tvs) / len(tvs) < MEAN_TV and max(tvs) < MAX_TV
    for (a, p), count in positives.items():
        assert labels[p] == labels[a] and p != a
        assert count / anchors[a] == pytest.approx(0.5, abs=0.06)  # uniform over the 2 other class members


def test_pml_draws_follow_our_probabilities():
    x, labels = spread_batch(8)
    probs = DistanceWeightedMiner().probabilities(x, labels)
    pml = pml_miners.DistanceWeightedMiner()
    torch.manual_seed(1)  # PML draws from torch's global generator
    negatives, _, anchors = draw_statistics(lambda: pml(x, labels), ROUNDS)
    assert set(anchors) == {a for a in range(len(labels)) if probs[a].sum() > 0}
    assert all(count == 3 * ROUNDS for count in anchors.values())
    tvs = total_variations(probs, negatives, anchors)
    assert sum(tvs) / len(tvs) < MEAN_TV and max(tvs) < MAX_TV


def test_distance_weighted_generator_on_cpu_feeds_reproducible_draws():
    x, labels = spread_batch(8)
    first = make_miner("distance_weighted", generator=torch.Generator().manual_seed(4))(x, labels)
    second = make_miner("distance_weighted", generator=torch.Generator().manual_seed(4))(x, labels)
    other = make_miner("distance_weighted", generator=torch.Generator().manual_seed(5))(x, labels)
    assert all(torch.equal(s, t) for s, t in zip(first, second))
    assert not all(torch.equal(s, t) for s, t in zip(first, other))


# --- API ---------------------------------------------------------------------------------------------------------

def test_hparams_are_pml_defaults():
    assert miner_hparams("multi_similarity") == {"epsilon": 0.1}
    assert miner_hparams("triplet_margin") == {"margin": 0.2, "type_of_triplets": "all"}
    assert miner_hparams("batch_hard") == {}
    assert miner_hparams("pair_margin") == {"pos_margin": 0.2, "neg_margin": 0.8}
    assert miner_hparams("distance_weighted") == {"cutoff": 0.5, "nonzero_loss_cutoff": 1.4}
    assert miner_hparams("none") == {}
    for name in MINERS:  # every default builds
        make_miner(name, **miner_hparams(name))


def test_output_types():
    labels = torch.arange(12) // 3
    x = batch(labels, 4, torch.float64, seed=0)
    kinds = {name: type(make_miner(name)(x, labels)) for name in MINERS}
    assert kinds == {"none": type(None), "multi_similarity": Pairs, "pair_margin": Pairs,
                     "triplet_margin": Triplets, "batch_hard": Triplets, "distance_weighted": Triplets}


def test_triplet_type_accepts_strings_and_enum():
    assert TripletMarginMiner(type_of_triplets="semihard").type_of_triplets is TripletType.SEMIHARD
    assert TripletMarginMiner(type_of_triplets=TripletType.HARD).type_of_triplets is TripletType.HARD


@pytest.mark.parametrize("name, hparams, needle", [
    ("multi_similarity", {"epsilon": -0.1}, "epsilon=-0.1"),
    ("multi_similarity", {"epsilon": float("nan")}, "epsilon=nan"),
    ("triplet_margin", {"margin": float("inf")}, "margin=inf"),
    ("triplet_margin", {"type_of_triplets": "hardest"}, "type_of_triplets='hardest'"),
    ("pair_margin", {"pos_margin": "x"}, "pos_margin='x'"),
    ("distance_weighted", {"cutoff": 0.0}, "cutoff=0.0"),
    ("distance_weighted", {"cutoff": 2.5}, "cutoff=2.5"),
    ("distance_weighted", {"cutoff": 0.8, "nonzero_loss_cutoff": 0.6}, "nonzero_loss_cutoff=0.6"),
])
def test_bad_hyperparameter_values_name_the_value(name, hparams, needle):
    with pytest.raises(ValueError, match=f"^{name} miner: .*{needle.replace('(', '.').replace(')', '.')}"):
        make_miner(name, **hparams)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown miner 'hardest'.*multi_similarity.*distance_weighted"):
        make_miner("hardest")
    with pytest.raises(ValueError, match="unknown hyperparameter.*marg.*triplet_margin.*margin, type_of_triplets"):
        make_miner("triplet_margin", marg=0.1)
    with pytest.raises(ValueError, match="unknown hyperparameter.*distance.*expected: epsilon"):
        make_miner("multi_similarity", distance=LpDistance())  # not a searched hyperparameter
    with pytest.raises(ValueError, match="unknown miner"):
        miner_hparams("hardest")


def test_generator_is_ignored_by_deterministic_miners():
    labels = torch.arange(12) // 3
    x = batch(labels, 4, torch.float64, seed=0)
    with_gen = make_miner("batch_hard", generator=torch.Generator().manual_seed(0))(x, labels)
    assert as_sets(with_gen) == as_sets(make_miner("batch_hard")(x, labels))


def test_bad_inputs_raise():
    miner = make_miner("batch_hard")
    with pytest.raises(ValueError, match="embeddings must be"):
        miner(torch.randn(4), torch.arange(4))
    with pytest.raises(ValueError, match="labels must be"):
        miner(torch.randn(4, 3), torch.arange(5))


# --- compatibility table -------------------------------------------------------------------------------------------

def test_compatible_miners_cover_every_loss_with_known_miners():
    from dml_core.losses import LOSSES

    for loss in LOSSES:
        miners = compatible_miners(loss)
        assert "none" in miners
        assert miners <= set(MINERS), loss
    from dml_core.miners import COMPATIBLE_MINERS
    assert set(COMPATIBLE_MINERS) == set(LOSSES)


def test_compatible_miners_table():
    every = {"none", "pair_margin", "multi_similarity", "triplet_margin", "batch_hard", "distance_weighted"}
    assert compatible_miners("contrastive") == every
    assert compatible_miners("triplet") == every
    assert compatible_miners("lifted_structure") == {"none", "pair_margin", "multi_similarity"}
    assert compatible_miners("multi_similarity") == {"none", "multi_similarity", "pair_margin"}
    assert compatible_miners("eet") == {"none", "triplet_margin", "batch_hard", "distance_weighted"}
    for loss in ("npair", "ranked_list", "proxy_nca", "proxy_anchor", "soft_triple", "normalized_softmax",
                 "arcface", "cosface", "center"):
        assert compatible_miners(loss) == {"none"}
    with pytest.raises(ValueError, match="unknown loss 'tripletloss'"):
        compatible_miners("tripletloss")
