"""The training loop: determinism, exact resume, early stop, divergence, folds, disk datasets, and that it learns."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from dml_core.config import DatasetConfig, ModelConfig, TrainConfig
from dml_core.data import load_dataset
from dml_core.errors import ConfigError
from dml_core.mode import Mode
from dml_core.train import NonFiniteLossError, _StepChecks, train

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

GLYPHS = {"samples_per_face": 1}  # 5k train / 5k test images: seconds per epoch
FAST = dict(dataset=DatasetConfig(options=GLYPHS), model=ModelConfig(embedding_dim=16), batch_size=32,
            m_per_class=4, batches_per_epoch=4, eval_batch_size=2048)


def metrics_only(history):
    timing = ("train_time_s", "eval_time_s", "epoch_time_s")
    return [{k: v for k, v in m.items() if k not in timing} for m in history]


def test_same_seed_same_metrics_and_other_seed_differs():
    config = TrainConfig(loss="multi_similarity", miner="multi_similarity", epochs=2, **FAST)
    a, b = train(config), train(config)
    assert metrics_only(a.history) == metrics_only(b.history)
    c = train(config.replace(seed=1))
    assert metrics_only(c.history) != metrics_only(a.history)


@pytest.mark.parametrize("loss, miner, schedule", [
    ("contrastive", "distance_weighted", "cosine"),  # the miner samples from the run's generator
    ("proxy_anchor", "none", "step"),  # proxies, their own learning rate, a step schedule
])
def test_resume_equals_an_uninterrupted_run(loss, miner, schedule):
    config = TrainConfig(loss=loss, miner=miner, schedule=schedule, epochs=4, loss_lr=0.01, **FAST)
    straight = train(config)

    saved = {}

    def keep_epoch_two(epoch, metrics, checkpoint):
        if epoch == 2:
            saved["checkpoint"] = pickle.loads(pickle.dumps(checkpoint))  # a deep copy, as a file save would be
            return True
        return False

    first = train(config, on_epoch=keep_epoch_two)
    assert first.epochs_run == 2 and first.stopped_early
    resumed = train(config, resume_from=saved["checkpoint"])
    assert resumed.epochs_run == 4
    assert metrics_only(resumed.history) == metrics_only(straight.history)


def test_checkpoint_survives_torch_save_with_weights_only(tmp_path):
    config = TrainConfig(loss="soft_triple", epochs=1, **FAST)

    def save(epoch, metrics, checkpoint):
        torch.save(checkpoint, tmp_path / "c.pt")

    train(config, on_epoch=save)
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["epoch"] == 1 and state["config"]["loss"] == "soft_triple"
    resumed = train(config.replace(epochs=2), resume_from=state)
    assert [m["epoch"] for m in resumed.history] == [1, 2]


def test_training_learns_on_glyphs():
    """The embedded data set is a real benchmark: a few hundred steps lift R@1 far above the untrained trunk."""
    config = TrainConfig(loss="contrastive", epochs=2, batches_per_epoch=60,
                         dataset={"options": {"samples_per_face": 1}}, eval_batch_size=2048)
    untrained = train(config.replace(lr=1e-12, epochs=1, batches_per_epoch=1)).last_metrics["recall@1"]
    trained = train(config).last_metrics["recall@1"]
    assert trained > untrained + 0.15, (untrained, trained)


def test_divergence_raises_non_finite_loss_error_that_pickles():
    config = TrainConfig(loss="contrastive", optimizer="sgd", lr=1e30, epochs=1, **FAST)
    with pytest.raises(NonFiniteLossError) as info:
        train(config)
    error = info.value
    again = pickle.loads(pickle.dumps(error))  # Ray ships a trial's exception to the driver by pickle
    assert str(again) == str(error) and again.epoch == 1 and again.step >= 1


def test_step_checks_read_late_still_name_the_first_bad_step_and_sum_in_order():
    """On a GPU the losses are read every few steps in one sync: the first bad step is still the one reported,
    and the epoch's sum is the one per-step reads give."""
    checks = _StepChecks(epoch=3)
    values = [0.1, 0.2, 1e-8, 7.0]
    for step, value in enumerate(values, start=1):
        checks.add(step, torch.tensor(value), torch.tensor(True))
    checks.settle()
    expected = 0.0
    for value in values:
        expected += torch.tensor(value).item()
    assert checks.total == expected and checks.steps == 4
    checks.add(5, torch.tensor(1.0), torch.tensor(True))
    checks.add(6, torch.tensor(2.0), torch.tensor(False))  # embeddings went non-finite, the loss did not
    checks.add(7, torch.tensor(float("nan")), torch.tensor(True))
    with pytest.raises(NonFiniteLossError) as info:
        checks.settle()
    assert (info.value.epoch, info.value.step, info.value.what) == (3, 6, "embeddings")


