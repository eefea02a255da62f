"""Runs a study in this process and kills the driver with SIGKILL once a final run of the reality check has
reported an epoch (for the resume test): no cleanup, no final snapshot, as a node failure or `kill -9` would.

Usage: python kill_study.py CONFIG_JSON MARKER
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ray.tune import Callback


class KillInFinalPhase(Callback):
    """SIGKILLs this process at the first result of a final run; a marker file keeps a restored copy quiet."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        if trial.config.get("phase") == "final" and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    from study.config import parse_config
    from study.runner import run_study

    doc, marker = json.loads(sys.argv[1]), sys.argv[2]
    run_study(parse_config(doc), callbacks=[KillInFinalPhase(marker)], progress=False)


if __name__ == "__main__":
    main()
