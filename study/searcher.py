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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from ray import cloudpickle  # the space holds plain frozen dataclasses; cloudpickle keeps the state robust
from ray.tune.search import Searcher

from dml_core.mode import Mode
from results.study_dir import Phase
from search_spaces.space import LOSS, StudySpace, suggest, suggest_loss
from study.config import Algorithm
from study.records import FINAL_RUN_KEY, PHASE_KEY

__all__ = ["HISTORY", "KEEP_BEST", "GridSearcher", "OptunaSearcher", "RealityCheckSearcher", "bounded", "outcome"]

# The Optuna user attribute holding the Tune trial id: it joins Optuna's trials table with the study's tables.
TRIAL_ID_ATTR = "trial_id"
# Finished trials a study learns from (see the module doc). 200: every study reaches its bound early (the loss
# chooser, which sees every trial, at 250 trials; each of the default space's 14 losses at about 3,500), and from
# then on a suggest and the searcher's share of each Tune snapshot stop growing, so the driver's cost per trial is
# flat over a long study (at 1,000 it grew until about 17,000 trials). Up to 250 trials per study it is TPE over
# the full history, trial for trial, and TPE's good group (at most 25 trials) is always among the 100 best kept.
HISTORY = 200
# Best trials always kept: four times TPE's largest good group (25 with the default gamma).
KEEP_BEST = 100
# The key of the loss-choosing study among a searcher's studies (no loss is named so).
CHOOSER = ":loss"
_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _rank(trial: optuna.trial.FrozenTrial, sign: float) -> tuple[int, float, float]:
    """TPE's order of finished trials, best last: completed by value, then pruned by last step and its value."""
    if trial.state is optuna.trial.TrialState.COMPLETE:
        return (1, math.inf, sign * float(trial.value))  # type: ignore[arg-type]
    if not trial.intermediate_values:
        return (0, -math.inf, -math.inf)
    step = max(trial.intermediate_values)
    return (0, float(step), sign * trial.intermediate_values[step])


def bounded(study: optuna.Study, sampler: Callable[[], optuna.samplers.BaseSampler], *, history: int = HISTORY,
            keep_best: int = KEEP_BEST) -> optuna.Study:
    """`study`, or once it holds more than 1.25 x `history` finished trials a new study (with `sampler()`) of
    `history` of them: the `keep_best` best and the most recent rest (see the module doc)."""
    if not 0 < keep_best <= history:
        raise ValueError(f"the history keeps its best trials and more, got {history=}, {keep_best=}")
    finished = study.get_trials(deepcopy=False, states=_FINISHED)
    if len(finished) <= history + history // 4:
        return study
    sign = 1.0 if study.direction is optuna.study.StudyDirection.MAXIMIZE else -1.0
    best = sorted(finished, key=lambda t: _rank(t, sign))[-keep_best:]
    chosen = {t.number for t in best}
    recent = [t for t in reversed(finished) if t.number not in chosen][:history - keep_best]
    fresh = optuna.create_study(direction=study.direction, sampler=sampler())
    fresh.add_trials(sorted([*best, *recent], key=lambda t: t.number))
    return fresh


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


