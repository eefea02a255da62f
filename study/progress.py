"""One line per finished trial on the console: a compact alternative to Ray Tune's progress tables."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ray.tune import Callback

__all__ = ["ProgressPrinter"]


class ProgressPrinter(Callback):
    """`[ 12/28]   41s  3f2a91c0  multi_similarity  stopped at 2/8 epochs  best recall@1 0.6120 (epoch 2)
    (study best 0.7012)`: a trial's value is its best epoch's, the one the study ranks it by."""

    def __init__(self, *, total: int, metric: str, sign: float, max_epochs: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.metric = metric
        self.sign = sign
        self.max_epochs = max_epochs  # a trial whose config samples train.epochs has its own
        self.stream = stream
        self._reset()

    def _reset(self) -> None:
        self._best: dict[str, tuple[float, int]] = {}  # running trials only: (best value, its epoch)
        self._epochs: dict[str, int] = {}  # running trials only: last epoch
        self._done = 0
        self._study_best: float | None = None
        self._started = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:
        return {"total": self.total, "metric": self.metric, "sign": self.sign, "max_epochs": self.max_epochs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stream = None
        self._reset()

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        value, epoch = result.get(self.metric), result.get("epoch")
        if epoch is None:
            return
        self._epochs[trial.trial_id] = int(epoch)
        best = self._best.get(trial.trial_id)
        if value is not None and (best is None or self.sign * value > self.sign * best[0]):
            self._best[trial.trial_id] = (float(value), int(epoch))

    def _line(self, trial: Any, outcome: str) -> None:
        self._done += 1
        best = self._best.pop(trial.trial_id, None)
        self._epochs.pop(trial.trial_id, None)
        if best is not None and (self._study_best is None or self.sign * best[0] > self.sign * self._study_best):
            self._study_best = best[0]
        value = "-" if best is None else f"{best[0]:.4f} (epoch {best[1]})"
        study_best = "-" if self._study_best is None else f"{self._study_best:.4f}"
        elapsed = time.monotonic() - self._started
        loss = trial.config.get("loss", "?")
        self._print(f"[{self._done:>4}/{self.total}] {elapsed:5.0f}s  {trial.trial_id}  {loss:<19} {outcome:<22} "
                    f"best {self.metric} {value}  (study best {study_best})")

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        epochs = self._epochs.get(trial.trial_id, 0)
        planned = int(trial.config.get("train.epochs", self.max_epochs))
        outcome = f"completed {epochs} epochs" if epochs >= planned else f"stopped at {epochs}/{planned} epochs"
        self._line(trial, outcome)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._line(trial, f"error at epoch {self._epochs.get(trial.trial_id, 0) + 1}")
