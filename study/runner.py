"""Run, resume and restore a study: the Ray Tune wiring.

`run_study` plans (validates) first and writes nothing until the plan holds; then it creates the study directory,
starts or joins Ray, and fits a Tuner whose trials call `dml_core.train`. Running the same study again, or
`resume_study`, restores the Tuner from the study directory: finished trials are not rerun and unfinished ones
continue from their last checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dml_core.errors import ConfigError
from dml_core.files import read_text, write_text
from results.study_dir import (CONFIG_FILE, FORMAT_VERSION, MLFLOW_DB, TUNE_DIR, PartTable, StudyInfo, StudyPaths,
                               new_study_info, read_study_info, write_study_info)
from study.checkpoint_pruner import CheckpointPruner
from study.config import SchedulerKind, StudyConfig, parse_config, read_yaml
from study.plan import StudyPlan, plan_study

__all__ = ["StudyRun", "load_study_config", "resume_study", "run_study"]


@dataclass(frozen=True)
class StudyRun:
    study_dir: str
    restored: bool
    wall_time_s: float
    num_trials: int  # the trials the study runs in all
    tracking_uri: str | None
    finished_trials: int  # trials with a trials row after this run; fewer than num_trials: it was interrupted
    already_complete: bool = False  # every trial had finished before this run: it only caught MLflow up

    @property
    def complete(self) -> bool:
        return self.finished_trials >= self.num_trials


def _resolved_raw(config: StudyConfig) -> dict[str, Any]:
    """The YAML as given, with the command-line overrides written in: what `resume` reads back."""
    raw = dict(config.raw)
    raw["name"] = config.name
    raw["storage"] = config.storage
    raw["search"] = dict(raw.get("search") or {})
    if not config.protocol.reality_check:  # the protocol counts its own trials
        raw["search"]["num_samples"] = config.search.num_samples
    if config.ray.address is not None:
        raw["ray"] = dict(raw.get("ray") or {}, address=config.ray.address)
    return raw


def load_study_config(study_dir: str | Path) -> StudyConfig:
    """The config a study was started with, re-anchored at its current directory (it may have moved)."""
    directory = str(study_dir).rstrip("/")
    text = read_text(StudyPaths(directory).config)
    if text is None:
        raise ConfigError(directory, f"not a study directory (expected {CONFIG_FILE} written by dml-study run)")
    if "://" in directory:
        parent, name = directory.rsplit("/", 1)
    else:
        parent, name = str(Path(directory).resolve().parent), Path(directory).name
    return parse_config(read_yaml(text), storage=parent, name=name)


def _tracking_uri(plan: StudyPlan) -> str | None:
    config = plan.config
    if not config.tracking.enabled:
        return None
    if config.tracking.uri is not None:
        return config.tracking.uri
    return f"sqlite:///{config.study_dir}/{MLFLOW_DB}"


def _scheduler(plan: StudyPlan) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    from study.scheduler import PerLossASHA

    section = plan.config.scheduler
    if section.kind is SchedulerKind.FIFO:
        return FIFOScheduler()
    search = plan.config.search
    return PerLossASHA(time_attr="epoch", metric=search.metric, mode=search.mode.value, max_t=plan.base.epochs,
                       grace_period=section.grace_period, reduction_factor=section.reduction_factor,
                       group=_rung_group)


def _rung_group(trial: Any) -> str | None:
    """A trial's loss; None for the reality check's final runs, which always train their full budget."""
    from study.records import phase_of
    from results.study_dir import Phase

    return None if phase_of(trial.config) is Phase.FINAL else str(trial.config["loss"])


def _searcher(plan: StudyPlan) -> Any:
    from study.searcher import GridSearcher, OptunaSearcher, RealityCheckSearcher

    search, protocol = plan.config.search, plan.config.protocol
    if protocol.reality_check:
        return RealityCheckSearcher(plan.space, metric=search.metric, mode=search.mode, max_epochs=plan.base.epochs,
                                    trials_per_loss=protocol.trials_per_loss, final_runs=protocol.final_runs,
                                    base_seed=plan.base.seed, algorithm=search.algorithm, seed=search.seed,
                                    history=search.history)
    if plan.grid is not None:
        return GridSearcher(plan.grid, metric=search.metric, mode=search.mode, repeats=search.num_samples,
                            base_seed=plan.base.seed)
    return OptunaSearcher(plan.space, metric=search.metric, mode=search.mode, max_epochs=plan.base.epochs,
                          algorithm=search.algorithm, seed=search.seed, history=search.history)


def _flat(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Nested sections as dotted YAML key paths: {"model": {"trunk": "x"}} -> {"model.trunk": "x"}."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _study_params(config: StudyConfig, sampled: Iterable[str] = ()) -> dict[str, Any]:
    """What is fixed for the study, as MLflow params, each under its YAML key path (`train.lr`, `model.trunk`):
    the loss and miner and whatever `sampled` names vary per trial and are each trial run's params instead."""
    train = config.train.to_dict()
    for key in ("loss", "loss_params", "miner", "miner_params"):
        train.pop(key)  # the searcher chooses them per trial
    for name in sampled:
        section, _, field = name.partition(".")
        if section == "train":
            train.pop(field, None)
        elif section == "model":
            train["model"] = {k: v for k, v in train["model"].items() if k != field}
    params = _flat({"dataset": train.pop("dataset"), "model": train.pop("model")}, "")
    params.update(_flat(train, "train."))
    params.update({"search.algorithm": config.search.algorithm.value,
                   "search.num_samples": config.search.num_samples, "search.metric": config.search.metric,
                   "search.mode": config.search.mode.value, "search.seed": config.search.seed,
                   "scheduler.kind": config.scheduler.kind.value,
                   "scheduler.grace_period": config.scheduler.grace_period,
                   "scheduler.reduction_factor": config.scheduler.reduction_factor,
                   "protocol.kind": config.protocol.kind.value, "study_dir": config.study_dir})
    if config.protocol.reality_check:
        params.update({"protocol.folds": config.protocol.folds,
                       "protocol.trials_per_loss": config.protocol.trials_per_loss,
                       "protocol.final_runs": config.protocol.final_runs})
    return params


