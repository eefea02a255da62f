"""The study configuration: one YAML file, parsed and validated in one place, before Ray starts.

Every error names its key path (`train.batch_size: ...`) in one line. The sections map onto typed objects:
`dataset`, `model` and `train` become the base `dml_core.config.TrainConfig` of every trial (its `dataset`,
`model` and own fields, key for field); `search` becomes a `search_spaces` study space plus the search
algorithm; the rest configures Ray Tune, MLflow and the result sink. A section's key is its object's field.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dml_core.config import DatasetConfig, ModelConfig, TrainConfig
from dml_core.errors import ConfigError, enum_value
from dml_core.mode import Mode
from search_spaces.config import SPACE_KEYS
from search_spaces.space import TRAIN_FIELDS

__all__ = [
    "Algorithm",
    "FailureSection",
    "ProtocolKind",
    "ProtocolSection",
    "RaySection",
    "ResourcesSection",
    "ResultsSection",
    "SchedulerKind",
    "SchedulerSection",
    "SearchSection",
    "StudyConfig",
    "TrackingSection",
    "ConfigError",
    "load_config",
    "parse_config",
    "read_yaml",
]


class Algorithm(str, enum.Enum):
    OPTUNA = "optuna"  # seeded TPE over the conditional space
    RANDOM = "random"
    GRID = "grid"


class SchedulerKind(str, enum.Enum):
    ASHA = "asha"
    FIFO = "fifo"


class ProtocolKind(str, enum.Enum):
    SEARCH = "search"  # one trial is one configuration trained once; the searcher spends num_samples as it likes
    # Musgrave et al.'s protocol: every loss gets trials_per_loss trials, each a configuration cross-validated on
    # `folds` class-disjoint folds in lockstep; then each loss's best configuration is rerun final_runs times
    # with new seeds and scored on the test classes.
    REALITY_CHECK = "reality_check"


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class SearchSection:
    algorithm: Algorithm = Algorithm.OPTUNA  # TPE learns across losses; random/grid for baselines and sweeps
    num_samples: int = 28  # optuna/random: trials in all; grid: repeats of every grid point (as in Ray Tune)
    metric: str = "recall@1"  # the metric most DML papers lead with; map@r is the reality check's choice
    mode: Mode = Mode.MAX
    seed: int = 0  # seeds the sampler so that a study is reproducible
    # Finished trials each Optuna study learns from (study.searcher.HISTORY: why 200): the driver's cost per trial
    # stops growing once every study holds its bound; up to 1.25 x this many trials per study nothing differs from
    # TPE over the full history.
    history: int = 200
    space: Mapping[str, Any] = field(default_factory=dict)  # the keys search_spaces reads, as written


@dataclass(frozen=True)
class ProtocolSection:
    kind: ProtocolKind = ProtocolKind.SEARCH  # today's search unless a study asks for the reality check
    folds: int = 4  # the reality check's 4 class-disjoint partitions of the training classes
    trials_per_loss: int = 50  # the reality check's 50 search iterations per loss
    final_runs: int = 10  # the reality check's 10 seeded reruns of each loss's best configuration

    @property
    def reality_check(self) -> bool:
        return self.kind is ProtocolKind.REALITY_CHECK


@dataclass(frozen=True)
class SchedulerSection:
    kind: SchedulerKind = SchedulerKind.ASHA
    # Epochs every trial gets before it can be stopped. 2, not 1: the proxy and classification losses start
    # slowly from scratch, and one epoch prunes them for starting slowly (measured in docs/benchmarks.md).
    grace_period: int = 2
    reduction_factor: int = 2  # keep the top 1/2 at each rung: aggressive enough for 14 losses on 2 cores


@dataclass(frozen=True)
class ResourcesSection:
    cpus_per_trial: float = 1.0  # a small CNN trial saturates one core
    gpus_per_trial: float = 0.0  # fractional (0.5 = two trials share a GPU)
    max_concurrent_trials: int | None = None  # None: as many as the resources allow


@dataclass(frozen=True)
class TrackingSection:
    uri: str | None = None  # None: sqlite:///STUDY_DIR/mlflow.db; an http(s) URI for an MLflow server
    experiment: str | None = None  # MLflow experiment name; None: the study name
    enabled: bool = True
    # How long the end of a run waits for MLflow to receive everything; what is left is sent by the next resume.
    drain_timeout_s: float = 60.0


@dataclass(frozen=True)
class RaySection:
    address: str | None = None  # None: a local cluster; "auto" or "ray://host:10001" joins one
    num_cpus: int | None = None  # local cluster only; None: all cores
    num_gpus: int | None = None  # local cluster only; None: the GPUs Ray detects (CUDA_VISIBLE_DEVICES)


@dataclass(frozen=True)
class FailureSection:
    max_failures: int = 0  # retries of a crashed trial; a non-finite loss is deterministic, so 0 by default


@dataclass(frozen=True)
class ResultsSection:
    flush_interval_s: float = 10.0  # how stale the Parquet/MLflow view of a running study may be
    flush_rows: int = 5000  # bounds driver memory between flushes


@dataclass(frozen=True)
class StudyConfig:
    name: str
    storage: str
    train: TrainConfig
    search: SearchSection
    scheduler: SchedulerSection
    resources: ResourcesSection
    tracking: TrackingSection
    ray: RaySection
    failure: FailureSection
    results: ResultsSection
    protocol: ProtocolSection = field(default_factory=ProtocolSection)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)  # the YAML as given, for the record

    @property
    def study_dir(self) -> str:
        return _join(self.storage, self.name)


def _join(storage: str, name: str) -> str:
    return storage.rstrip("/") + "/" + name if "://" in storage else str(Path(storage) / name)


# ---------------------------------------------------------------------------------------------------------------
# Parsing helpers: each raises ConfigError with the key path.


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a mapping, got {type(value).__name__} {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(path, f"keys must be strings, got {key!r}")
    return value


def _check_keys(section: Mapping[str, Any], allowed: tuple[str, ...] | list[str], path: str) -> None:
    for key in section:
        if key not in allowed:
            raise ConfigError(f"{path}.{key}" if path else key,
                              f"unknown key; expected one of: {', '.join(allowed)}")


def _int(value: Any, path: str, *, minimum: int | None = None, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(path, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _float(value: Any, path: str, *, minimum: float | None = None, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(path, f"expected a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(path, f"expected a number >= {minimum}, got {value!r}")
    return float(value)


def _str(value: Any, path: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"expected a non-empty string, got {value!r}")
    return value


def _required_str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"expected a non-empty string, got {value!r}")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"expected true or false, got {value!r}")
    return value


def _section(kind: type[Any], raw: Mapping[str, Any], path: str, parse: Mapping[str, Any]) -> Any:
    """Build a frozen section from `raw`, with one parser per key (name -> callable(value, key_path))."""
    _check_keys(raw, list(parse), path)
    values = {key: parse[key](raw[key], f"{path}.{key}") for key in raw}
    return kind(**values)


# ---------------------------------------------------------------------------------------------------------------
# Sections.


def _part(kind: type[Any], raw: Any, path: str) -> Any:
    """A frozen config object from a YAML section of the same field names; its errors at `path.<field>`."""
    section = _mapping(raw, path)
    _check_keys(section, [f.name for f in dataclasses.fields(kind)], path)
    try:
        return kind(**section)
    except ConfigError as error:
        raise error.within(path) from None


def _train_config(raw: Mapping[str, Any]) -> TrainConfig:
    """The sections `dataset`, `model` and `train`: each is the config object of the same name, key for field."""
    dataset = _part(DatasetConfig, raw.get("dataset"), "dataset")
    model = _part(ModelConfig, raw.get("model"), "model")
    train = _mapping(raw.get("train"), "train")
    _check_keys(train, TRAIN_FIELDS, "train")
    try:
        return TrainConfig(dataset=dataset, model=model, **train)
    except ConfigError as error:
        raise error.within("train") from None


def _search(raw: Any) -> SearchSection:
    section = _mapping(raw, "search")
    own = {"algorithm": lambda v, p: enum_value(Algorithm, v, p),
           "num_samples": lambda v, p: _int(v, p, minimum=1),
           "metric": _str,
           "mode": lambda v, p: enum_value(Mode, v, p),
           "seed": lambda v, p: _int(v, p, minimum=0),
           "history": lambda v, p: _int(v, p, minimum=2)}
    _check_keys(section, list(own) + list(SPACE_KEYS), "search")
    values = {k: own[k](section[k], f"search.{k}") for k in section if k in own}
    values["space"] = {k: copy.deepcopy(section[k]) for k in section if k in SPACE_KEYS}
    return SearchSection(**values)


def _scheduler(raw: Any) -> SchedulerSection:
    parsed = _section(SchedulerSection, _mapping(raw, "scheduler"), "scheduler", {
        "kind": lambda v, p: enum_value(SchedulerKind, v, p),
        "grace_period": lambda v, p: _int(v, p, minimum=1),
        "reduction_factor": lambda v, p: _int(v, p, minimum=2),
    })
    return parsed  # type: ignore[no-any-return]


def _resources(raw: Any) -> ResourcesSection:
    parsed = _section(ResourcesSection, _mapping(raw, "resources"), "resources", {
        "cpus_per_trial": lambda v, p: _float(v, p, minimum=0.0),
        "gpus_per_trial": lambda v, p: _float(v, p, minimum=0.0),
        "max_concurrent_trials": lambda v, p: _int(v, p, minimum=1, optional=True),
    })
    if parsed.cpus_per_trial == 0 and parsed.gpus_per_trial == 0:
        raise ConfigError("resources.cpus_per_trial", "a trial needs some CPU or GPU, got 0 and 0")
    if parsed.gpus_per_trial > 1 and parsed.gpus_per_trial != int(parsed.gpus_per_trial):
        raise ConfigError("resources.gpus_per_trial",
                          f"fractions are only possible below 1 GPU, got {parsed.gpus_per_trial}")
    return parsed  # type: ignore[no-any-return]


def _tracking(raw: Any) -> TrackingSection:
    return _section(TrackingSection, _mapping(raw, "tracking"), "tracking", {  # type: ignore[no-any-return]
        "uri": lambda v, p: _str(v, p, optional=True),
        "experiment": lambda v, p: _str(v, p, optional=True),
        "enabled": _bool,
        "drain_timeout_s": lambda v, p: _float(v, p, minimum=0.0),
    })


def _ray(raw: Any) -> RaySection:
    return _section(RaySection, _mapping(raw, "ray"), "ray", {  # type: ignore[no-any-return]
        "address": lambda v, p: _str(v, p, optional=True),
        "num_cpus": lambda v, p: _int(v, p, minimum=1, optional=True),
        "num_gpus": lambda v, p: _int(v, p, minimum=0, optional=True),
    })


def _failure(raw: Any) -> FailureSection:
    return _section(FailureSection, _mapping(raw, "failure"), "failure", {  # type: ignore[no-any-return]
        "max_failures": lambda v, p: _int(v, p, minimum=-1),
    })


def _results(raw: Any) -> ResultsSection:
    return _section(ResultsSection, _mapping(raw, "results"), "results", {  # type: ignore[no-any-return]
        "flush_interval_s": lambda v, p: _float(v, p, minimum=0.0),
        "flush_rows": lambda v, p: _int(v, p, minimum=1),
    })


_TOP_KEYS = ("name", "storage", "dataset", "model", "train", "search", "scheduler", "resources", "tracking",
             "ray", "failure", "results", "protocol")


def _protocol(raw: Any) -> ProtocolSection:
    section = _mapping(raw, "protocol")
    parsed: ProtocolSection = _section(ProtocolSection, section, "protocol", {
        "kind": lambda v, p: enum_value(ProtocolKind, v, p),
        "folds": lambda v, p: _int(v, p, minimum=2),
        "trials_per_loss": lambda v, p: _int(v, p, minimum=1),
        # A 95% interval needs two runs at least.
        "final_runs": lambda v, p: _int(v, p, minimum=2),
    })
    if not parsed.reality_check:
        for key in ("folds", "trials_per_loss", "final_runs"):
            if key in section:
                raise ConfigError(f"protocol.{key}", "only used with protocol.kind: reality_check")
    return parsed


def _reality_check_train(doc: Mapping[str, Any], train: TrainConfig, protocol: ProtocolSection,
                         num_samples: int | None) -> TrainConfig:
    """The protocol owns the folds and the trial count: the sections must not set them too."""
    search = _mapping(doc.get("search"), "search")
    if "num_samples" in search or num_samples is not None:
        raise ConfigError("search.num_samples" if num_samples is None else "--num-samples",
                          "not used by protocol.kind: reality_check; set protocol.trials_per_loss")
    own = _mapping(doc.get("train"), "train")
    if "fold" in own and own["fold"] is not None:
        raise ConfigError("train.fold", "must be null with protocol.kind: reality_check, whose trials train every "
                                        "fold in lockstep")
    if "num_folds" in own and own["num_folds"] != protocol.folds:
        raise ConfigError("train.num_folds", "set by protocol.folds with protocol.kind: reality_check")
    space = _mapping(search.get("space"), "search.space")
    train_space = _mapping(space.get("train"), "search.space.train")
    for key in ("fold", "num_folds"):
        if key in train_space:
            raise ConfigError(f"search.space.train.{key}", "set by the protocol with protocol.kind: reality_check")
    return train.replace(num_folds=protocol.folds)


def parse_config(raw: Any, *, storage: str | None = None, name: str | None = None, address: str | None = None,
                 num_samples: int | None = None) -> StudyConfig:
    """Validate a loaded YAML document (plus command-line overrides) into a StudyConfig."""
    doc = _mapping(raw, "")
    _check_keys(doc, list(_TOP_KEYS), "")
    study_name = _required_str(name if name is not None else doc.get("name", "study"), "name")
    if not _NAME_RE.match(study_name):
        raise ConfigError("name", f"expected letters, digits, '.', '_' or '-' (a directory name), got {study_name!r}")
    study_storage = _required_str(storage if storage is not None else doc.get("storage", "studies"), "storage")
    search = _search(doc.get("search"))
    if num_samples is not None:
        search = dataclasses.replace(search, num_samples=_int(num_samples, "--num-samples", minimum=1))
    protocol = _protocol(doc.get("protocol"))
    train = _train_config(doc)
    if protocol.reality_check:
        train = _reality_check_train(doc, train, protocol, num_samples)
        if search.algorithm is Algorithm.GRID:
            raise ConfigError("search.algorithm", "the reality check searches each loss with optuna or random, "
                                                  "got grid")
    ray_section = _ray(doc.get("ray"))
    if address is not None:
        ray_section = dataclasses.replace(ray_section, address=_required_str(address, "--address"))
    config = StudyConfig(
        name=study_name,
        storage=study_storage,
        train=train,
        search=search,
        scheduler=_scheduler(doc.get("scheduler")),
        resources=_resources(doc.get("resources")),
        tracking=_tracking(doc.get("tracking")),
        ray=ray_section,
        failure=_failure(doc.get("failure")),
        results=_results(doc.get("results")),
        protocol=protocol,
        raw=copy.deepcopy(dict(doc)),
    )
    _check_metric(config)
    if config.scheduler.kind is SchedulerKind.ASHA and config.scheduler.grace_period > config.train.epochs:
        raise ConfigError("scheduler.grace_period",
                          f"must not exceed train.epochs ({config.train.epochs}), got {config.scheduler.grace_period}")
    return config


def _check_metric(config: StudyConfig) -> None:
    names = config.train.metric_names
    if config.search.metric not in names:
        raise ConfigError("search.metric", f"expected one of {', '.join(names)}, got {config.search.metric!r}")


class _Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where `1e-3` (no dot) is a string; YAML 1.2 and every user mean a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def read_yaml(text: str) -> Any:
    """Parse YAML text with floats as in YAML 1.2 (`1e-3` is a number)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def load_config(path: str | Path, **overrides: Any) -> StudyConfig:
    """Read and validate a study YAML file; see `parse_config` for the overrides."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(str(file), "no such config file (expected a study YAML, e.g. configs/default.yaml)")
    try:
        raw = read_yaml(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(file), "not a text file (expected a study YAML, e.g. configs/default.yaml)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(str(file), f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        # An empty file would otherwise run the whole default study under the name "study".
        raise ConfigError(str(file), "empty config; a study YAML names at least the study (see configs/default.yaml)")
    if not isinstance(raw, Mapping):
        raise ConfigError(str(file), f"expected a mapping of sections (name, dataset, train, search, ...), "
                                     f"got {type(raw).__name__}")
    return parse_config(raw, **overrides)
