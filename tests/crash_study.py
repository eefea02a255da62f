"""Runs a study in this process and crashes the driver after some trials finished (for the resume test).

Usage: python crash_study.py CONFIG_JSON N_TRIALS_BEFORE_CRASH MARKER
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ray.tune import Callback


class CrashAfter(Callback):
    """Raises in the driver once `n` trials have finished; a marker file keeps a restored copy quiet."""

    def __init__(self, n: int, marker: str) -> None:
        self.n, self.marker, self.done = n, marker, 0

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.done += 1

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        # Tune logs and swallows exceptions of trial-level callbacks; one raised at a step ends the driver.
        if self.done >= self.n and not os.path.exists(self.marker):
            Path(self.marker).touch()
            raise RuntimeError("simulated driver crash")


def main() -> None:
    from study.config import parse_config
    from study.runner import run_study

    doc, n, marker = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    run_study(parse_config(doc), callbacks=[CrashAfter(n, marker)], progress=False)


if __name__ == "__main__":
    main()
