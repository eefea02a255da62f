"""Cross-validation in lockstep (dml_core.folds): each fold model is exactly its single-fold run, a checkpoint
resumes all of them, the best epoch is kept per fold, and the two test evaluations are what their names say."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from dml_core.config import TrainConfig
from dml_core.data import load_dataset
from dml_core.errors import ConfigError
from dml_core.folds import evaluate_fold_models, fold_mean, train_folds
from dml_core.metrics import retrieval_metrics
from dml_core.mode import Mode
from dml_core.train import train

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

CONFIG = TrainConfig(loss="triplet", miner="triplet_margin", epochs=2, batch_size=32, batches_per_epoch=3,
                     num_folds=3, eval_batch_size=2048, dataset={"options": {"samples_per_face": 1}},
                     model={"embedding_dim": 16})
TIMING = ("train_time_s", "eval_time_s", "epoch_time_s")


def values(history):
    return [{k: v for k, v in m.items() if k not in TIMING} for m in history]


@pytest.fixture(scope="module")
def lockstep():
    torch.set_num_threads(1)
    return train_folds(CONFIG, keep_best="map@r")


def test_each_fold_model_is_exactly_its_single_fold_run(lockstep):
    for fold in range(CONFIG.num_folds):
        single = train(CONFIG.replace(fold=fold))
        assert values(single.history) == values(lockstep.folds[fold]), fold
    # The folds differ (each validates on other classes), and the mean is their mean.
    assert values(lockstep.folds[0]) != values(lockstep.folds[1])
    for epoch, mean in enumerate(lockstep.mean):
        for key in ("recall@1", "map@r", "train_loss"):
            assert mean[key] == pytest.approx(np.mean([h[epoch][key] for h in lockstep.folds]), rel=1e-12)
        assert mean["epoch_time_s"] == pytest.approx(sum(h[epoch]["epoch_time_s"] for h in lockstep.folds))


def test_a_checkpoint_resumes_every_fold_exactly(lockstep):
    saved = {}

    def keep_first(epoch, mean, per_fold, checkpoint):
        saved["checkpoint"] = pickle.loads(pickle.dumps(checkpoint))
        return True

    first = train_folds(CONFIG, on_epoch=keep_first, keep_best="map@r")
    assert first.stopped_early and len(first.mean) == 1
    resumed = train_folds(CONFIG, resume_from=saved["checkpoint"], keep_best="map@r")
    assert [values(h) for h in resumed.folds] == [values(h) for h in lockstep.folds]
    assert [epoch for epoch, _ in resumed.best] == [epoch for epoch, _ in lockstep.best]


def test_the_best_epoch_of_each_fold_is_kept(lockstep):
    for history, (epoch, state) in zip(lockstep.folds, lockstep.best):
        scores = [m["map@r"] for m in history]
        assert epoch == 1 + int(np.argmax(scores))  # argmax: the earliest of equal values
        assert all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in state.values())
    worst = train_folds(CONFIG.replace(epochs=1), keep_best="train_loss", mode=Mode.MIN)
    assert [epoch for epoch, _ in worst.best] == [1, 1, 1]


def test_separated_is_the_mean_and_concatenated_the_joined_embeddings(lockstep):
    states = [state for _, state in lockstep.best]
    scores = evaluate_fold_models(CONFIG, states)
    split = load_dataset("glyphs", samples_per_face=1)
    # By hand: build each fold model from its weights, embed the test classes, score each and the concatenation.
    from dml_core.models import make_model
    from dml_core.train import embed

    parts, per_fold = [], []
    for state in states:
        model = make_model("small_cnn", embedding_dim=16, in_channels=split.test.in_channels)
        model.load_state_dict(state)
        embeddings, labels = embed(model, split.test, batch_size=2048, device=torch.device("cpu"))
        per_fold.append(retrieval_metrics(embeddings, labels))
        parts.append(embeddings / embeddings.norm(dim=1, keepdim=True))
    joined = retrieval_metrics(torch.cat(parts, dim=1), labels)
    assert scores["concatenated"] == pytest.approx(joined, rel=1e-9)
    for key in joined:
        assert scores["separated"][key] == pytest.approx(np.mean([m[key] for m in per_fold]), rel=1e-12)
    # The concatenation is an ensemble: it differs from (and here beats) the mean single model.
    assert scores["concatenated"]["map@r"] != scores["separated"]["map@r"]


def test_fold_mean_sums_timings_and_averages_the_rest():
    mean = fold_mean([{"epoch": 2, "map@r": 0.2, "epoch_time_s": 1.0}, {"epoch": 2, "map@r": 0.4,
                                                                        "epoch_time_s": 3.0}])
    assert mean == {"epoch": 2, "map@r": pytest.approx(0.3), "epoch_time_s": 4.0}
    assert math.isnan(fold_mean([{"epoch": 1, "x": float("nan")}, {"epoch": 1, "x": 1.0}])["x"])


@pytest.mark.parametrize("changes, path", [({"fold": 1}, "fold"), ({"num_folds": 1}, "num_folds")])
def test_lockstep_refuses_a_fixed_fold_or_a_single_one(changes, path):
    with pytest.raises(ConfigError) as info:
        train_folds(CONFIG.replace(**changes))
    assert info.value.path == path
