"""The console while a study runs: one line per finished trial, and a live status of the whole study.

On a terminal the status is one line redrawn at most once a second, below the finished trials' lines; when the
output is not a terminal (CI, a log file) it is a plain line appended every `every_s` seconds (30 by default):

    status  14/28 done (9 completed, 4 stopped, 1 error)  2 running: triplet 3/8, arcface 1/8
            best recall@1 0.7012  elapsed 2m41s  ~3m12s left
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TextIO

from ray.tune import Callback

__all__ = ["ProgressPrinter"]


class ProgressPrinter(Callback):
    """`[ 12/28]   41s  3f2a91c0  multi_similarity  stopped at 2/8 epochs  best recall@1 0.6120 (epoch 2)
    (study best 0.7012)`: a trial's value is its best epoch's, the one the study ranks it by."""

    def __init__(self, *, total: int, metric: str, sign: float, max_epochs: int, stream: TextIO | None = None,
                 every_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.metric = metric
        self.sign = sign
        self.max_epochs = max_epochs  # a trial whose config samples train.epochs has its own
        self.stream = stream
        self.every_s = every_s  # between appended status lines when the output is not a terminal
        self.clock = clock
        self._reset()

    def _reset(self) -> None:
        self._best: dict[str, tuple[float, int]] = {}  # running trials only: (best value, its epoch)
        self._epochs: dict[str, int] = {}  # running trials only: last epoch
        self._done = 0
        self._outcomes: Counter[str] = Counter()  # completed / stopped / error
        self._study_best: float | None = None
        self._started = self.clock()
        self._last_status = -float("inf")
        self._drawn = False  # a status line is on the terminal's last line

    def __getstate__(self) -> dict[str, Any]:
        return {"total": self.total, "metric": self.metric, "sign": self.sign, "max_epochs": self.max_epochs,
                "every_s": self.every_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stream = None
        self.clock = time.monotonic
        self._reset()

    @property
    def _out(self) -> TextIO:
        return self.stream or sys.stdout

    @property
    def _interactive(self) -> bool:
        isatty = getattr(self._out, "isatty", None)
        return bool(isatty and isatty())

    def _print(self, text: str) -> None:
        self._clear_status()
        print(text, file=self._out, flush=True)

    def _clear_status(self) -> None:
        if self._drawn:
            self._out.write("\r\x1b[K")
            self._drawn = False

    # -- the live status ---------------------------------------------------------------------------------------

    def setup(self, **info: Any) -> None:
        self._started = self._last_status = self.clock()  # the first status once there is something to say
        self._print(f"study of {self.total} trials started; a line per finished trial, the status every "
                    f"{'second' if self._interactive else f'{self.every_s:.0f} s'}")

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        now = self.clock()
        if now - self._last_status < (1.0 if self._interactive else self.every_s):
            return
        self._last_status = now
        line = self.status(trials, now)
        if self._interactive:
            self._out.write("\r\x1b[K" + line[: 200])
            self._out.flush()
            self._drawn = True
        else:
            print(line, file=self._out, flush=True)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._clear_status()
        if self.stream is None:
            sys.stdout.flush()

    def status(self, trials: list[Any], now: float) -> str:
        """One line: trials done (by outcome) of the total, the running ones with their loss and epoch, the
        study's best value, the time elapsed and an estimate of the time left."""
        outcomes = ", ".join(f"{n} {k}" for k, n in sorted(self._outcomes.items()))
        running = [t for t in trials if getattr(t, "status", "") == "RUNNING"]
        shown = ", ".join(f"{t.config.get('loss', '?')} {self._epochs.get(t.trial_id, 0)}/"
                          f"{int(t.config.get('train.epochs', self.max_epochs))}" for t in running[:4])
        more = f" +{len(running) - 4}" if len(running) > 4 else ""
        best = "-" if self._study_best is None else f"{self._study_best:.4f}"
        elapsed = now - self._started
        left = ""
        if 0 < self._done < self.total:
            left = f"  ~{_duration(elapsed / self._done * (self.total - self._done))} left"
        return (f"status {self._done:>4}/{self.total} done ({outcomes or 'none yet'})  {len(running)} running"
                f"{': ' + shown + more if running else ''}  best {self.metric} {best}  elapsed {_duration(elapsed)}"
                f"{left}")

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        value, epoch = result.get(self.metric), result.get("epoch")
        if epoch is None:
            return
        self._epochs[trial.trial_id] = int(epoch)
        best = self._best.get(trial.trial_id)
        if value is not None and (best is None or self.sign * value > self.sign * best[0]):
            self._best[trial.trial_id] = (float(value), int(epoch))

    def _line(self, trial: Any, kind: str, outcome: str) -> None:
        self._done += 1
        self._outcomes[kind] += 1
        best = self._best.pop(trial.trial_id, None)
        self._epochs.pop(trial.trial_id, None)
        if best is not None and (self._study_best is None or self.sign * best[0] > self.sign * self._study_best):
            self._study_best = best[0]
        value = "-" if best is None else f"{best[0]:.4f} (epoch {best[1]})"
        study_best = "-" if self._study_best is None else f"{self._study_best:.4f}"
        elapsed = self.clock() - self._started
        loss = trial.config.get("loss", "?")
        self._print(f"[{self._done:>4}/{self.total}] {elapsed:5.0f}s  {trial.trial_id}  {loss:<19} {outcome:<22} "
                    f"best {self.metric} {value}  (study best {study_best})")

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        epochs = self._epochs.get(trial.trial_id, 0)
        planned = int(trial.config.get("train.epochs", self.max_epochs))
        if epochs >= planned:
            self._line(trial, "completed", f"completed {epochs} epochs")
        else:
            self._line(trial, "stopped", f"stopped at {epochs}/{planned} epochs")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._line(trial, "error", f"error at epoch {self._epochs.get(trial.trial_id, 0) + 1}")


def _duration(seconds: float) -> str:
    """91 -> '1m31s', 7300 -> '2h01m'."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
