"""The one error type a user sees for bad input: one line, naming the key path or file."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """Bad study configuration or command-line input; the CLI prints it as one line and exits with code 2."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
