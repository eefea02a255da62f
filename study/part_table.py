"""An append-only Parquet dataset: a directory of immutable part files, each written atomically.

Why parts and not one file: a study may report millions of epoch rows; rewriting one file on every flush would
cost the driver more per result as the study grows. Appending a part costs only the rows it holds, and
`pandas.read_parquet(directory)` still reads the whole table in one call. Every part has the schema fixed at the
study's start, so dataset discovery (which takes its schema from the first file) never drops a column.

Atomicity: on a local or NFS path a part is written under a hidden name ('.'-prefixed, which Parquet readers
skip) and `os.replace`d into place; on object stores (s3://, gs://) an upload becomes visible only when complete.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["PartTable", "resolve_filesystem"]


def resolve_filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path within it) for a local path or a URI (s3://, gs://, file://, hdfs://)."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


class PartTable:
    """Rows in, part files out. Not thread-safe: the study driver owns it."""

    def __init__(self, path: str, schema: pa.Schema, *, filesystem: pafs.FileSystem | None = None) -> None:
        if filesystem is None:
            filesystem, path = resolve_filesystem(path)
        self.filesystem = filesystem
        self.path = path
        self.schema = schema
        self._local = isinstance(filesystem, pafs.LocalFileSystem)
        self._seq = self._next_sequence()

    def _next_sequence(self) -> int:
        """Parts are numbered in write order; a restored study continues after the last one."""
        return len(self.part_files())

    def part_files(self) -> list[str]:
        info = self.filesystem.get_file_info(self.path)
        if info.type == pafs.FileType.NotFound:
            return []
        selector = pafs.FileSelector(self.path, recursive=False)
        names = [f.path for f in self.filesystem.get_file_info(selector)
                 if f.type == pafs.FileType.File and f.base_name.startswith("part-")
                 and f.base_name.endswith(".parquet")]
        return sorted(names)

    def append(self, rows: Sequence[dict[str, Any]]) -> str | None:
        """Write `rows` as one new part; returns its path (None for no rows)."""
        if not rows:
            return None
        table = pa.Table.from_pylist(list(rows), schema=self.schema)
        name = f"part-{self._seq:06d}-{uuid.uuid4().hex[:8]}.parquet"
        self._seq += 1
        self.filesystem.create_dir(self.path, recursive=True)
        final = f"{self.path}/{name}"
        if self._local:
            temp = f"{self.path}/.{name}.tmp"
            try:
                pq.write_table(table, temp, filesystem=self.filesystem)
                os.replace(temp, final)
            finally:
                if os.path.exists(temp):
                    os.remove(temp)
        else:
            pq.write_table(table, final, filesystem=self.filesystem)
        return final

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """Everything written so far (for rebuilding state on restore), optionally only some columns."""
        files = self.part_files()
        if not files:
            return self.schema.empty_table().select(list(columns) if columns else self.schema.names)
        dataset = pads.dataset(files, schema=self.schema, format="parquet", filesystem=self.filesystem)
        return dataset.to_table(columns=list(columns) if columns else None)
