"""The configuration of one training run: `TrainConfig`, with its data set and model parts.

The objects mirror the study YAML's sections one to one, so a key has one name everywhere: YAML `dataset.root` is
`TrainConfig.dataset.root`, `model.trunk` is `TrainConfig.model.trunk`, `train.lr` is `TrainConfig.lr`. Every
constructor validates its values and raises `ConfigError` whose `path` is the field's name within that object
(`root`, `lr`); the study's YAML reader prefixes the section. Nothing here imports torch, so a config can be
checked in a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dml_core.errors import ConfigError, enum_value

__all__ = ["DatasetConfig", "ModelConfig", "OptimizerName", "Precision", "Schedule", "TrainConfig"]


class OptimizerName(str, enum.Enum):
    ADAM = "adam"
    ADAMW = "adamw"
    SGD = "sgd"
    RMSPROP = "rmsprop"


class Schedule(str, enum.Enum):
    NONE = "none"
    COSINE = "cosine"  # per step, from lr down to 0 at the last step
    STEP = "step"  # x0.1 at 1/2 and 3/4 of the epochs, the classic image-retrieval schedule


class Precision(str, enum.Enum):
    AUTO = "auto"  # bf16 autocast on CUDA when supported, fp16 otherwise; fp32 on the CPU
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


# torch.device's device types (torch 2.x); checked here by name so that validating a config needs no torch.
_DEVICE = re.compile(r"^(cpu|cuda|ipu|xpu|mkldnn|opengl|opencl|ideep|hip|ve|fpga|maia|xla|lazy|vulkan|mps|meta|hpu"
                     r"|mtia|privateuseone)(:\d+)?$")


def _is_int(value: object) -> bool:
    """An int that is not a bool: YAML's `true` must not pass for 1."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy ints too


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive_int(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if not _is_int(value) or value < 1:
        raise ConfigError(name, f"must be a positive integer, got {name}={value!r}")


def _optional_str(value: object, name: str) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(name, f"must be a non-empty string or null, got {name}={value!r}")


def _mapping(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(name, f"must be a mapping with string keys, got {name}={value!r}")
    return dict(value)


@dataclass(frozen=True)
class DatasetConfig:
    """Which data set, where it is, and its options (`dml_core.data.load_dataset(name, root=root, **options)`)."""

    # The embedded glyph set is generated offline, so a fresh machine can train at once.
    name: str = "glyphs"
    # The data set's directory; None for glyphs, which needs none. Nothing is ever downloaded.
    root: str | None = None
    # Per-data-set options (image size, ...); the loader validates the names.
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", f"must be a data set name, got name={self.name!r}")
        _optional_str(self.root, "root")
        object.__setattr__(self, "options", _mapping(self.options, "options"))


@dataclass(frozen=True)
class ModelConfig:
    """The trunk and embedding head (`dml_core.models.make_model`)."""

    # A small CNN suits the 24-32 px glyphs on a CPU; any torchvision classification model by name otherwise.
    trunk: str = "small_cnn"
    # 64-d keeps k-NN cheap and is plenty for a few hundred classes; the reality check uses 128 (and 512).
    embedding_dim: int = 64
    # A local state-dict file; None trains from scratch. Nothing is ever downloaded.
    pretrained_weights: str | None = None
    # The reality check freezes BatchNorm of pretrained trunks; off for trunks trained from scratch.
    freeze_batchnorm: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.trunk, str) or not self.trunk:
            raise ConfigError("trunk", f"must be a trunk name, got trunk={self.trunk!r}")
        _positive_int(self, "embedding_dim")
        _optional_str(self.pretrained_weights, "pretrained_weights")
        if not isinstance(self.freeze_batchnorm, bool):
            raise ConfigError("freeze_batchnorm", f"must be true or false, got "
                                                  f"freeze_batchnorm={self.freeze_batchnorm!r}")


def _part(kind: type[Any], value: Any, name: str) -> Any:
    """A DatasetConfig or ModelConfig from itself or a mapping of its fields (convenient in notebooks)."""
    if isinstance(value, kind):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(name, f"must be a {kind.__name__} or a mapping of its fields, got {value!r}")
    fields = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(k for k in value if k not in fields)
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}", f"unknown key; expected one of: {', '.join(sorted(fields))}")
    try:
        return kind(**value)
    except ConfigError as error:
        raise error.within(name) from None


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; a trial of a study is this plus its sampled hyperparameters."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # Loss and miner: names from dml_core.losses.LOSSES / dml_core.miners.MINERS, hyperparameters by name.
    loss: str = "contrastive"
    loss_params: Mapping[str, Any] = field(default_factory=dict)
    miner: str = "none"
    miner_params: Mapping[str, Any] = field(default_factory=dict)
    # Batches: 32 with m=4 is the reality-check protocol; 64 gives pair losses more negatives per step on glyphs.
    batch_size: int = 64
    m_per_class: int = 4
    epochs: int = 4
    batches_per_epoch: int | None = None  # None: len(train split) // batch_size, i.e. one pass over the data
    # Optimisation. Adam at 1e-3 trains a trunk from scratch; pretrained trunks want far less (1e-5 .. 1e-4).
    optimizer: OptimizerName = OptimizerName.ADAM
    lr: float = 1e-3
    weight_decay: float = 0.0
    loss_lr: float | None = None  # proxies/class weights; None = lr. Proxy-Anchor trains proxies 100x faster.
    schedule: Schedule = Schedule.NONE
    momentum: float = 0.9  # SGD and RMSprop only
    # Evaluation: on the test classes, or on fold `fold` of `num_folds` class-disjoint folds of the train classes.
    fold: int | None = None
    num_folds: int = 4  # the reality check's 4-fold cross-validation
    ks: tuple[int, ...] = (1, 2, 4, 8)
    eval_batch_size: int = 512
    include_nmi: bool = False  # k-means per epoch is costly; off unless asked
    # Run. One seed fixes model init, batch order and miner sampling.
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when available, else CPU
    precision: Precision = Precision.AUTO
    num_workers: int = 0  # DataLoader workers for datasets read from disk; in-memory data needs none

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", _part(DatasetConfig, self.dataset, "dataset"))
        object.__setattr__(self, "model", _part(ModelConfig, self.model, "model"))
        object.__setattr__(self, "optimizer", enum_value(OptimizerName, self.optimizer, "optimizer"))
        object.__setattr__(self, "schedule", enum_value(Schedule, self.schedule, "schedule"))
        object.__setattr__(self, "precision", enum_value(Precision, self.precision, "precision"))
        for name in ("loss_params", "miner_params"):
            object.__setattr__(self, name, _mapping(getattr(self, name), name))
        ks = tuple(self.ks) if isinstance(self.ks, (tuple, list)) else (self.ks,)
        if not ks or not all(_is_int(k) and k >= 1 for k in ks) or len(set(ks)) != len(ks):
            raise ConfigError("ks", f"must be a non-empty list of distinct positive integers, got ks={self.ks!r}")
        object.__setattr__(self, "ks", ks)
        self._validate()

    def _validate(self) -> None:
        for name in ("loss", "miner"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(name, f"must be a name, got {name}={getattr(self, name)!r}")
        for name in ("batch_size", "m_per_class", "epochs", "eval_batch_size", "num_folds"):
            _positive_int(self, name)
        if self.batch_size % self.m_per_class:
            raise ConfigError("batch_size", f"must be a multiple of m_per_class, got batch_size={self.batch_size}, "
                                            f"m_per_class={self.m_per_class}")
        if self.batches_per_epoch is not None and (not _is_int(self.batches_per_epoch)
                                                   or self.batches_per_epoch < 1):
            raise ConfigError("batches_per_epoch", f"must be a positive integer or null, "
                                                   f"got batches_per_epoch={self.batches_per_epoch!r}")
        for name in ("lr", "loss_lr"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and value > 0 and math.isfinite(value)):
                raise ConfigError(name, f"must be a positive number, got {name}={value!r}")
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError("weight_decay", f"must be >= 0, got weight_decay={self.weight_decay!r}")
        if not (_is_number(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError("momentum", f"must be in [0, 1), got momentum={self.momentum!r}")
        if self.fold is not None and not (_is_int(self.fold) and 0 <= self.fold < self.num_folds):
            raise ConfigError("fold", f"must be null or in 0..num_folds-1, got fold={self.fold!r}, "
                                      f"num_folds={self.num_folds}")
        if not _is_int(self.seed):
            raise ConfigError("seed", f"must be an integer, got seed={self.seed!r}")
        if not _is_int(self.num_workers) or self.num_workers < 0:
            raise ConfigError("num_workers", f"must be >= 0, got num_workers={self.num_workers!r}")
        if not isinstance(self.include_nmi, bool):
            raise ConfigError("include_nmi", f"must be true or false, got include_nmi={self.include_nmi!r}")
        if not isinstance(self.device, str) or (self.device != "auto" and not _DEVICE.match(self.device)):
            raise ConfigError("device", f"must be 'auto' or a torch device string (cpu, cuda, cuda:1, mps, ...), "
                                        f"got device={self.device!r}")

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics every epoch reports (`dml_core.metrics.retrieval_metrics`), in table order."""
        names = (*(f"recall@{k}" for k in self.ks), "precision@1", "r_precision", "map@r")
        return (*names, "nmi") if self.include_nmi else names

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (enums as strings, `dataset` and `model` as nested dicts), e.g. for YAML."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
