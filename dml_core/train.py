"""Train one embedding model and evaluate it after every epoch.

Reads top to bottom: config -> device -> data -> model -> loss and miner -> optimizer -> schedule -> loop ->
evaluate -> checkpoint. No Ray here: the study wraps `train` in a Ray Tune trainable of a few lines, and a
notebook can call it directly:

    from dml_core.config import TrainConfig
    from dml_core.train import train
    summary = train(TrainConfig(loss="multi_similarity", miner="multi_similarity", epochs=3))
    summary.last_metrics["recall@1"]

A checkpoint is one plain dict (model, loss, optimizer, scheduler, sampler and miner generator states, epoch);
`train(config, resume_from=checkpoint)` continues exactly where it stopped: on the CPU, 4 epochs in one go equal
2 epochs, a checkpoint, and 2 more.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dml_core.config import OptimizerName, Precision, Schedule, TrainConfig
from dml_core.data import BatchSource, DMLDataset, load_dataset, serve_batches
from dml_core.losses import make_loss
from dml_core.metrics import retrieval_metrics
from dml_core.miners import Miner, make_miner
from dml_core.mode import Mode
from dml_core.models import make_model
from dml_core.samplers import MPerClassSampler

__all__ = ["CHECKPOINT_VERSION", "NonFiniteLossError", "TrainSummary", "TrainingRun", "device_of", "embed", "train"]

# Bumped whenever the checkpoint dict changes shape, so an old checkpoint fails loudly instead of half-loading.
CHECKPOINT_VERSION = 2


class NonFiniteLossError(FloatingPointError):
    """Training diverged: the loss or the embeddings became NaN or Inf. Carries where, so a study can record it
    as the trial's error. (Non-finite embeddings count: a loss that averages over positive terms only can turn
    NaN embeddings into a harmless-looking 0.)"""

    def __init__(self, epoch: int, step: int, value: float, what: str = "loss") -> None:
        super().__init__(f"non-finite {what} {value} at epoch {epoch}, step {step}")
        self.epoch, self.step, self.value, self.what = epoch, step, value, what

    def __reduce__(self) -> tuple[type[NonFiniteLossError], tuple[int, int, float, str]]:
        # Ray ships a trial's exception between processes by pickle; the default would call __init__(message).
        return NonFiniteLossError, (self.epoch, self.step, self.value, self.what)


@dataclass(frozen=True)
class TrainSummary:
    """What a run produced: the metrics after every epoch, in order."""

    history: tuple[dict[str, float], ...]
    stopped_early: bool
    wall_time_s: float

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def last_metrics(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}

    def best(self, metric: str = "recall@1", *, mode: Mode = Mode.MAX) -> dict[str, float]:
        """The epoch's metrics where `metric` was best in direction `mode` (ties: the earliest epoch)."""
        if not self.history:
            return {}
        sign = Mode(mode).sign
        return max(self.history, key=lambda m: (sign * m.get(metric, -sign * math.inf), -m["epoch"]))


OnEpoch = Callable[[int, dict[str, float], dict[str, Any]], bool | None]


# ---------------------------------------------------------------------------------------------------------------
# Set-up: each step small and in reading order.


def _autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """None = plain fp32. Autocast only pays off on CUDA; on the CPU it is opt-in (bf16) for testing."""
    if precision is Precision.FP32:
        return None
    if precision is Precision.AUTO:
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision is Precision.BF16 else torch.float16


def _splits(config: TrainConfig) -> tuple[DMLDataset, DMLDataset]:
    """(train, eval): the test classes, or one class-disjoint fold of the training classes."""
    split = load_dataset(config.dataset.name, root=config.dataset.root, **config.dataset.options)
    if config.fold is None:
        return split.train, split.test
    return split.folds(config.num_folds)[config.fold]


def _make_miner(config: TrainConfig, generator: torch.Generator) -> Miner:
    # Sampling miners draw from the run's own generator, so a resumed run draws the same.
    return make_miner(config.miner, generator=generator, **config.miner_params)