class _PerLossOptuna(_StatefulSearcher):
    """One Optuna study per loss: asks the loss's study for a configuration (define-by-run over the space), reports
    every epoch's value to the open Optuna trials of a Tune trial and tells them how it ended. Subclasses choose
    the loss of each trial (`_next_loss`) and may open more Optuna trials alongside (`_open_extra`)."""

    def __init__(self, space: StudySpace, *, metric: str, mode: Mode, max_epochs: int,
                 algorithm: Algorithm = Algorithm.OPTUNA, seed: int = 0, history: int = HISTORY) -> None:
        super().__init__(metric=metric, mode=mode.value)
        if history < 2:
            raise ValueError(f"the searcher learns from at least 2 trials per study, got {history=}")
        self._space = space
        self._max_epochs = max_epochs
        self._sign = mode.sign
        self._direction = "maximize" if mode is Mode.MAX else "minimize"
        self._algorithm, self._seed, self._history = algorithm, seed, history
        # Per study key (a loss, or CHOOSER): how often it was replaced by a bounded one (seeds its next sampler).
        self._generation: dict[str, int] = {}
        self._studies = {loss: self._new_study(loss) for loss in space.loss_names}
        # Tune trial id -> (its loss, its open Optuna trials), until told.
        self._trials: dict[str, tuple[str, list[optuna.Trial]]] = {}
        self._reported: dict[str, int] = {}  # Tune trial id -> last epoch reported to Optuna
        self._epochs: dict[str, int] = {}  # Tune trial id -> its epochs, where the space samples train.epochs
        self._best: dict[str, float] = {}  # Tune trial id -> its best sign-normalised value so far

    def _sampler_for(self, key: str) -> optuna.samplers.BaseSampler:
        generation = self._generation.get(key, 0)
        seed = self._seed if key == CHOOSER else _loss_seed(self._seed, key)
        return _sampler(self._algorithm, seed if generation == 0 else _loss_seed(seed, f"{key}#{generation}"))

    def _new_study(self, key: str) -> optuna.Study:
        return optuna.create_study(direction=self._direction, sampler=self._sampler_for(key))

    def _learn(self, key: str, told: optuna.trial.FrozenTrial, study: optuna.Study) -> None:
        """`told` was told to `study` (an earlier study of `key` if it has been replaced since the trial began):
        the current study of `key` learns it, and is replaced by a bounded one when it has grown too large."""
        current = self._studies[key]
        if study is not current and told.state in _FINISHED:
            current.add_trial(told)

        def sampler() -> optuna.samplers.BaseSampler:
            self._generation[key] = self._generation.get(key, 0) + 1
            return self._sampler_for(key)

        self._studies[key] = bounded(current, sampler, history=self._history,
                                     keep_best=min(KEEP_BEST, self._history // 2))

    @property
    def studies(self) -> dict[str, optuna.Study]:
        """The Optuna study of each loss (its trials carry the Tune trial id as user attribute `trial_id`); from
        `history` finished trials on, the bounded history it learns from (module doc)."""
        return {key: study for key, study in self._studies.items() if key != CHOOSER}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any],
                              **spec: Any) -> bool:
        return True  # metric and mode came with the constructor; the space is ours, not Tune's param_space

    def _ask(self, trial_id: str, loss: str, extra: list[optuna.Trial]) -> dict[str, Any]:
        """A configuration of `loss` from its study; `extra` Optuna trials are reported and told alongside."""
        trial = self._studies[loss].ask()
        opened = [*extra, trial]
        for optuna_trial in opened:
            optuna_trial.set_user_attr(TRIAL_ID_ATTR, trial_id)
        self._trials[trial_id] = (loss, opened)
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
        for optuna_trial in self._trials[trial_id][1]:
            optuna_trial.report(float(value), step=int(epoch))
        self._reported[trial_id] = int(epoch)
        self._best[trial_id] = max(self._best.get(trial_id, -math.inf), self._sign * float(value))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self._trials:
            return
        if result is not None:
            self.on_trial_result(trial_id, result)
        max_epochs = self._epochs.pop(trial_id, self._max_epochs)
        state, value = outcome(result, error=error, max_epochs=max_epochs, metric=self._metric)
        # Told trials leave the map, so a completion replayed after a restore is ignored above.
        loss, opened = self._trials.pop(trial_id)
        *extra, own = opened  # the loss's trial is the last one opened; a chooser's trial comes before it
        for key, optuna_trial in [*((CHOOSER, t) for t in extra), (loss, own)]:
            self._learn(key, optuna_trial.study.tell(optuna_trial, value, state=state), optuna_trial.study)
        self._reported.pop(trial_id, None)
        best = self._best.pop(trial_id, None)
        self._ended(trial_id, loss, None if error else best)

    def _ended(self, trial_id: str, loss: str, best: float | None) -> None:
        """Trial `trial_id` of `loss` was told; `best` is its best sign-normalised value (None: errored or none)."""

    def get_state(self) -> dict[str, Any]:
        # One pickle holds the studies and the open trials, which refer to them.
        # The loss studies under "studies" and the loss chooser under "chooser", as the saved state has always had them.
        chooser = {"chooser": self._studies[CHOOSER]} if CHOOSER in self._studies else {}
        return {"space": self._space, "studies": self.studies, **chooser, "trials": dict(self._trials),
                "reported": dict(self._reported), "max_epochs": self._max_epochs, "epochs": dict(self._epochs),
                "best": dict(self._best), "algorithm": self._algorithm, "seed": self._seed,
                "history": self._history, "generation": dict(self._generation)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._space = state["space"]
        self._studies = dict(state["studies"])
        self._trials = dict(state["trials"])
        self._reported = dict(state["reported"])
        self._max_epochs = state["max_epochs"]
        self._epochs = dict(state["epochs"])
        self._best = dict(state["best"])
        if "chooser" in state:  # a state saved before the chooser was one of the studies
            self._studies[CHOOSER] = state["chooser"]
        self._algorithm = state.get("algorithm", self._algorithm)
        self._seed, self._history = state.get("seed", self._seed), state.get("history", self._history)
        self._generation = dict(state.get("generation", {}))


class OptunaSearcher(_PerLossOptuna):
    """The search protocol: a study of its own chooses each trial's loss (a categorical `loss`; the first trials
    take each loss once, so a comparison sees every loss before TPE starts to concentrate on the promising ones),
    then that loss's study the rest. Both are told each epoch's value and how the trial ended.
    """

    def __init__(self, space: StudySpace, *, metric: str, mode: Mode, max_epochs: int,
                 algorithm: Algorithm = Algorithm.OPTUNA, seed: int = 0, history: int = HISTORY) -> None:
        super().__init__(space, metric=metric, mode=mode, max_epochs=max_epochs, algorithm=algorithm, seed=seed,
                         history=history)
        self._studies[CHOOSER] = self._new_study(CHOOSER)
        for loss in space.loss_names if len(space.loss_names) > 1 else ():
            self._studies[CHOOSER].enqueue_trial({LOSS: loss})

    @property
    def chooser(self) -> optuna.Study:
        """The study whose single parameter `loss` chooses each trial's loss."""
        return self._studies[CHOOSER]

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        chooser = self._studies[CHOOSER].ask()
        return self._ask(trial_id, suggest_loss(self._space, chooser), [chooser])


class RealityCheckSearcher(_PerLossOptuna):
    """The reality-check protocol: every loss gets exactly `trials_per_loss` trials of its own study, handed out
    so that the losses progress evenly (the loss with the fewest trials so far goes next); when a loss's last
    search trial has ended, its best configuration (by its best epoch's value) is handed out `final_runs` more
    times with new seeds as final runs, ahead of any search trial. Optuna never hears of the final runs.
    """

    def __init__(self, space: StudySpace, *, metric: str, mode: Mode, max_epochs: int, trials_per_loss: int,
                 final_runs: int, base_seed: int = 0, algorithm: Algorithm = Algorithm.OPTUNA,
                 seed: int = 0, history: int = HISTORY) -> None:
        super().__init__(space, metric=metric, mode=mode, max_epochs=max_epochs, algorithm=algorithm, seed=seed,
                         history=history)
        if trials_per_loss < 1 or final_runs < 1:
            raise ValueError(f"the reality check needs trials and final runs, got {trials_per_loss=}, {final_runs=}")
        self._trials_per_loss = trials_per_loss
        self._final_runs = final_runs
        self._base_seed = base_seed  # the study's seed: a final run's seed is new relative to its search trial's
        self._handed: dict[str, int] = {loss: 0 for loss in space.loss_names}  # search trials handed out
        self._ended_count: dict[str, int] = {loss: 0 for loss in space.loss_names}  # search trials told
        # Per loss, its best search configuration so far: (best sign-normalised value, configuration).
        self._leader: dict[str, tuple[float, dict[str, Any]]] = {}
        self._finals: list[dict[str, Any]] = []  # final-run configurations not handed out yet, in order
        self._configs: dict[str, dict[str, Any]] = {}  # Tune trial id -> its search configuration, until told

    def phase_of(self, loss: str) -> Phase:
        """SEARCH while trials of `loss` search, FINAL once its final runs are queued or handed out."""
        return Phase.FINAL if self._ended_count[loss] >= self._trials_per_loss else Phase.SEARCH

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._finals:
            return self._finals.pop(0)
        waiting = [loss for loss in self._space.loss_names if self._handed[loss] < self._trials_per_loss]
        if not waiting:
            # Every search trial is out: the rest are final runs, queued as each loss's search ends.
            searching = any(self._ended_count[loss] < self._trials_per_loss for loss in self._space.loss_names)
            return None if searching else Searcher.FINISHED
        loss = min(waiting, key=lambda name: self._handed[name])  # ties: the space's order
        self._handed[loss] += 1
        config = self._ask(trial_id, loss, [])
        self._configs[trial_id] = config
        return {PHASE_KEY: Phase.SEARCH.value, **config}

    def _ended(self, trial_id: str, loss: str, best: float | None) -> None:
        config = self._configs.pop(trial_id)
        if best is not None and (loss not in self._leader or best > self._leader[loss][0]):
            self._leader[loss] = (best, config)
        self._ended_count[loss] += 1
        if self._ended_count[loss] == self._trials_per_loss:
            self._queue_finals(loss)

    def _queue_finals(self, loss: str) -> None:
        """The final runs of `loss`: its best configuration with new seeds (none if every trial errored)."""
        if loss not in self._leader:
            return
        _, config = self._leader[loss]
        seed = int(config.get("train.seed", self._base_seed))
        for run in range(self._final_runs):
            self._finals.append({PHASE_KEY: Phase.FINAL.value, FINAL_RUN_KEY: run, **config,
                                 "train.seed": seed + 1 + run})

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "handed": dict(self._handed), "ended": dict(self._ended_count),
                "leader": dict(self._leader), "finals": list(self._finals), "configs": dict(self._configs),
                "trials_per_loss": self._trials_per_loss, "final_runs": self._final_runs,
                "base_seed": self._base_seed}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._handed, self._ended_count = dict(state["handed"]), dict(state["ended"])
        self._leader, self._finals = dict(state["leader"]), list(state["finals"])
        self._configs = dict(state["configs"])
        self._trials_per_loss, self._final_runs = state["trials_per_loss"], state["final_runs"]
        self._base_seed = state["base_seed"]


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