def _recorder(plan: StudyPlan, info: StudyInfo, tracking_uri: str | None) -> Any:
    from results.study_dir import REPEAT_COLUMNS
    from study.mlflow_mirror import MlflowMirror
    from study.recorder import StudyRecorder

    config = plan.config
    paths = StudyPaths(config.study_dir)
    mlflow = None
    if tracking_uri is not None:
        local = "://" not in config.study_dir
        artifacts = Path(config.study_dir, "mlartifacts").as_uri() if local and config.tracking.uri is None else None
        mlflow = MlflowMirror(tracking_uri=tracking_uri, experiment=config.tracking.experiment or config.name,
                              study_uid=info.uid, study_name=config.name, progress_file=paths.mlflow_progress,
                              metrics=plan.metrics, params=_study_params(config, plan.param_columns),
                              head_keys=["phase", "config_id", "loss", "miner", *plan.param_columns,
                                         *REPEAT_COLUMNS],
                              artifacts=[str(paths.config)] if local else [], artifact_location=artifacts,
                              drain_timeout_s=config.tracking.drain_timeout_s, metric=config.search.metric,
                              sign=config.search.mode.sign)
    return StudyRecorder(study=config.name, results_dir=str(paths.results), base=config.train,
                         cross_validate=config.protocol.reality_check, param_columns=plan.param_columns,
                         metrics=plan.metrics, metric=config.search.metric, sign=config.search.mode.sign,
                         stop_reason=config.scheduler.kind.value, flush_interval_s=config.results.flush_interval_s,
                         flush_rows=config.results.flush_rows, mlflow=mlflow)


def _progress(plan: StudyPlan, enabled: bool) -> list[Any]:
    from study.progress import ProgressPrinter

    search = plan.config.search
    return [ProgressPrinter(total=plan.num_trials, metric=search.metric, sign=search.mode.sign,
                            max_epochs=plan.base.epochs)] if enabled else []


def _init_ray(plan: StudyPlan) -> None:
    import ray

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # trials read paths relative to where the user ran us
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our recorder replaces CSV/JSON/TBX logs
    if ray.is_initialized():
        return
    section = plan.config.ray
    # Ray's INFO lines ("Started a local Ray instance") are not the study's: warnings and errors still show.
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if section.address is not None:
        ray.init(address=section.address, **quiet)
    else:
        ray.init(num_cpus=section.num_cpus, num_gpus=section.num_gpus, include_dashboard=False, **quiet)


def _parallel_slots(plan: StudyPlan) -> int:
    """How many trials the cluster can run at once with the per-trial resources."""
    import ray

    available = ray.cluster_resources()
    resources = plan.config.resources
    slots = [available.get("CPU", 0.0) / resources.cpus_per_trial] if resources.cpus_per_trial else []
    slots += [available.get("GPU", 0.0) / resources.gpus_per_trial] if resources.gpus_per_trial else []
    return max(1, int(min(slots)))