def _optimizer(config: TrainConfig, model: nn.Module, loss: nn.Module) -> torch.optim.Optimizer:
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr}]
    loss_params = [p for p in loss.parameters() if p.requires_grad]
    if loss_params:
        groups.append({"params": loss_params, "lr": config.loss_lr or config.lr})
    wd = config.weight_decay
    if config.optimizer is OptimizerName.ADAM:
        return torch.optim.Adam(groups, weight_decay=wd)
    if config.optimizer is OptimizerName.ADAMW:
        return torch.optim.AdamW(groups, weight_decay=wd)
    if config.optimizer is OptimizerName.SGD:
        return torch.optim.SGD(groups, momentum=config.momentum, weight_decay=wd)
    return torch.optim.RMSprop(groups, momentum=config.momentum, weight_decay=wd)


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer,
               steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Stepped once per optimizer step, so a resumed run continues the same curve."""
    total = config.epochs * steps_per_epoch
    if config.schedule is Schedule.COSINE:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if config.schedule is Schedule.STEP:
        milestones = sorted({max(1, total // 2), max(1, 3 * total // 4)})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return None


def _augmentation_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's random augmentations: a function of (seed, epoch) alone, so a run resumed at an
    epoch boundary draws the same crops and flips as an uninterrupted one."""
    return (seed * 1_000_003 + epoch) % (2**63 - 1)


