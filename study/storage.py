"""Small files of a study directory (config.yaml, study.json) on a local path or a URI, written atomically."""

from __future__ import annotations

import os
import tempfile

import pyarrow.fs as pafs

from study.part_table import resolve_filesystem

__all__ = ["join", "read_text", "write_text"]


def join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"


def read_text(path: str) -> str | None:
    """The file's text, or None when it does not exist."""
    filesystem, inner = resolve_filesystem(path)
    if filesystem.get_file_info(inner).type != pafs.FileType.File:
        return None
    with filesystem.open_input_stream(inner) as stream:
        return bytes(stream.readall()).decode()


def write_text(path: str, text: str) -> None:
    """Locally: a temp file in the same directory, then os.replace (readers see the old or the new file, never a
    torn one). On object stores an upload is only visible once complete."""
    filesystem, inner = resolve_filesystem(path)
    directory = inner.rsplit("/", 1)[0]
    filesystem.create_dir(directory, recursive=True)
    if not isinstance(filesystem, pafs.LocalFileSystem):
        with filesystem.open_output_stream(inner) as stream:
            stream.write(text.encode())
        return
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(temp, inner)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
