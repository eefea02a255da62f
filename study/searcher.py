"""Ray Tune searchers over our conditional space: Optuna ask/tell (TPE or random) and plain grid enumeration.

Why not Ray's OptunaSearch: when ASHA stops a trial early, OptunaSearch tells Optuna the trial is COMPLETE with
its last low-budget value, so TPE learns that a configuration stopped after one epoch scored that one epoch's
recall. Here every epoch is reported to Optuna as an intermediate value, and a trial that ended before its last
epoch without an error is told as PRUNED, which is what Optuna's samplers expect of early-stopped trials.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from ray import cloudpickle  # the define-by-run function may be a closure
from ray.tune.search import Searcher

from study.config import Algorithm, Mode

__all__ = ["GridSearcher", "OptunaSearcher", "outcome"]

DefineByRun = Callable[[optuna.Trial], dict[str, Any]]
LOSS_PARAM = "loss"  # the Optuna name of the loss choice in search_spaces.to_optuna


def outcome(result: Mapping[str, Any] | None, *, error: bool, max_epochs: int,
            metric: str) -> tuple[optuna.trial.TrialState, float | None]:
    """How a finished Tune trial is told to Optuna: (state, value). Pure, so it is tested without Ray."""
    if error:
        return optuna.trial.TrialState.FAIL, None
    value = None if result is None else result.get(metric)
    epochs = 0 if result is None else int(result.get("epoch", 0))
    if value is None or not math.isfinite(float(value)):
        return optuna.trial.TrialState.FAIL, None
    if epochs < max_epochs:
        return optuna.trial.TrialState.PRUNED, None
    return optuna.trial.TrialState.COMPLETE, float(value)


def _sampler(algorithm: Algorithm, seed: int) -> optuna.samplers.BaseSampler:
    if algorithm is Algorithm.RANDOM:
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # group=True: TPE models each conditional branch (one loss's parameters) separately instead of
        # falling back to independent sampling; constant_liar keeps parallel trials from piling onto one point.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=10)


class _StatefulSearcher(Searcher):
    """Tune saves and restores a searcher through these two files; the state itself is each class's."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(cloudpickle.load(f))


class OptunaSearcher(_StatefulSearcher):
    """Asks Optuna for each trial's configuration through a define-by-run function; tells it how trials ended."""

    def __init__(self, define_by_run: DefineByRun, *, metric: str, mode: Mode, max_epochs: int,
                 algorithm: Algorithm = Algorithm.OPTUNA, seed: int = 0, cover: Sequence[str] = ()) -> None:
        super().__init__(metric=metric, mode=mode.value)
        self._define_by_run = define_by_run
        self._max_epochs = max_epochs
        direction = "maximize" if mode is Mode.MAX else "minimize"
        self._study = optuna.create_study(direction=direction, sampler=_sampler(algorithm, seed))
        # The first trials take each loss in `cover` once (their other parameters still sampled), so a comparison
        # sees every loss before TPE starts to concentrate on the promising ones.
        for loss in cover if len(cover) > 1 else ():
            self._study.enqueue_trial({LOSS_PARAM: loss})
        self._trials: dict[str, optuna.Trial] = {}  # Tune trial id -> its Optuna trial, until told
        self._reported: dict[str, int] = {}  # Tune trial id -> last epoch reported to Optuna
        self._epochs: dict[str, int] = {}  # Tune trial id -> its epochs, where the space samples train.epochs

    @property
    def study(self) -> optuna.Study:
        return self._study

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any],
                              **spec: Any) -> bool:
        return True  # metric and mode came with the constructor; the space is ours, not Tune's param_space

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        trial = self._study.ask()
        self._trials[trial_id] = trial
        config = self._define_by_run(trial)
        if "train.epochs" in config:
            self._epochs[trial_id] = int(config["train.epochs"])
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self._trials:
            return
        value, epoch = result.get(self._metric), result.get("epoch")
        if value is None or epoch is None or not math.isfinite(float(value)):
            return
        if int(epoch) <= self._reported.get(trial_id, 0):
            return  # re-reported after a restore: Optuna already has this step
        self._trials[trial_id].report(float(value), step=int(epoch))
        self._reported[trial_id] = int(epoch)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self._trials:
            return
        if result is not None:
            self.on_trial_result(trial_id, result)
        max_epochs = self._epochs.pop(trial_id, self._max_epochs)
        state, value = outcome(result, error=error, max_epochs=max_epochs, metric=self._metric)
        # Told trials leave the map, so a completion replayed after a restore is ignored above.
        self._study.tell(self._trials.pop(trial_id), value, state=state)
        self._reported.pop(trial_id, None)

    def get_state(self) -> dict[str, Any]:
        # One pickle holds the study and the open trials, which refer to it.
        return {"study": self._study, "trials": dict(self._trials), "reported": dict(self._reported),
                "max_epochs": self._max_epochs, "epochs": dict(self._epochs)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._study = state["study"]
        self._trials = dict(state["trials"])
        self._reported = dict(state["reported"])
        self._max_epochs = state["max_epochs"]
        self._epochs = dict(state.get("epochs", {}))


class GridSearcher(_StatefulSearcher):
    """Every grid configuration, `repeats` times each, in order; then FINISHED."""

    def __init__(self, configs: Sequence[Mapping[str, Any]], *, metric: str, mode: Mode, repeats: int = 1,
                 base_seed: int = 0) -> None:
        super().__init__(metric=metric, mode=mode.value)
        if not configs:
            raise ValueError("grid search needs at least one configuration")
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats=}")
        self._configs = [dict(c) for c in configs]
        self._repeats = repeats
        self._base_seed = base_seed
        self._next = 0

    @property
    def total(self) -> int:
        return len(self._configs) * self._repeats

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any],
                              **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._next >= self.total:
            return Searcher.FINISHED
        repeat, index = divmod(self._next, len(self._configs))
        config = dict(self._configs[index])
        if self._repeats > 1 and "train.seed" not in config:
            config["train.seed"] = self._base_seed + repeat  # identical repeats would train identical models
        self._next += 1
        return config

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        pass  # nothing to learn: the grid is fixed

    def get_state(self) -> dict[str, Any]:
        return {"configs": self._configs, "repeats": self._repeats, "next": self._next, "base_seed": self._base_seed}

    def set_state(self, state: dict[str, Any]) -> None:
        self._configs, self._repeats, self._next = state["configs"], state["repeats"], state["next"]
        self._base_seed = state["base_seed"]
