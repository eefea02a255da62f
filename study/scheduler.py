"""ASHA with one set of rungs per loss: a trial is only ever compared with trials of its own loss.

Why: ASHA stops a trial whose value at a rung is below the top 1/reduction_factor of the values recorded there. With
one set of rungs for the whole study, a slow-starting loss family (the proxy and classification losses, trained
from scratch) is stopped at the first rung for starting slowly, not for being worse, and the study's "best per loss"
table then ranks budgets, not losses. With a set per loss, the first trial of each loss to reach a rung always
passes it, so every loss has at least one configuration trained to the full budget.

Ray's own AsyncHyperBandScheduler does the rung arithmetic, one instance per loss; this class only routes each
trial's events to its loss's instance. Trials that `group` maps to None are never stopped (the final runs of the
reality-check protocol, say).

Choosing the next trial to start looks at the trials not yet ended only: the FIFO rule this class inherits scans
every trial of the study, twice, on each step of Tune's loop (about four steps per trial), a cost that grew with
the study (measured: about 8 ms more driver CPU per trial at 10,000 trials than at the start; docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

__all__ = ["PerLossASHA", "loss_of"]


def loss_of(trial: Any) -> str | None:
    """The rung group of a trial: its loss."""
    loss = trial.config.get("loss")
    return None if loss is None else str(loss)


class PerLossASHA(FIFOScheduler):
    def __init__(self, *, time_attr: str, metric: str, mode: str, max_t: int, grace_period: int,
                 reduction_factor: float, group: Callable[[Any], str | None] = loss_of) -> None:
        super().__init__()
        self._settings = {"time_attr": time_attr, "metric": metric, "mode": mode, "max_t": max_t,
                          "grace_period": grace_period, "reduction_factor": reduction_factor}
        self._metric, self._mode = metric, mode
        self._group = group
        self._schedulers: dict[str, AsyncHyperBandScheduler] = {}  # loss -> its rungs
        self._trial_group: dict[str, str | None] = {}  # trial id -> its loss, from on_trial_add on
        # Trials added and not ended, in the order Tune added them (a retried trial is added again, at the end,
        # as Tune moves it to the end of its list): the FIFO order of choose_trial_to_run.
        self._unended: dict[str, Any] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # set in the constructor, like the searcher's

    def rungs(self, loss: str) -> AsyncHyperBandScheduler | None:
        """The ASHA instance of `loss` (None before its first trial)."""
        return self._schedulers.get(loss)

    def _scheduler(self, trial: Any) -> AsyncHyperBandScheduler | None:
        group = self._trial_group.get(trial.trial_id)
        if group is None:
            return None
        if group not in self._schedulers:
            self._schedulers[group] = AsyncHyperBandScheduler(**self._settings)
        return self._schedulers[group]

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """FIFOScheduler's choice (the first PENDING trial, else the first PAUSED one, in the order added) among
        the trials not ended, not every trial of the study."""
        for trial_id, trial in list(self._unended.items()):
            if trial.status in (Trial.TERMINATED, Trial.ERROR):
                del self._unended[trial_id]  # ended without a scheduler callback (Tune's bookkeeping is the truth)
        for wanted in (Trial.PENDING, Trial.PAUSED):
            for trial in self._unended.values():
                if trial.status == wanted:
                    return trial
        return None

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._unended.pop(trial.trial_id, None)
        if trial.status not in (Trial.TERMINATED, Trial.ERROR):  # a restore adds the finished trials too
            self._unended[trial.trial_id] = trial
        self._trial_group[trial.trial_id] = self._group(trial)
        scheduler = self._scheduler(trial)
        if scheduler is not None:
            scheduler.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        scheduler = self._scheduler(trial)
        if scheduler is None:
            return TrialScheduler.CONTINUE
        return str(scheduler.on_trial_result(tune_controller, trial, result))

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        scheduler = self._scheduler(trial)
        if scheduler is not None:
            scheduler.on_trial_complete(tune_controller, trial, result)
        self._forget(trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        scheduler = self._scheduler(trial)
        if scheduler is not None:
            scheduler.on_trial_remove(tune_controller, trial)
        self._forget(trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        scheduler = self._scheduler(trial)
        if scheduler is not None:
            scheduler.on_trial_error(tune_controller, trial)
        self._forget(trial)  # a retried trial is added again

    def _forget(self, trial: Any) -> None:
        self._trial_group.pop(trial.trial_id, None)
        self._unended.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return "ASHA per loss: " + ", ".join(f"{loss} ({s._num_stopped} stopped)"  # noqa: SLF001
                                             for loss, s in sorted(self._schedulers.items()))
