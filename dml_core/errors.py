"""The error for bad configuration, carrying the key path of the value it refuses.

Raised by every config object (dml_core's TrainConfig, the search space, the study config) so that an error is
reported against the exact key a user wrote, `train.lr` or `search.space.triplet.margin`, without parsing
message text. It is a ValueError: code that only wants to know that a value is bad catches that.
"""

from __future__ import annotations

import enum
from typing import TypeVar

__all__ = ["ConfigError", "enum_value"]

E = TypeVar("E", bound=enum.Enum)


class ConfigError(ValueError):
    """`path: message` in one line; `path` is the dotted key path ("" when the message names its own subject)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message

    def within(self, prefix: str) -> ConfigError:
        """The same error one level down: `ConfigError("lr", m).within("train")` is `train.lr: m`."""
        return ConfigError(f"{prefix}.{self.path}" if self.path else prefix, self.message)

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str]]:
        # Ray ships exceptions between processes by pickle; the default would call __init__(full text).
        return ConfigError, (self.path, self.message)


def enum_value(kind: type[E], value: object, path: str) -> E:
    """`kind(value)`, or a ConfigError at `path` listing the valid values."""
    try:
        return kind(value)
    except ValueError:
        valid = ", ".join(str(m.value) for m in kind)
        raise ConfigError(path, f"expected one of {valid}, got {value!r}") from None
