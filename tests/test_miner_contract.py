"""One contract every miner passes: degenerate batches, valid indices, dtypes, devices, determinism, memory."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dml_core.miners import (MINERS, DEFAULT_MAX_TRIPLETS, Pairs, TooManyTripletsError, Triplets, make_miner,
                             miner_hparams)

MINING = [name for name in MINERS if name != "none"]
# Every triplet type, since each selects a different interval; the other miners at their defaults.
CONFIGS = [(name, {}) for name in MINING if name != "triplet_margin"] + [
    ("triplet_margin", {"type_of_triplets": kind}) for kind in ("all", "hard", "semihard", "easy")]
CONFIG_IDS = [f"{name}-{h.get('type_of_triplets', '')}" for name, h in CONFIGS]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def build(name: str, hparams: dict[str, Any], seed: int = 0) -> Any:
    return make_miner(name, generator=torch.Generator().manual_seed(seed), **hparams)


def embeddings(n: int, dim: int = 8, *, dtype: torch.dtype = torch.float64, device: str = "cpu",
               seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, dtype=dtype, generator=torch.Generator().manual_seed(seed)).to(device)


def positives_negatives(mined: Pairs | Triplets) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                                           tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(mined, Pairs):
        return (mined.a1, mined.p), (mined.a2, mined.n)
    return (mined.a, mined.p), (mined.a, mined.n)


def check_indices(mined: Pairs | Triplets, labels: torch.Tensor, device: torch.device | str) -> None:
    assert isinstance(mined, (Pairs, Triplets))
    for t in mined:
        assert t.dtype == torch.int64 and t.device.type == torch.device(device).type and t.ndim == 1
        assert not t.requires_grad
        assert ((t >= 0) & (t < len(labels))).all()
    if isinstance(mined, Triplets):
        assert len(mined.a) == len(mined.p) == len(mined.n)
    else:
        assert len(mined.a1) == len(mined.p) and len(mined.a2) == len(mined.n)
    (a, p), (a2, n) = positives_negatives(mined)
    labels = labels.to(device)
    assert (labels[a] == labels[p]).all() and (a != p).all()
    assert (labels[a2] != labels[n]).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name, hparams", CONFIGS, ids=CONFIG_IDS)
def test_valid_indices(name, hparams, dtype, device):
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5, 5, 6, 6, 6]).to(device)
    x = embeddings(16, dtype=dtype, device=device, seed=1)
    mined = build(name, hparams)(x, labels)
    check_indices(mined, labels, device)
    assert type(mined) is MINERS[name].kind
    if name != "triplet_margin" or hparams["type_of_triplets"] in ("all", "easy"):
        assert sum(len(t) for t in mined) > 0  # a random batch has something to mine


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("labels", [[0] * 6, list(range(6)), [3]], ids=["one_class", "all_distinct", "single"])
@pytest.mark.parametrize("name, hparams", CONFIGS, ids=CONFIG_IDS)
def test_degenerate_batches_mine_nothing_invalid(name, hparams, labels, device):
    labels_t = torch.tensor(labels, device=device)
    x = embeddings(len(labels), device=device, seed=2)
    mined = build(name, hparams)(x, labels_t)
    check_indices(mined, labels_t, device)
    (a, _), (a2, _) = positives_negatives(mined)
    if len(set(labels)) == 1:
        assert len(a2) == 0  # no negatives exist
    if len(set(labels)) == len(labels):
        assert len(a) == 0  # no positives exist
    if isinstance(mined, Triplets) or len(labels) == 1:
        assert all(len(t) == 0 for t in mined)


@pytest.mark.parametrize("name", list(MINERS))
def test_empty_batch_gives_an_empty_result_of_the_miner_kind(name):
    mined = make_miner(name)(torch.empty(0, 8), torch.empty(0, dtype=torch.int64))
    if MINERS[name].kind is None:
        assert mined is None
    else:
        assert type(mined) is MINERS[name].kind and all(t.numel() == 0 and t.dtype == torch.int64 for t in mined)


def test_none_miner_returns_none():
    miner = make_miner("none")
    assert miner(embeddings(8), torch.arange(8) // 2) is None
    assert miner(embeddings(1), torch.tensor([0])) is None


@pytest.mark.parametrize("name, hparams", CONFIGS, ids=CONFIG_IDS)
def test_same_seed_same_result(name, hparams):
    labels = torch.arange(32) // 4
    x = embeddings(32, seed=3)
    first, second = build(name, hparams, seed=7)(x, labels), build(name, hparams, seed=7)(x, labels)
    assert all(torch.equal(s, t) for s, t in zip(first, second))


@pytest.mark.parametrize("name, hparams", CONFIGS, ids=CONFIG_IDS)
def test_mining_leaves_the_graph_alone(name, hparams):
    labels = torch.arange(16) // 4
    x = embeddings(16, seed=4).requires_grad_(True)
    mined = build(name, hparams)(x, labels)
    assert all(not t.requires_grad for t in mined)
    (x * 1.0).sum().backward()  # the miner neither detached x in place nor kept it
    assert torch.equal(x.grad, torch.ones_like(x))


def as_sets(mined: Pairs | Triplets) -> list[list[tuple[int, int]]]:
    """The mined (anchor, other) index pairs as sorted lists: positives first, then negatives."""
    return [sorted(zip(a.tolist(), o.tolist())) for a, o in positives_negatives(mined)] + \
        [sorted(zip(*[t.tolist() for t in mined]))] * isinstance(mined, Triplets)


@pytest.mark.parametrize("name, hparams", [c for c in CONFIGS if c[0] != "distance_weighted"],
                         ids=[i for i in CONFIG_IDS if not i.startswith("distance_weighted")])
def test_float32_and_float64_agree(name, hparams):
    # distance_weighted samples, so its float32 draws differ by design; test_miners covers its distribution.
    labels = torch.arange(24) // 3
    x = embeddings(24, seed=5)
    # Random data puts no distance within float32 rounding of a threshold.
    assert as_sets(build(name, hparams)(x, labels)) == as_sets(build(name, hparams)(x.float(), labels))


# --- memory: O(B²) intermediates, never (B, B, B) --------------------------------------------------------------

class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operation produces while active."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


@pytest.mark.parametrize("name, hparams", CONFIGS, ids=CONFIG_IDS)
def test_memory_is_quadratic_at_batch_1024(name, hparams):
    b = 1024
    labels = torch.arange(b) // 4
    x = embeddings(b, dim=32, dtype=torch.float32, seed=6)
    miner = build(name, hparams)
    with LargestTensor() as probe:
        mined = miner(x, labels)
    output = max(len(t) for t in mined)
    # A (B, B, B) mask would be 1.07e9 elements; every intermediate here is a (B, B) matrix or a mined list.
    assert probe.numel <= 4 * max(b * b, output), (probe.numel, output)


def test_triplet_margin_refuses_a_cubic_result_before_building_it():
    b = 1024
    labels = torch.arange(b) // 512  # two classes: up to 1024 * 511 * 512 = 2.7e8 triplets
    x = embeddings(b, dim=32, dtype=torch.float32, seed=7)
    miner = make_miner("triplet_margin", margin=1.0)
    with LargestTensor() as probe, pytest.raises(TooManyTripletsError, match=f"max_triplets={DEFAULT_MAX_TRIPLETS}"):
        miner(x, labels)
    assert probe.numel <= 4 * b * b


def test_triplet_margin_limit_is_exact():
    from dml_core.miners import TripletMarginMiner

    labels = torch.arange(16) // 4
    x = embeddings(16, seed=8)
    count = len(TripletMarginMiner(margin=5.0)(x, labels).a)  # margin 5 on unit vectors keeps every triplet
    assert count == 16 * 3 * 12
    assert len(TripletMarginMiner(margin=5.0, max_triplets=count)(x, labels).a) == count
    with pytest.raises(TooManyTripletsError, match=f"would return {count} triplets"):
        TripletMarginMiner(margin=5.0, max_triplets=count - 1)(x, labels)
    with pytest.raises(ValueError, match="max_triplets=0"):
        TripletMarginMiner(max_triplets=0)


def test_every_miner_is_covered():
    assert {name for name, _ in CONFIGS} | {"none"} == set(MINERS)
    assert all(set(h) <= set(miner_hparams(name)) for name, h in CONFIGS)
