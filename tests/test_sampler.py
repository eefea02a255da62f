"""MPerClassSampler: batch composition, determinism, replay from a saved generator state, errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dml_core.samplers import MPerClassSampler


def imbalanced_labels() -> torch.Tensor:
    """20 classes: sizes 1..20 (so classes 0..2 hold fewer than m = 4 samples), shuffled."""
    labels = torch.cat([torch.full((size,), c) for c, size in enumerate(range(1, 21))])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]


def sampler(seed: int = 0, **kwargs: object) -> MPerClassSampler:
    options = {"labels": imbalanced_labels(), "m": 4, "batch_size": 32, **kwargs}
    return MPerClassSampler(options.pop("labels"), options.pop("m"), options.pop("batch_size"),
                            torch.Generator().manual_seed(seed), **options)


def test_every_batch_holds_batch_size_over_m_classes_with_m_samples_each():
    labels = imbalanced_labels()
    s = sampler()
    batches = list(s)
    assert len(batches) == len(s) == len(labels) // 32
    for batch in batches:
        assert len(batch) == 32 and all(isinstance(i, int) for i in batch)
        per_class = Counter(int(labels[i]) for i in batch)
        assert len(per_class) == 8 and set(per_class.values()) == {4}
        for c in per_class:
            block = [i for i in batch if labels[i] == c]
            class_size = int((labels == c).sum())
            if class_size >= 4:
                assert len(set(block)) == 4  # without replacement within the batch


def test_small_classes_are_drawn_with_replacement_and_every_class_appears():
    labels = imbalanced_labels()
    seen_classes, blocks = set(), {0: [], 2: []}  # class 0 has 1 sample, class 2 has 3
    for batch in sampler(batches_per_epoch=200):
        seen_classes |= {int(labels[i]) for i in batch}
        for c in blocks:
            block = [i for i in batch if labels[i] == c]
            if block:
                blocks[c].append(block)
    assert seen_classes == set(range(20))
    assert blocks[0] and all(len(b) == 4 and len(set(b)) == 1 for b in blocks[0])
    # 4 uniform draws with replacement from 3 samples: 3 distinct with probability 4/9, fewer otherwise.
    distinct = Counter(len(set(b)) for b in blocks[2])
    assert len(blocks[2]) >= 20 and all(len(b) == 4 for b in blocks[2])
    assert distinct[3] > 0 and distinct[1] + distinct[2] > 0
    assert {i for b in blocks[2] for i in b} == set(torch.where(labels == 2)[0].tolist())


def test_classes_and_members_are_drawn_uniformly():
    labels = torch.arange(40) // 5  # 8 classes of 5
    s = MPerClassSampler(labels, 2, 8, torch.Generator().manual_seed(1), batches_per_epoch=2000)
    class_counts, member_counts = Counter(), Counter()
    for batch in s:
        class_counts.update({int(labels[i]) for i in batch})
        member_counts.update(batch)
    # 4 of 8 classes per batch: each class in half the batches; 2 of its 5 members: each member in 1/5 of them.
    assert all(abs(n / 2000 - 0.5) < 0.05 for n in class_counts.values())
    assert all(abs(n / 2000 - 0.2) < 0.04 for n in member_counts.values())


def test_same_seed_same_batches_other_seed_other_batches():
    assert list(sampler(seed=3)) == list(sampler(seed=3))
    assert list(sampler(seed=3)) != list(sampler(seed=4))


def test_consecutive_epochs_differ():
    s = sampler()
    assert list(s) != list(s)


def test_restoring_the_generator_state_replays_the_batches():
    s = sampler(seed=5)
    state = s.generator.get_state()
    first = list(s)
    s.generator.set_state(state)
    assert list(s) == first


def test_mid_epoch_state_replays_the_rest_of_the_epoch():
    s = sampler(seed=6)
    it = iter(s)
    next(it), next(it)
    state = s.generator.get_state()  # a checkpoint taken after two batches
    rest = list(it)
    fresh = sampler(seed=99)
    fresh.generator.set_state(state)
    assert [fresh.batch() for _ in rest] == rest


def test_works_as_a_dataloader_batch_sampler():
    labels = imbalanced_labels()
    data = TensorDataset(torch.arange(len(labels)), labels)
    loader = DataLoader(data, batch_sampler=sampler(seed=7))
    expected = list(sampler(seed=7))
    got = [(idx.tolist(), lab) for idx, lab in loader]
    assert [idx for idx, _ in got] == expected
    assert all(torch.equal(lab, labels[idx]) for idx, lab in got)


def test_batches_per_epoch_and_default_length():
    assert len(sampler(batches_per_epoch=7)) == len(list(sampler(batches_per_epoch=7))) == 7
    # Fewer samples than one batch (classes smaller than m fill the gap with repeats): still one batch per epoch.
    tiny = MPerClassSampler([0, 0, 1, 2, 3], 2, 8, torch.Generator())
    assert len(tiny) == 1 and len(next(iter(tiny))) == 8


def test_accepts_lists_numpy_and_tensors():
    as_list = [0, 0, 1, 1, 2, 2]
    for labels in (as_list, np.array(as_list), torch.tensor(as_list)):
        batch = next(iter(MPerClassSampler(labels, 2, 4, torch.Generator().manual_seed(0))))
        assert sorted(Counter(as_list[i] for i in batch).values()) == [2, 2]


@pytest.mark.parametrize("args, kwargs, needle", [
    (([0, 0, 1, 1], 0, 4), {}, "m=0"),
    (([0, 0, 1, 1], 3, 4), {}, "batch_size=4, m=3"),
    (([0, 0, 1, 1], 2, 0), {}, "batch_size=0"),
    (([0, 0, 1, 1], 2, 6), {}, "needs batch_size / m = 3 classes but the labels have 2"),
    (([0, 0, 1, 1], 2, 4), {"batches_per_epoch": 0}, "batches_per_epoch=0"),
    (([0, 0, 1, 1], 2.0, 4), {}, "m=2.0"),
    (([], 2, 4), {}, "non-empty 1-D"),
    (([0.0, 1.0], 1, 2), {}, "integers"),
])
def test_invalid_arguments_raise_one_line_value_errors(args, kwargs, needle):
    with pytest.raises(ValueError) as info:
        MPerClassSampler(*args, torch.Generator(), **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_generator_is_required():
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        MPerClassSampler([0, 0, 1, 1], 2, 4, 0)  # type: ignore[arg-type]
