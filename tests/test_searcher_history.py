"""The searcher's bounded history: a suggest costs the same at 50,000 trials as at 1,000, TPE's good group is the
full history's, and a study replaced while a trial ran still learns that trial."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from dml_core.mode import Mode
from search_spaces import full_comparison_space
from search_spaces.distributions import LogUniform
from study.config import Algorithm
from study.searcher import CHOOSER, OptunaSearcher, bounded

State = optuna.trial.TrialState


def _filled(n: int, direction: str = "maximize", seed: int = 0) -> optuna.Study:
    """A study of n finished trials: every third pruned after a random number of steps, the rest complete."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.RandomSampler(seed=seed))
    for number in range(n):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        steps = 4 if number % 3 else int(rng.integers(1, 4))
        for step in range(1, steps + 1):
            trial.report(float(rng.random()), step)
        if steps == 4:
            study.tell(trial, float(rng.random()))
        else:
            study.tell(trial, state=State.PRUNED)
    return study


def _brute_force_rank(trial: optuna.trial.FrozenTrial, sign: float) -> tuple[float, ...]:
    if trial.state is State.COMPLETE:
        return (1, math.inf, sign * trial.value)
    last = max(trial.intermediate_values)
    return (0, last, sign * trial.intermediate_values[last])


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_bounded_keeps_the_best_by_tpe_rank_and_the_most_recent_rest(direction):
    study = _filled(300, direction)
    assert bounded(study, lambda: optuna.samplers.RandomSampler(), history=240, keep_best=30) is study  # <= 1.25x
    fresh = bounded(study, lambda: optuna.samplers.RandomSampler(), history=200, keep_best=30)
    assert fresh is not study and len(fresh.trials) == 200
    sign = 1.0 if direction == "maximize" else -1.0
    ranked = sorted(study.trials, key=lambda t: _brute_force_rank(t, sign))
    best = {t.user_attrs.get("n", t.number) for t in ranked[-30:]}
    recent = [t.number for t in reversed(study.trials) if t.number not in best][:170]
    kept = sorted(best | set(recent))
    # The kept trials, in their order, are the originals (their parameters, states and intermediate values).
    originals = [study.trials[i] for i in kept]
    assert [(t.params, t.state, t.value, t.intermediate_values) for t in fresh.trials] == \
        [(t.params, t.state, t.value, t.intermediate_values) for t in originals]


def test_bounded_history_holds_tpes_good_group():
    """TPE's good group (gamma(n) = min(ceil(0.1 n), 25) best trials by its rank) is the same in the bounded study."""
    study = _filled(1500)
    fresh = bounded(study, lambda: optuna.samplers.RandomSampler(), history=1000, keep_best=100)
    top = sorted(study.trials, key=lambda t: _brute_force_rank(t, 1.0))[-25:]
    fresh_top = sorted(fresh.trials, key=lambda t: _brute_force_rank(t, 1.0))[-25:]
    assert [t.params for t in top] == [t.params for t in fresh_top]


def test_bounded_refuses_a_history_smaller_than_its_best():
    with pytest.raises(ValueError, match="keep_best"):
        bounded(_filled(3), lambda: optuna.samplers.RandomSampler(), history=10, keep_best=20)


def _space():
    return full_comparison_space(["triplet", "contrastive"], ["none"],
                                 loss_params={"triplet": {"margin": LogUniform(0.01, 0.5)},
                                              "contrastive": {"pos_margin": LogUniform(0.01, 0.5)}})


def _run(searcher: OptunaSearcher, start: int, count: int) -> list[dict[str, object]]:
    configs = []
    for i in range(start, start + count):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        value = sum(float(v) for k, v in config.items() if k.endswith("margin"))
        epochs = 2 if i % 2 else 1
        for epoch in range(1, epochs + 1):
            searcher.on_trial_result(f"t{i}", {"epoch": epoch, "recall@1": value * epoch})
        searcher.on_trial_complete(f"t{i}", {"epoch": epochs, "recall@1": value * epochs})
    return configs


def test_searcher_studies_stay_bounded_and_reproducible(tmp_path):
    def make() -> OptunaSearcher:
        return OptunaSearcher(_space(), metric="recall@1", mode=Mode.MAX, max_epochs=2,
                              algorithm=Algorithm.OPTUNA, seed=5, history=20)

    searcher = make()
    first = _run(searcher, 0, 120)
    for key, study in {**searcher.studies, CHOOSER: searcher.chooser}.items():
        finished = [t for t in study.trials if t.state in (State.COMPLETE, State.PRUNED)]
        assert 0 < len(finished) <= 25, key
    # Save, restore and go on: the same configurations as a searcher that never stopped.
    searcher.save(str(tmp_path / "s.pkl"))
    restored = make()
    restored.restore(str(tmp_path / "s.pkl"))
    again = make()
    assert _run(again, 0, 120) == first
    assert _run(restored, 120, 40) == _run(again, 120, 40)


def test_a_trial_open_across_a_replacement_is_learned_by_the_new_study():
    searcher = OptunaSearcher(_space(), metric="recall@1", mode=Mode.MAX, max_epochs=1, seed=1, history=10)
    searcher.suggest("open")
    loss = searcher._trials["open"][0]  # the loss it was given
    before = searcher.studies[loss]
    _run(searcher, 0, 80)
    assert searcher.studies[loss] is not before  # replaced while "open" ran
    searcher.on_trial_result("open", {"epoch": 1, "recall@1": 99.0})
    searcher.on_trial_complete("open", {"epoch": 1, "recall@1": 99.0})
    best = max(searcher.studies[loss].trials, key=lambda t: t.value if t.value is not None else -1)
    assert best.user_attrs["trial_id"] == "open" and best.value == 99.0
    chooser_best = max(searcher.chooser.trials, key=lambda t: t.value if t.value is not None else -1)
    assert chooser_best.user_attrs["trial_id"] == "open"


def test_the_config_default_is_the_searchers():
    """study.config cannot import the searcher (it loads Ray and Optuna), so the default is written twice."""
    from study.config import SearchSection
    from study.searcher import HISTORY

    assert SearchSection().history == HISTORY


def test_a_restored_searcher_keeps_the_history_it_was_saved_with(tmp_path):
    """A study started with another history (an older default, 1,000) goes on with it after a resume."""
    old = OptunaSearcher(_space(), metric="recall@1", mode=Mode.MAX, max_epochs=2, seed=2, history=1000)
    _run(old, 0, 5)
    old.save(str(tmp_path / "s.pkl"))
    restored = OptunaSearcher(_space(), metric="recall@1", mode=Mode.MAX, max_epochs=2, seed=2)
    restored.restore(str(tmp_path / "s.pkl"))
    assert restored._history == 1000
    assert _run(restored, 5, 10) == _run(old, 5, 10)