def _allow_parallel_starts(plan: StudyPlan) -> None:
    """Start as many trials at once as can run at once.

    With a custom searcher and no max_concurrent_trials, Tune keeps one trial pending at a time, so trial actors
    (each a process importing torch: seconds) start one after another: measured, the second of two slots sat
    idle for 5 s. A user's own TUNE_MAX_PENDING_TRIALS_PG wins.
    """
    if plan.config.resources.max_concurrent_trials is None:
        os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(_parallel_slots(plan)))


def _trainable(plan: StudyPlan, function: Callable[..., None] | None = None) -> Any:
    from ray import tune

    if function is None:
        from study.trainable import dml_trainable as function

    resources = plan.config.resources
    search = plan.config.search
    with_base = tune.with_parameters(function, base=plan.base, cross_validate=plan.config.protocol.reality_check,
                                     metric=search.metric, mode=search.mode)
    return tune.with_resources(with_base, {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial})


def _refuse_a_second_study(paths: StudyPaths) -> None:
    """A directory with a study's files but no study.json is a study whose study.json was lost: starting a new
    study there would mix two studies' rows in one table."""
    from dml_core.files import resolve_filesystem
    import pyarrow.fs as pafs

    filesystem, _ = resolve_filesystem(paths.root)
    for location in (paths.results, paths.tune, paths.mlflow_progress):
        inner = resolve_filesystem(location)[1]
        if filesystem.get_file_info(inner).type != pafs.FileType.NotFound:
            raise ConfigError(str(paths.study), "is missing from a directory that holds a study "
                                                f"({location} exists); restore study.json from a copy to resume "
                                                "it, or move the directory aside to start a new study")


def _has_rows(paths: StudyPaths) -> bool:
    from results.study_dir import epochs_schema

    return any(PartTable(location, epochs_schema({}, [])).part_files()
               for location in (paths.epochs, paths.trials, paths.folds, paths.final))


def _check_tables(paths: StudyPaths) -> None:
    """Every part file of every table is readable, before Ray starts: one line naming the first that is not."""
    from results.study_dir import epochs_schema

    for location in (paths.epochs, paths.trials, paths.folds, paths.final):
        try:
            PartTable(location, epochs_schema({}, [])).check()
        except ValueError as error:
            raise ConfigError("", f"{error}; move it out of the table's directory to resume without its rows, "
                                  f"or restore it from a copy") from None


def _prepare_dir(plan: StudyPlan) -> tuple[bool, StudyInfo]:
    """(restore?, study.json). Writes config.yaml and study.json for a new study; checks an existing one."""
    from ray.tune import Tuner

    config = plan.config
    paths = StudyPaths(config.study_dir)
    if read_text(paths.study) is None:
        _refuse_a_second_study(paths)
    else:
        try:
            existing = read_study_info(config.study_dir)
        except ValueError:
            raise ConfigError(str(paths.study), "not valid JSON; restore it from a copy, or remove the study "
                                                "directory to start again") from None
        if existing.format != FORMAT_VERSION:
            raise ConfigError(config.study_dir, f"written by an older dml-study (directory format "
                                                f"{existing.format}, this version writes {FORMAT_VERSION}, with "
                                                f"other column names); finish it with the version that started "
                                                f"it, or choose another --name")
        stored = load_study_config(config.study_dir)
        if _resolved_raw(stored) != _resolved_raw(config):
            raise ConfigError(config.study_dir, "a study with this name exists with a different configuration; "
                                                "choose another --name or run `dml-study resume` on it")
        _check_tables(paths)
        if not Tuner.can_restore(str(paths.tune)):
            if _has_rows(paths):
                raise ConfigError(config.study_dir, "the study directory holds results but no Ray Tune state to "
                                                    "restore; move it aside or choose another --name")
            # Stopped before Tune's first snapshot: nothing was recorded, so the study starts afresh, as itself.
            return False, existing
        return True, existing
    search = config.search
    protocol = config.protocol
    info = new_study_info(config.study_dir, name=config.name, metric=search.metric, mode=search.mode,
                          metrics=plan.metrics, log_scale=plan.log_scale,
                          protocol={"kind": protocol.kind.value, **({"folds": protocol.folds,
                                                                    "trials_per_loss": protocol.trials_per_loss,
                                                                    "final_runs": protocol.final_runs,
                                                                    "losses": list(plan.space.loss_names)}
                                                                   if protocol.reality_check else {})})
    write_text(paths.config, yaml.safe_dump(_resolved_raw(config), sort_keys=False))
    write_study_info(info)  # last: its presence marks a study directory
    return False, info