def _batches(dataset: DMLDataset, sampler: MPerClassSampler, config: TrainConfig, device: torch.device,
             epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches: a batch source (in memory, or the decoded disk cache) serves whole batches, augmented on
    the device from the epoch's generator; other disk data comes through a DataLoader."""
    seed = _augmentation_seed(config.seed, epoch)
    if isinstance(dataset, BatchSource):
        yield from serve_batches(dataset, sampler, device, torch.Generator().manual_seed(seed))
        return
    # torchvision's random transforms draw from torch's global RNG: in the main process (num_workers=0) we fork
    # and seed it for the epoch; workers are seeded from the loader's generator (base seed + worker id).
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=config.num_workers,
                                         pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for images, labels in loader:
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


@torch.no_grad()
def embed(model: nn.Module, dataset: DMLDataset, *, batch_size: int, device: torch.device,
          autocast_dtype: torch.dtype | None = None, num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings (N, D) float32 and labels (N,) of a whole dataset, in dataset order."""
    model.eval()
    chunks: list[torch.Tensor] = []
    if isinstance(dataset, BatchSource):
        order = torch.arange(len(dataset))
        batches: Any = serve_batches(dataset, (order[i:i + batch_size] for i in range(0, len(dataset), batch_size)),
                                     device)
    else:
        batches = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                              num_workers=num_workers, pin_memory=device.type == "cuda")
    for images, _ in batches:
        images = images.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with _autocast(device, autocast_dtype):
            chunks.append(model(images).float())  # (b, D)
    embeddings = torch.cat(chunks) if chunks else torch.empty(0, 0, device=device)
    return embeddings, dataset.labels


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _rng_state(*generators: torch.Generator) -> list[torch.Tensor]:
    return [g.get_state() for g in generators]


# ---------------------------------------------------------------------------------------------------------------
# One model's training, a step at a time: `train` runs one, dml_core.folds runs one per fold in lockstep.


class TrainingRun:
    """The state of training one model on `train_set`: model, loss, miner, optimizer, schedule and generators,
    built in the order `train` reads. `step_epoch` trains one epoch; `evaluate` embeds a data set and scores it.

    Everything random draws from the config's seed alone (model init from a forked global RNG, batches and miner
    draws from generators of their own), so two runs of one config and data are identical, whatever else the
    process does, and `checkpoint`/`restore` continue one exactly.
    """

    def __init__(self, config: TrainConfig, train_set: DMLDataset, device: torch.device) -> None:
        self.config = config
        self.train_set = train_set
        self.device = device
        self.amp_dtype = _autocast_dtype(config.precision, device)
        # Model init draws from torch's global RNG (torchvision trunks give no other way): fork it so that a run
        # is reproducible from its seed and leaves the caller's RNG untouched.
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(config.seed)
            self.model = make_model(config.model.trunk, embedding_dim=config.model.embedding_dim,
                                    pretrained_weights=config.model.pretrained_weights,
                                    freeze_batchnorm=config.model.freeze_batchnorm,
                                    in_channels=train_set.in_channels)
            self.loss_fn = make_loss(config.loss, num_classes=train_set.num_classes,
                                     embedding_dim=config.model.embedding_dim, **config.loss_params)
        self.model.to(device)
        self.loss_fn.to(device)
        if device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        # Separate generators: batch order and miner sampling stay reproducible whatever the other consumes.
        self.sampler_gen = torch.Generator().manual_seed(config.seed)
        self.miner_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.miner = _make_miner(config, self.miner_gen)
        self.sampler = MPerClassSampler(train_set.labels, config.m_per_class, config.batch_size, self.sampler_gen,
                                        batches_per_epoch=config.batches_per_epoch)
        self.optimizer = _optimizer(config, self.model, self.loss_fn)
        self.scheduler = _scheduler(config, self.optimizer, len(self.sampler))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype is torch.float16)

    def step_epoch(self, epoch: int) -> float:
        """Train epoch `epoch` (1-based); returns the mean training loss."""
        return _train_epoch(epoch, self.model, self.loss_fn, self.miner, self.optimizer, self.scheduler,
                            self.scaler, _batches(self.train_set, self.sampler, self.config, self.device, epoch),
                            self.device, self.amp_dtype)

    def embed(self, dataset: DMLDataset) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) float32 embeddings and (N,) labels of `dataset` (evaluation transform, eval mode)."""
        return embed(self.model, dataset, batch_size=self.config.eval_batch_size, device=self.device,
                     autocast_dtype=self.amp_dtype, num_workers=self.config.num_workers)

    def evaluate(self, dataset: DMLDataset) -> dict[str, float]:
        embeddings, labels = self.embed(dataset)
        return retrieval_metrics(embeddings, labels, ks=self.config.ks, include_nmi=self.config.include_nmi)

    def epoch(self, epoch: int, eval_set: DMLDataset) -> dict[str, float]:
        """Train one epoch, then evaluate on `eval_set`: the epoch's metrics, loss and timings."""
        started = time.perf_counter()
        train_loss = self.step_epoch(epoch)
        train_time = time.perf_counter() - started
        eval_started = time.perf_counter()
        metrics: dict[str, float] = {"epoch": epoch, **self.evaluate(eval_set)}
        metrics["train_loss"] = train_loss
        metrics["train_time_s"] = train_time
        metrics["eval_time_s"] = time.perf_counter() - eval_started
        metrics["epoch_time_s"] = time.perf_counter() - started
        return metrics

    def checkpoint(self, epoch: int, history: list[dict[str, float]]) -> dict[str, Any]:
        """One plain dict that `restore` accepts; it holds live tensors (not copies): save it at once."""
        return {
            "version": CHECKPOINT_VERSION,
            "epoch": epoch,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "generators": _rng_state(self.sampler_gen, self.miner_gen),
            "history": [dict(m) for m in history],
        }

    def restore(self, checkpoint: Mapping[str, Any]) -> tuple[int, list[dict[str, float]]]:
        """Load a checkpoint; returns (its epoch, the metrics history up to it)."""
        version = checkpoint.get("version")
        if version != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {version!r} is not supported (expected {CHECKPOINT_VERSION})")
        self.model.load_state_dict(checkpoint["model"])
        self.loss_fn.load_state_dict(checkpoint["loss"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint["scheduler"] is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        for gen, state in zip((self.sampler_gen, self.miner_gen), checkpoint["generators"]):
            gen.set_state(state.cpu() if isinstance(state, torch.Tensor) else state)
        return int(checkpoint["epoch"]), [dict(m) for m in checkpoint["history"]]


def device_of(config: TrainConfig) -> torch.device:
    """The torch device a config asks for ("auto": CUDA when available, else the CPU)."""
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


# ---------------------------------------------------------------------------------------------------------------
# The run.


def train(config: TrainConfig, *, on_epoch: OnEpoch | None = None,
          resume_from: Mapping[str, Any] | None = None) -> TrainSummary:
    """Train `config.epochs` epochs (or continue a checkpoint); evaluate after each.

    `on_epoch(epoch, metrics, checkpoint)` runs after every epoch's evaluation (epochs count from 1); returning True
    stops training. The checkpoint dict holds live state (tensors are not copied): save it inside the callback.
    """
    started = time.perf_counter()
    device = device_of(config)
    train_set, eval_set = _splits(config)
    run = TrainingRun(config, train_set, device)
    start_epoch, history = run.restore(resume_from) if resume_from is not None else (0, [])

    stopped = False
    for epoch in range(start_epoch + 1, config.epochs + 1):
        metrics = run.epoch(epoch, eval_set)
        history.append(metrics)
        if on_epoch is not None and on_epoch(epoch, dict(metrics), run.checkpoint(epoch, history)):
            stopped = epoch < config.epochs
            break
    return TrainSummary(history=tuple(history), stopped_early=stopped, wall_time_s=time.perf_counter() - started)


def _train_epoch(epoch: int, model: nn.Module, loss_fn: nn.Module, miner: Miner,
                 optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler | None,
                 scaler: torch.amp.GradScaler, batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
                 device: torch.device, amp_dtype: torch.dtype | None) -> float:
    """One pass over the sampler's batches; returns the mean loss."""
    model.train()
    loss_fn.train()
    # On a GPU, reading the loss every step makes the host wait for the device every step, and the next batch's
    # launches then start only after it: the losses are read every `_CHECK_EVERY` steps instead (a divergence is
    # still reported with its step; the few steps after it only touch a model that is being discarded). On the
    # CPU there is nothing to overlap: every step is checked before its update, as always.
    check_every = _CHECK_EVERY if device.type == "cuda" else 1
    checks = _StepChecks(epoch)
    for step, (images, labels) in enumerate(batches, start=1):
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp_dtype):
            embeddings = model(images)  # (B, D)
        embeddings = embeddings.float()  # losses run in fp32: margins and exponentials are fragile in half
        mined = miner(embeddings.detach(), labels)  # None from the "none" miner
        loss = loss_fn(embeddings, labels, mined)
        checks.add(step, loss.detach(), torch.isfinite(embeddings.detach()).all())
        if step % check_every == 0:
            checks.settle()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
    checks.settle()
    return checks.total / max(checks.steps, 1)


_CHECK_EVERY = 16  # GPU steps between reads of the loss: one host-device sync per 16 steps instead of per step


class _StepChecks:
    """The steps' losses and embedding checks, kept on the device until `settle` reads them all in one sync;
    raises NonFiniteLossError for the first bad step. The sum is taken in step order in Python floats, so the
    epoch's mean loss is the same whenever the steps are read."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.total, self.steps = 0.0, 0
        self._pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def add(self, step: int, loss: torch.Tensor, embeddings_finite: torch.Tensor) -> None:
        self._pending.append((step, loss, embeddings_finite))

    def settle(self) -> None:
        if not self._pending:
            return
        values = torch.stack([loss.float() for _, loss, _ in self._pending]).tolist()
        finite = torch.stack([ok for _, _, ok in self._pending]).tolist()
        for (step, _, _), value, ok in zip(self._pending, values, finite):
            if not math.isfinite(value):
                raise NonFiniteLossError(self.epoch, step, value)
            if not ok:
                raise NonFiniteLossError(self.epoch, step, float("nan"), what="embeddings")
            self.total += value
            self.steps += 1
        self._pending.clear()
