"""Files on a local path or a storage URI: where they are, reading them, and writes a reader never sees half done.

The one atomic writer of the project (the data set cache, the study directory and the report all use it):
- a local (or NFS) path is written under a hidden temporary name in its final directory and `os.replace`d into
  place, which is atomic on POSIX: a reader sees the old file or the new one, never part of one. The file gets
  the permissions an ordinary new file gets under the process's umask (mkstemp's 0600 would make study files
  unreadable to the rest of a team on shared storage).
- a URI (s3://, gs://, hdfs://, file://) goes through pyarrow's filesystems; object stores make an upload visible
  only once it is complete.
pyarrow is imported only for URIs, so local use needs nothing but the standard library.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Union

if TYPE_CHECKING:
    import pyarrow.fs as pafs

__all__ = ["Location", "is_uri", "join", "read_text", "resolve_filesystem", "write_atomic", "write_text"]

# A local directory or file, or a URI string for object stores and other pyarrow filesystems.
Location = Union[str, "os.PathLike[str]"]


def is_uri(location: Location) -> bool:
    return isinstance(location, str) and "://" in location


def join(location: Location, *parts: str) -> Location:
    """`location/part/...`, keeping a local path a Path and a URI a string."""
    if is_uri(location):
        return "/".join([str(location).rstrip("/"), *parts])
    return Path(location).joinpath(*parts)


def resolve_filesystem(location: Location) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path within it) of a local path or a URI."""
    import pyarrow.fs as pafs

    if is_uri(location):
        return pafs.FileSystem.from_uri(str(location))
    return pafs.LocalFileSystem(), os.path.abspath(os.fspath(location))


def _umask() -> int:
    """The process's umask. Linux shows it in /proc; elsewhere os.umask can only read it by setting it, which
    a file created by another thread in that instant would see, so that is the fallback only."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(location: Location, write: Callable[[IO[bytes]], None], *, sync: bool = False) -> Location:
    """Call `write` on a new file that replaces `location` at once when complete; returns `location`.

    `sync=True` also flushes the data to disk before the rename (for caches that must survive a power cut).
    """
    if is_uri(location):
        filesystem, inner = resolve_filesystem(location)
        filesystem.create_dir(inner.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(inner) as stream:
            write(stream)
        return location
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            if sync:
                file.flush()
                os.fsync(file.fileno())
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return location


def write_text(location: Location, text: str) -> Location:
    return write_atomic(location, lambda file: file.write(text.encode("utf-8")))


def read_text(location: Location) -> str | None:
    """The file's text, or None when it does not exist."""
    if not is_uri(location):
        try:
            return Path(location).read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
    import pyarrow.fs as pafs

    filesystem, inner = resolve_filesystem(location)
    if filesystem.get_file_info(inner).type != pafs.FileType.File:
        return None
    with filesystem.open_input_stream(inner) as stream:
        return bytes(stream.readall()).decode("utf-8")
