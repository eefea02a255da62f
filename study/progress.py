"""One line per finished trial on the console: a compact alternative to Ray Tune's progress tables."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ray.tune import Callback

__all__ = ["ProgressPrinter"]


class ProgressPrinter(Callback):
    """`[ 12/28]   41s  3f2a91c0 multi_similarity  stopped   2/8 epochs  recall@1 0.6120  (best so far 0.7012)`."""

    def __init__(self, *, total: int, metric: str, sign: float, stream: TextIO | None = None) -> None:
        self.total = total
        self.metric = metric
        self.sign = sign
        self.stream = stream
        self._reset()

    def _reset(self) -> None:
        self._last: dict[str, dict[str, Any]] = {}  # running trials only
        self._done = 0
        self._best: float | None = None
        self._started = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:
        return {"total": self.total, "metric": self.metric, "sign": self.sign}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stream = None
        self._reset()

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        self._last[trial.trial_id] = {"epoch": result.get("epoch"), "value": result.get(self.metric)}

    def _line(self, trial: Any, status: str) -> None:
        self._done += 1
        last = self._last.pop(trial.trial_id, {})
        value = last.get("value")
        if value is not None and (self._best is None or self.sign * value > self.sign * self._best):
            self._best = value
        loss = trial.config.get("loss", "?")
        epochs = f"{last.get('epoch') or 0} epochs"
        shown = "-" if value is None else f"{value:.4f}"
        best = "-" if self._best is None else f"{self._best:.4f}"
        elapsed = time.monotonic() - self._started
        self._print(f"[{self._done:>4}/{self.total}] {elapsed:5.0f}s  {trial.trial_id}  {loss:<19} {status:<9} "
                    f"{epochs:<10} {self.metric} {shown}  (best so far {best})")

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._line(trial, "finished")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._line(trial, "error")
