"""Deletes trial checkpoints that no restore can need, so storage grows with the running trials, not the study.

Why not `CheckpointConfig(num_to_keep=k)`: Tune then forces an experiment snapshot whenever a trial has saved k
checkpoints since the last one, and a snapshot serialises every trial of the study. With short epochs and many
trials that is a cost per reported result that grows with the study. Here Tune keeps its own snapshot period (it
tunes it to about 5% of the run time) and this callback deletes, after each snapshot:

- every checkpoint of a trial the snapshot already knew as finished (a restore never resumes a finished trial);
- the checkpoints of a running trial older than the one the snapshot refers to (a restore resumes from that one).
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback

__all__ = ["CheckpointPruner"]

log = logging.getLogger(__name__)


class CheckpointPruner(Callback):
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._saved: dict[str, list[Any]] = {}  # trial id -> its checkpoints still on storage, oldest first
        self._finished: set[str] = set()
        self._deletable: list[Any] = []  # safe to delete: the last snapshot no longer needs them

    def __getstate__(self) -> dict[str, Any]:
        return {}  # nothing to keep in Tune's pickle: a restored run starts with what it sees next

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._reset()

    def on_checkpoint(self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any) -> None:
        self._saved.setdefault(trial.trial_id, []).append(checkpoint)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finished.add(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finished.add(trial.trial_id)

    def get_state(self) -> dict[str, Any] | None:
        """Called as Tune writes a snapshot: what that snapshot makes unnecessary becomes deletable."""
        for trial_id in list(self._saved):
            checkpoints = self._saved[trial_id]
            if trial_id in self._finished:
                self._deletable += checkpoints
                del self._saved[trial_id]
            elif len(checkpoints) > 1:
                self._deletable += checkpoints[:-1]
                self._saved[trial_id] = checkpoints[-1:]
        self._finished.clear()
        return None

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        # After the snapshot is on storage (get_state runs just before Tune writes it).
        deletable, self._deletable = self._deletable, []
        for checkpoint in deletable:
            try:
                checkpoint.filesystem.delete_dir(checkpoint.path)
            except FileNotFoundError:
                pass
            except OSError as exc:  # storage hiccups must not stop the study; the files are only wasted space
                log.warning("could not delete checkpoint %s: %s", checkpoint.path, exc)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        # Only what the last snapshot made unnecessary. Tune writes its final snapshot (get_state above) before
        # this call, so a study that finished has moved every finished trial's checkpoints there. A trial's
        # status says nothing here: on an interrupt Tune marks running trials TERMINATED in memory after that
        # snapshot listed them RUNNING, and the restore resumes them from the checkpoint it names.
        self.on_step_end(0, trials)
