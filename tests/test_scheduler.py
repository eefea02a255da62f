"""ASHA with one set of rungs per loss, without Ray's controller: a trial is compared with its own loss only."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from study.scheduler import PerLossASHA

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


@dataclass
class FakeTrial:
    trial_id: str
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "PENDING"


def scheduler(**changes: Any) -> PerLossASHA:
    settings = dict(time_attr="epoch", metric="recall@1", mode="max", max_t=8, grace_period=1, reduction_factor=2)
    return PerLossASHA(**{**settings, **changes})


def report(s: PerLossASHA, trial: FakeTrial, epoch: int, value: float) -> str:
    return s.on_trial_result(None, trial, {"epoch": epoch, "recall@1": value})


def test_a_strong_trial_of_one_loss_never_stops_a_trial_of_another():
    s = scheduler()
    strong = [FakeTrial(f"t{i}", {"loss": "triplet"}) for i in range(4)]
    slow = FakeTrial("p0", {"loss": "proxy_anchor"})
    for trial in (*strong, slow):
        s.on_trial_add(None, trial)
    for i, trial in enumerate(strong):
        assert report(s, trial, 1, 0.8 + 0.01 * i) == CONTINUE
    # Far below every triplet value at epoch 1, yet the first proxy_anchor trial at each rung passes it.
    for epoch in range(1, 8):
        assert report(s, slow, epoch, 0.1 + 0.01 * epoch) == CONTINUE
    assert report(s, slow, 8, 0.2) == STOP  # max_t reached: done, not pruned
    assert s.rungs("triplet") is not None and s.rungs("proxy_anchor") is not None


def test_within_a_loss_asha_still_stops_the_weak():
    s = scheduler()
    best, weak = FakeTrial("a", {"loss": "triplet"}), FakeTrial("b", {"loss": "triplet"})
    other = FakeTrial("c", {"loss": "contrastive"})
    for trial in (best, weak, other):
        s.on_trial_add(None, trial)
    assert report(s, best, 1, 0.8) == CONTINUE
    assert report(s, other, 1, 0.05) == CONTINUE  # its loss's first trial at the rung
    assert report(s, weak, 1, 0.3) == STOP  # below the top half of its own loss's rung


def test_trials_without_a_group_are_never_stopped():
    s = scheduler(group=lambda trial: None if trial.config.get("final") else trial.config["loss"])
    first, final = FakeTrial("a", {"loss": "triplet"}), FakeTrial("f", {"loss": "triplet", "final": True})
    for trial in (first, final):
        s.on_trial_add(None, trial)
    assert report(s, first, 1, 0.9) == CONTINUE
    assert all(report(s, final, epoch, 0.01) == CONTINUE for epoch in range(1, 9))


def test_completion_and_removal_forget_the_trial():
    s = scheduler()
    a, b = FakeTrial("a", {"loss": "triplet"}), FakeTrial("b", {"loss": "triplet"})
    for trial in (a, b):
        s.on_trial_add(None, trial)
    report(s, a, 1, 0.5)
    s.on_trial_complete(None, a, {"epoch": 1, "recall@1": 0.5})
    s.on_trial_remove(None, b)
    assert s._trial_group == {} and s._unended == {}  # noqa: SLF001 - the per-trial bookkeeping must not grow


class FakeController:
    """What FIFOScheduler.choose_trial_to_run reads of Tune's controller: every trial, in Tune's order."""

    def __init__(self) -> None:
        self.trials: list[FakeTrial] = []

    def get_trials(self) -> list[FakeTrial]:
        return self.trials


def test_the_trial_chosen_to_run_is_fifos_choice_among_every_trial():
    """Against FIFOScheduler's scan of every trial, through random adds, starts, pauses, ends, errors and retries
    (Tune moves a retried trial to the end of its list and adds it again)."""
    rng = random.Random(0)
    s, reference, controller = scheduler(), FIFOScheduler(), FakeController()
    for step in range(3000):
        action = rng.random()
        alive = [t for t in controller.trials if t.status not in ("TERMINATED", "ERROR")]
        if action < 0.25 or not alive:
            trial = FakeTrial(f"t{step}", {"loss": rng.choice(["triplet", "contrastive"])})
            controller.trials.append(trial)
            s.on_trial_add(None, trial)
        elif action < 0.5:
            rng.choice(alive).status = rng.choice(["RUNNING", "PAUSED", "PENDING"])
        elif action < 0.7:
            trial = rng.choice(alive)
            trial.status = "TERMINATED"
            s.on_trial_complete(None, trial, {})
        elif action < 0.8:
            trial = rng.choice(alive)  # an error Tune retries: back to PENDING at the end of its list
            s.on_trial_error(None, trial)
            trial.status = "PENDING"
            controller.trials.remove(trial)
            controller.trials.append(trial)
            s.on_trial_add(None, trial)
        elif action < 0.9:
            trial = rng.choice(alive)
            trial.status = "ERROR"
            s.on_trial_error(None, trial)
        else:
            rng.choice(alive).status = "TERMINATED"  # ended with no scheduler callback
        assert s.choose_trial_to_run(None) is reference.choose_trial_to_run(controller), step
    assert len(s._unended) < len(controller.trials) / 4  # it holds the trials not ended only


def test_a_restore_adds_finished_trials_that_are_never_chosen():
    s = scheduler()
    done, waiting = FakeTrial("a", {"loss": "triplet"}, "TERMINATED"), FakeTrial("b", {"loss": "triplet"})
    for trial in (done, waiting):
        s.on_trial_add(None, trial)
    assert s.choose_trial_to_run(None) is waiting
    assert list(s._unended) == ["b"]