def test_fold_evaluates_on_held_out_training_classes():
    split = load_dataset("glyphs", **GLYPHS)
    folds = split.folds(4)
    train_part, val_part = folds[1]
    assert train_part.num_classes + val_part.num_classes == split.train.num_classes
    config = TrainConfig(loss="normalized_softmax", epochs=1, fold=1, num_folds=4, **FAST)
    shapes = {}

    def proxies(epoch, metrics, checkpoint):
        shapes["proxies"] = tuple(checkpoint["loss"]["proxies"].shape)

    summary = train(config, on_epoch=proxies)
    assert 0.0 <= summary.last_metrics["recall@1"] <= 1.0
    assert shapes["proxies"] == (train_part.num_classes, 16)  # the fold's training classes, not all of them


def test_proxies_are_sized_from_the_training_classes():
    split = load_dataset("glyphs", **GLYPHS)
    config = TrainConfig(loss="normalized_softmax", epochs=1, **FAST)
    shapes = {}

    def proxies(epoch, metrics, checkpoint):
        shapes["proxies"] = tuple(checkpoint["loss"]["proxies"].shape)

    train(config, on_epoch=proxies)
    assert shapes["proxies"] == (split.train.num_classes, 16)


def _image_folder(root):
    rng = np.random.default_rng(0)
    for c in range(8):
        folder = root / f"class{c:02d}"
        folder.mkdir()
        for i in range(6):
            pixels = (rng.random((20, 20, 3)) * 40 + c * 25).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.jpg")
    return str(root)


def _disk_config(root, decoded_cache=False, **changes):
    options = {"image_size": 32, "decoded_cache": decoded_cache, "cache_dir": str(root) + "-cache"}
    fields = dict(dataset=DatasetConfig("imagefolder", root, options),
                  model=ModelConfig("resnet18", embedding_dim=8), batch_size=8, m_per_class=2, epochs=1,
                  batches_per_epoch=2, loss="contrastive")
    return TrainConfig(**{**fields, **changes})


@pytest.mark.parametrize("decoded_cache", [True, False], ids=["decoded-cache", "jpeg"])
def test_disk_dataset_trains(tmp_path, decoded_cache):
    summary = train(_disk_config(_image_folder(tmp_path), decoded_cache))
    assert summary.epochs_run == 1 and 0.0 <= summary.last_metrics["recall@1"] <= 1.0


@pytest.mark.parametrize("decoded_cache, num_workers", [(True, 0), (False, 0), (False, 1)],
                         ids=["decoded-cache", "jpeg", "jpeg-loader-worker"])
def test_disk_dataset_random_augmentation_is_seeded_and_resumes_exactly(tmp_path, decoded_cache, num_workers):
    """Random crops and flips draw from the run's seed: on the device from the decoded cache, in the main process
    or in loader workers from JPEGs. The same seed gives the same metrics, whatever the caller did to torch's
    global RNG, and 1 + 1 epochs equal 2."""
    config = _disk_config(_image_folder(tmp_path), decoded_cache, epochs=2, num_workers=num_workers)
    torch.manual_seed(123)
    straight = train(config)
    torch.manual_seed(456)
    again = train(config)
    assert metrics_only(again.history) == metrics_only(straight.history)
    saved = {}

    def keep_epoch_one(epoch, metrics, checkpoint):
        saved["checkpoint"] = pickle.loads(pickle.dumps(checkpoint))
        return True

    train(config, on_epoch=keep_epoch_one)
    torch.manual_seed(789)
    resumed = train(config, resume_from=saved["checkpoint"])
    assert metrics_only(resumed.history) == metrics_only(straight.history)
    # And the seed matters: another one gives other metrics.
    other = train(config.replace(seed=1))
    assert metrics_only(other.history) != metrics_only(straight.history)


