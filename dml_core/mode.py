"""Whether a metric is to be maximised or minimised: one enum for the trainer, the study and the analysis."""

from __future__ import annotations

import enum

__all__ = ["Mode"]


class Mode(str, enum.Enum):
    """Direction of a metric; `sign` turns it into larger-is-better once, so no formula re-decides it."""

    MAX = "max"
    MIN = "min"

    @property
    def sign(self) -> float:
        return 1.0 if self is Mode.MAX else -1.0
