"""Ray Tune searchers over our conditional space: Optuna ask/tell (TPE or random) and plain grid enumeration.

Why not Ray's OptunaSearch: when ASHA stops a trial early, OptunaSearch tells Optuna the trial is COMPLETE with
its last low-budget value, so TPE learns that a configuration stopped after one epoch scored that one epoch's
recall. Here every epoch is reported to Optuna as an intermediate value, and a trial that ended before its last
epoch without an error is told as PRUNED, which is what Optuna's samplers expect of early-stopped trials.

One Optuna study per loss, plus one that chooses the loss. Within a loss's study every sampled value has its one
name (search_spaces.space), `miner` included, so Optuna's trials table joins with ours; a single study over all
losses could not name the miner choice `miner` (its choices differ per loss, and Optuna keeps one distribution per
name). Each loss's TPE also learns only from its own trials, and its cost grows with them, not with the study.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from ray import cloudpickle  # the space holds plain frozen dataclasses; cloudpickle keeps the state robust
from ray.tune.search import Searcher

from dml_core.mode import Mode
from search_spaces.space import LOSS, StudySpace, suggest, suggest_loss
from study.config import Algorithm

__all__ = ["GridSearcher", "OptunaSearcher", "outcome"]

# The Optuna user attribute holding the Tune trial id: it joins Optuna's trials table with the study's tables.
TRIAL_ID_ATTR = "trial_id"


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
        # group=True: TPE models each conditional branch (one miner's parameters) separately instead of falling
        # back to independent sampling; constant_liar keeps parallel trials from piling onto one point.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=10)


def _loss_seed(seed: int, loss: str) -> int:
    """A seed per loss study, fixed by the study seed and the loss name (not by the order of the losses)."""
    return zlib.crc32(f"{seed}:{loss}".encode())


class _StatefulSearcher(Searcher):
    """Tune saves and restores a searcher through these two files; the state itself is each class's."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(cloudpickle.load(f))


class OptunaSearcher(_StatefulSearcher):
    """Asks Optuna for each trial's configuration (define-by-run over the space); tells it how trials ended.

    The loss is chosen by its own study (a categorical `loss`; the first trials take each loss once, so a
    comparison sees every loss before TPE starts to concentrate on the promising ones), the rest by that loss's
    study. Both are told each epoch's value and how the trial ended.
    """

    def __init__(self, space: StudySpace, *, metric: str, mode: Mode, max_epochs: int,
                 algorithm: Algorithm = Algorithm.OPTUNA, seed: int = 0) -> None:
        super().__init__(metric=metric, mode=mode.value)
        self._space = space
        self._max_epochs = max_epochs
        direction = "maximize" if mode is Mode.MAX else "minimize"
        self._chooser = optuna.create_study(direction=direction, sampler=_sampler(algorithm, seed))
        for loss in space.loss_names if len(space.loss_names) > 1 else ():
            self._chooser.enqueue_trial({LOSS: loss})
        self._studies = {loss: optuna.create_study(direction=direction,
                                                   sampler=_sampler(algorithm, _loss_seed(seed, loss)))
                         for loss in space.loss_names}
        # Tune trial id -> (its loss, its open Optuna trials: the chooser's, the loss study's), until told.
        self._trials: dict[str, tuple[str, optuna.Trial, optuna.Trial]] = {}
        self._reported: dict[str, int] = {}  # Tune trial id -> last epoch reported to Optuna
        self._epochs: dict[str, int] = {}  # Tune trial id -> its epochs, where the space samples train.epochs

    @property
    def studies(self) -> dict[str, optuna.Study]:
        """The Optuna study of each loss (its trials carry the Tune trial id as user attribute `trial_id`)."""
        return dict(self._studies)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any],
                              **spec: Any) -> bool:
        return True  # metric and mode came with the constructor; the space is ours, not Tune's param_space

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        chooser = self._chooser.ask()
        loss = suggest_loss(self._space, chooser)
        trial = self._studies[loss].ask()
        for opened in (chooser, trial):
            opened.set_user_attr(TRIAL_ID_ATTR, trial_id)
        self._trials[trial_id] = (loss, chooser, trial)
        config = suggest(self._space, loss, trial)
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
        _, chooser, trial = self._trials[trial_id]
        for opened in (chooser, trial):
            opened.report(float(value), step=int(epoch))
        self._reported[trial_id] = int(epoch)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self._trials:
            return
        if result is not None:
            self.on_trial_result(trial_id, result)
        max_epochs = self._epochs.pop(trial_id, self._max_epochs)
        state, value = outcome(result, error=error, max_epochs=max_epochs, metric=self._metric)
        # Told trials leave the map, so a completion replayed after a restore is ignored above.
        loss, chooser, trial = self._trials.pop(trial_id)
        self._chooser.tell(chooser, value, state=state)
        self._studies[loss].tell(trial, value, state=state)
        self._reported.pop(trial_id, None)

    def get_state(self) -> dict[str, Any]:
        # One pickle holds the studies and the open trials, which refer to them.
        return {"space": self._space, "chooser": self._chooser, "studies": self._studies,
                "trials": dict(self._trials), "reported": dict(self._reported), "max_epochs": self._max_epochs,
                "epochs": dict(self._epochs)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._space = state["space"]
        self._chooser = state["chooser"]
        self._studies = state["studies"]
        self._trials = dict(state["trials"])
        self._reported = dict(state["reported"])
        self._max_epochs = state["max_epochs"]
        self._epochs = dict(state["epochs"])


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