def _quiet_libraries(verbose: int) -> None:
    """Keep the console to our own progress lines: these messages say nothing a study user can act on."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A local cluster's token authentication is on by default and private to this machine; its notice is noise.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # Ray Tune's new console output prints an experiment box even at verbose 0; its older one is silent there.
    if verbose == 0:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # With Tune's file loggers off (our recorder writes the results), ResultGrid warns per trial that it found
    # no result.json; and experiment-state messages repeat per snapshot what the study prints once.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.ERROR)
    if verbose == 0:  # "Wrote the latest version of all result files ..." at the end of every run
        logging.getLogger("ray.tune.tune").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    # The mirror retries on its own, with backoff, from its thread: MLflow's own retries (minutes by default)
    # would only hold a failed request longer. A user's settings win.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def run_study(config: StudyConfig, *, callbacks: list[Any] | None = None, progress: bool = True,
              verbose: int = 0, trainable: Callable[..., None] | None = None) -> StudyRun:
    """Plan, then run (or restore and continue) the study; returns where its results are.

    `progress` prints one line per finished trial; `verbose` is Ray Tune's own output level (0: none).
    `trainable`: a function with dml_trainable's signature to run instead of it (benchmarks/bench_scale.py runs
    the study's driver with a trainable that only reports).
    """
    started = time.perf_counter()
    plan = plan_study(config)
    restore, info = _prepare_dir(plan)
    tracking_uri = _tracking_uri(plan)
    _quiet_libraries(verbose)
    _init_ray(plan)
    _allow_parallel_starts(plan)

    from ray import tune

    paths = StudyPaths(plan.config.study_dir)
    done_before, expected_before = _progress_counts(plan) if restore else (0, 1)
    already_complete = done_before >= expected_before
    if restore:
        tuner = tune.Tuner.restore(str(paths.tune), trainable=_trainable(plan, trainable), resume_unfinished=True,
                                   resume_errored=False)
    else:
        search = plan.config.search
        tune_config = tune.TuneConfig(
            search_alg=_searcher(plan), scheduler=_scheduler(plan), metric=search.metric, mode=search.mode.value,
            num_samples=plan.num_trials, max_concurrent_trials=plan.config.resources.max_concurrent_trials,
            reuse_actors=True)
        from study.recorder import ClosedTrialStopper

        recorder = _recorder(plan, info, tracking_uri)
        run_config = tune.RunConfig(
            name=TUNE_DIR, storage_path=plan.config.study_dir, stop=ClosedTrialStopper(recorder),
            callbacks=[recorder, CheckpointPruner(), *_progress(plan, progress), *(callbacks or [])],
            failure_config=tune.FailureConfig(max_failures=plan.config.failure.max_failures),
            # Keep every checkpoint as far as Tune knows (num_to_keep would force an experiment snapshot per
            # checkpoint); CheckpointPruner deletes the ones no restore can need.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None), verbose=verbose)
        tuner = tune.Tuner(_trainable(plan, trainable), tune_config=tune_config, run_config=run_config)
    tuner.fit()
    finished, expected = _progress_counts(plan)
    return StudyRun(study_dir=plan.config.study_dir, restored=restore, wall_time_s=time.perf_counter() - started,
                    num_trials=expected, tracking_uri=tracking_uri, finished_trials=finished,
                    already_complete=already_complete)


def _progress_counts(plan: StudyPlan) -> tuple[int, int]:
    """(trials finished, trials the study runs in all), from the trials table. Tune cannot say: on an interrupt
    it marks the running trials terminated. In a reality check a loss whose search trials all failed gets no final
    runs, so its share is counted from the table too."""
    import pyarrow.compute as pc

    from results.study_dir import trials_schema

    table = PartTable(StudyPaths(plan.config.study_dir).trials,
                      trials_schema(plan.param_columns, plan.metrics)).read(["phase", "loss", "status"])
    finished = table.num_rows
    protocol = plan.config.protocol
    if not protocol.reality_check:
        return finished, plan.num_trials
    expected = 0
    for loss in plan.space.loss_names:
        mine = table.filter(pc.and_(pc.equal(table["loss"], loss), pc.equal(table["phase"], "search")))
        searched_out = mine.num_rows >= protocol.trials_per_loss
        all_failed = searched_out and pc.all(pc.equal(mine["status"], "error")).as_py()
        expected += protocol.trials_per_loss + (0 if all_failed else protocol.final_runs)
    return finished, expected


def resume_study(study_dir: str | Path, **kwargs: Any) -> StudyRun:
    return run_study(load_study_config(study_dir), **kwargs)