@pytest.mark.parametrize("optimizer, state_key, momentum", [
    ("adam", "exp_avg", False), ("adamw", "exp_avg", False),  # AdamW differs from Adam in its decoupled decay
    ("sgd", "momentum_buffer", True), ("rmsprop", "square_avg", True),
])
def test_each_optimizer_trains_with_the_loss_learning_rate_on_the_proxies(optimizer, state_key, momentum):
    config = TrainConfig(loss="proxy_anchor", optimizer=optimizer, lr=1e-3, loss_lr=0.05, weight_decay=1e-4,
                         epochs=1, **FAST)
    seen = {}

    def grab(epoch, metrics, checkpoint):
        seen["optimizer"] = checkpoint["optimizer"]

    summary = train(config, on_epoch=grab)
    assert np.isfinite(summary.last_metrics["train_loss"])
    trunk_group, proxy_group = seen["optimizer"]["param_groups"]
    assert trunk_group["lr"] == 1e-3 and proxy_group["lr"] == 0.05
    assert trunk_group["weight_decay"] == proxy_group["weight_decay"] == 1e-4
    assert len(proxy_group["params"]) == 1  # exactly the loss's one parameter, the proxies
    # The optimizer named is the one that stepped: its own per-parameter state, for the proxies too.
    proxy_state = seen["optimizer"]["state"][proxy_group["params"][0]]
    assert state_key in proxy_state
    assert ("decoupled_weight_decay" in trunk_group) == (optimizer in ("adam", "adamw"))
    if optimizer in ("adam", "adamw"):
        assert trunk_group["decoupled_weight_decay"] == (optimizer == "adamw")
    if momentum:
        assert trunk_group["momentum"] == config.momentum


@pytest.mark.parametrize("changes, field", [
    ({"batch_size": 30}, "batch_size"),
    ({"epochs": 0}, "epochs"),
    ({"lr": 0.0}, "lr"),
    ({"optimizer": "lion"}, "optimizer"),
    ({"schedule": "linear"}, "schedule"),
    ({"fold": 4, "num_folds": 4}, "fold"),
    ({"weight_decay": -1.0}, "weight_decay"),
    ({"device": "tpu:0"}, "device"),
    ({"batches_per_epoch": 0}, "batches_per_epoch"),
    ({"ks": (1, 1.5)}, "ks"),
    ({"ks": ()}, "ks"),
    ({"fold": True}, "fold"),
    ({"momentum": "high"}, "momentum"),
    ({"num_workers": "2"}, "num_workers"),
    ({"seed": 1.5}, "seed"),
    ({"ks": (1, 1)}, "ks"),
    ({"dataset": {"root": 3}}, "dataset.root"),
    ({"dataset": {"rot": "/x"}}, "dataset.rot"),
    ({"model": {"embedding_dim": 0}}, "model.embedding_dim"),
    ({"model": ModelConfig(), "dataset": "glyphs"}, "dataset"),
])
def test_config_rejects_bad_values_naming_the_field(changes, field):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**changes)
    assert info.value.path == field and str(info.value).startswith(f"{field}: ")


def test_summary_best_takes_a_mode():
    history = ({"epoch": 1, "recall@1": 0.2, "train_loss": 3.0}, {"epoch": 2, "recall@1": 0.5, "train_loss": 1.0},
               {"epoch": 3, "recall@1": 0.5, "train_loss": 2.0})
    from dml_core.train import TrainSummary

    summary = TrainSummary(history=history, stopped_early=False, wall_time_s=1.0)
    assert summary.best()["epoch"] == 2  # ties: the earliest epoch
    assert summary.best("train_loss", mode=Mode.MIN)["epoch"] == 2
    assert summary.best("train_loss", mode=Mode.MAX)["epoch"] == 1
    assert summary.best("recall@1", mode=Mode.MIN)["epoch"] == 1


def test_config_needs_no_torch():
    """Checking a config must be quick: dml_core.config imports no torch (a fresh interpreter proves it)."""
    import subprocess
    import sys

    code = ("import sys; from dml_core.config import TrainConfig; TrainConfig(lr=0.1, device='cuda:1'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_bad_loss_or_miner_names_fail_before_training():
    with pytest.raises(ValueError, match="unknown loss"):
        train(TrainConfig(loss="hinge", epochs=1, **FAST))
    with pytest.raises(ValueError, match="miner"):
        train(TrainConfig(loss="triplet", miner="hardest", epochs=1, **FAST))
