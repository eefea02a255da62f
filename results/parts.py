"""A table stored as immutable Parquet part files: appended by one writer, kept few by compaction, and read
consistently while both go on.

Names. `part-<seq>-<tag>.parquet` is a part as written (the rows of one flush); `part-<lo>-<hi>-<tag>.parquet`
is a compacted part holding the rows of parts lo..hi in write order. Part numbers are dense: the writer gives a part
the number after the last one only once the part is on disk, so the files of a table always cover 0..last.

Compaction (size-tiered, as an LSM tree does). A part's level is floor(log_k(hi - lo + 1)). After each append,
while the newest k live parts have one level L, they are merged into one part of level L + 1, so the live parts
read like a base-k counter: at most k - 1 per level, (k - 1) * (1 + log_k n) for n parts written, and a row is
rewritten at most log_k n times. A merge writes the new part atomically (hidden name, then a rename) and only then
deletes its inputs; a crash in between leaves inputs that the merged part covers, which the next writer deletes.

Reading (`PartTable.snapshot`). The files present at any moment cover every part number 0..last at least once, and
a file covering a range that other files cover holds exactly their rows. A reader lists the files, drops those
that another listed file covers, and requires the rest to tile 0..last without a gap. A directory listing is not
atomic, though (ext4 and pyarrow both tear it): one that runs while a merge renames and deletes may miss both the
merged part and some of its inputs, and so show a gap, or end early, which no check of the listing can tell from
an older table. So merges run under a sequence lock: the writer sets `_merges` (a counter in a file of its own,
replaced atomically) odd before a merge writes and even after it deleted the inputs. A reader reads the counter,
lists the parts and reads the counter again: the same even value twice means no merge ran under the listing, so
it was of one moment (an append is one new file past the end: a listing that misses it is the table before it,
consistent too). Part files never change, so reading them needs no lock: one that a later merge deleted before
it was read makes the reader start again (a merge is milliseconds; it never waits long). So a reader sees the
table exactly as it was at one moment: no row twice, none missing, never older than what a read that finished
before it began saw. A writer
killed inside a merge leaves the counter odd: a reader that finds it odd for `_ODD_PATIENCE_S` falls back to the
listing checks alone (no merge runs then: a gapless listing, then a second listing in which no file straddles the
end of what was read), and the next writer sets it even when it starts.
`pandas.read_parquet(directory)` reads every table in one call too, without these checks: during the few
milliseconds of a merge's deletes it may see a merged part next to its inputs.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dml_core.files import Location, join, read_text, resolve_filesystem, write_atomic, write_text

__all__ = ["COMPACT_FANOUT", "Part", "PartTable", "live_parts", "parse_part"]

# Parts merged at once: with 8, 20k flushes leave at most 7 * 5 = 35 parts, each row rewritten at most 5 times.
COMPACT_FANOUT = 8
# Rows per row group of a merged part: large enough for fast scans, small enough to merge in bounded memory.
_ROW_GROUP_ROWS = 128 * 1024
_READ_ATTEMPTS = 50  # a reader starts again at most this often before it gives up (a merge takes milliseconds)
_MERGES_FILE = "_merges"  # the merge counter; '_' keeps it out of pyarrow's and pandas' view of the table
# How long a reader waits for an odd counter to turn even before it takes the writer for dead: far longer than a
# merge of a study's parts takes, short enough that reading a study killed inside a merge stays quick.
_ODD_PATIENCE_S = 2.0


@dataclass(frozen=True, order=True)
class Part:
    """One part file: the range of part numbers it holds (lo == hi for a part as written) and its path."""

    lo: int
    hi: int
    path: str

    @property
    def span(self) -> int:
        return self.hi - self.lo + 1

    def level(self, fanout: int = COMPACT_FANOUT) -> int:
        return int(math.floor(math.log(self.span, fanout) + 1e-9))

    def covers(self, other: Part) -> bool:
        return self.lo <= other.lo and other.hi <= self.hi and (self.lo, self.hi) != (other.lo, other.hi)


def parse_part(path: str) -> Part | None:
    """The Part a file name stands for; None for a name that is not a part's."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if not (name.startswith("part-") and name.endswith(".parquet")):
        return None
    fields = name[len("part-"):-len(".parquet")].split("-")
    try:
        if len(fields) == 2:
            return Part(int(fields[0]), int(fields[0]), path)
        if len(fields) == 3:
            return Part(int(fields[0]), int(fields[1]), path)
    except ValueError:
        return None
    return None


def live_parts(parts: Sequence[Part]) -> list[Part]:
    """The parts not covered by another one (the inputs of a merge are covered until deleted), in order."""
    ordered = sorted(parts, key=lambda p: (p.lo, -p.hi))
    live: list[Part] = []
    for part in ordered:
        if live and part.hi <= live[-1].hi:
            continue  # inside the previous live part's range (the same range twice: the first name)
        live.append(part)
    return live


def _gapless(parts: Sequence[Part]) -> bool:
    expected = 0
    for part in parts:
        if part.lo != expected:
            return False
        expected = part.hi + 1
    return True


class PartTable:
    """A Parquet dataset of part files (see the module docstring). One writer (the study driver's writer
    thread) appends and compacts; any number of readers, in any process, read snapshots."""

    def __init__(self, location: Location, schema: pa.Schema, *, fanout: int = COMPACT_FANOUT) -> None:
        if fanout < 2:
            raise ValueError(f"compaction merges at least 2 parts, got {fanout=}")
        self.location = location
        self.filesystem, self.path = resolve_filesystem(location)
        self.schema = schema
        self.fanout = fanout
        self._next_seq: int | None = None  # listed at the first append: a reader never needs it
        self._merges: int | None = None  # the merge counter, read at the writer's first merge

    @property
    def next_seq(self) -> int:
        """The number the next part gets: a restored study continues after the last part."""
        if self._next_seq is None:
            parts = self.parts()
            self._next_seq = parts[-1].hi + 1 if parts else 0
        return self._next_seq

    # -- listing ---------------------------------------------------------------------------------------------

    def _listed(self) -> list[Part]:
        info = self.filesystem.get_file_info(self.path)
        if info.type == pafs.FileType.NotFound:
            return []
        selector = pafs.FileSelector(self.path, recursive=False)
        found = (parse_part(f.path) for f in self.filesystem.get_file_info(selector) if f.type == pafs.FileType.File)
        return [p for p in found if p is not None]

    def parts(self) -> list[Part]:
        """The live parts, in write order (one listing: see `snapshot` for a consistent read)."""
        return live_parts(self._listed())

    def part_files(self) -> list[str]:
        """The paths (within `filesystem`) of the live parts, in write order."""
        return [p.path for p in self.parts()]

    # -- writing (the one writer) ----------------------------------------------------------------------------

    def append(self, rows: Sequence[dict[str, Any]]) -> Location | None:
        """Write `rows` as one new part (number `next_seq` before the call); returns its location (None for no
        rows). The number is taken only once the part is on disk, so numbers stay dense through a failed write."""
        if not rows:
            return None
        table = pa.Table.from_pylist(list(rows), schema=self.schema)
        location = join(self.location, f"part-{self.next_seq:06d}-{uuid.uuid4().hex[:8]}.parquet")
        write_atomic(location, lambda file: pq.write_table(table, file))
        self._next_seq = self.next_seq + 1
        return location

    def compact(self) -> list[Part]:
        """Merge while the newest `fanout` live parts share a level; returns the parts made (none: nothing to do)."""
        made: list[Part] = []
        while True:
            live = self.parts()
            tail = live[-self.fanout:]
            if len(tail) < self.fanout or len({p.level(self.fanout) for p in tail}) != 1:
                return made
            made.append(self.merge(tail))

    def merge(self, parts: Sequence[Part]) -> Part:
        """One part holding the rows of `parts` (neighbours, in write order), written before they are deleted."""
        ordered = sorted(parts)
        if not _gapless([Part(p.lo - ordered[0].lo, p.hi - ordered[0].lo, p.path) for p in ordered]):
            raise ValueError(f"only neighbouring parts merge, got {[(p.lo, p.hi) for p in ordered]}")
        self._set_merges(self._writer_merges() | 1)  # odd: readers of this moment start again
        try:
            return self._merge(ordered)
        finally:
            self._set_merges(self._writer_merges() + 1)  # even: the merge is whole (or failed before any delete)

    def _merge(self, ordered: Sequence[Part]) -> Part:
        lo, hi = ordered[0].lo, ordered[-1].hi
        name = f"part-{lo:06d}-{hi:06d}-{uuid.uuid4().hex[:8]}.parquet"
        location = join(self.location, name)

        def write(file: Any) -> None:
            with pq.ParquetWriter(file, self.schema) as writer:
                pending: list[pa.Table] = []
                rows = 0
                for part in ordered:  # one input in memory at a time, plus one row group
                    table = pq.read_table(part.path, filesystem=self.filesystem, schema=self.schema)
                    pending.append(table)
                    rows += table.num_rows
                    if rows >= _ROW_GROUP_ROWS:
                        writer.write_table(pa.concat_tables(pending), row_group_size=_ROW_GROUP_ROWS)
                        pending, rows = [], 0
                if pending:
                    writer.write_table(pa.concat_tables(pending), row_group_size=_ROW_GROUP_ROWS)

        write_atomic(location, write)
        self._delete(ordered)
        return Part(lo, hi, f"{self.path}/{name}")

    def remove_covered(self) -> int:
        """Delete the inputs of a merge that a crash left behind (covered by the merged part); returns how many.
        Run by a writer as it starts: it also ends the merge a crash left open in the counter."""
        listed = self._listed()
        live = set(live_parts(listed))
        covered = [p for p in listed if p not in live]
        self._delete(covered)
        if self._writer_merges() % 2:
            self._set_merges(self._writer_merges() + 1)
        return len(covered)

    # -- the merge counter (a sequence lock; see the module docstring) ---------------------------------------

    def read_merges(self) -> int:
        """The merge counter as stored (0 before the first merge): odd while a merge is under way."""
        try:
            text = read_text(join(self.location, _MERGES_FILE))
        except OSError:
            return 0
        try:
            return int(text) if text is not None else 0
        except ValueError:
            return 0

    def _writer_merges(self) -> int:
        if self._merges is None:
            self._merges = self.read_merges()
        return self._merges

    def _set_merges(self, value: int) -> None:
        write_text(join(self.location, _MERGES_FILE), str(value))
        self._merges = value

    def _delete(self, parts: Sequence[Part]) -> None:
        for part in parts:
            try:
                self.filesystem.delete_file(part.path)
            except FileNotFoundError:
                pass

    def check(self) -> None:
        """ValueError naming the first part whose footer cannot be read (a file damaged outside the study: the
        study's own writes are atomic)."""
        for path in self.part_files():
            try:
                pq.read_metadata(path, filesystem=self.filesystem)
            except (OSError, pa.ArrowInvalid) as error:
                raise ValueError(f"{path} is not a readable Parquet part ({str(error).splitlines()[0]})") from None

    # -- reading (any process) -------------------------------------------------------------------------------

    def read_part(self, path: str) -> list[dict[str, Any]]:
        """The rows of one part file (a path from `part_files`); FileNotFoundError once a merge replaced it."""
        rows: list[dict[str, Any]] = pq.read_table(path, filesystem=self.filesystem, schema=self.schema).to_pylist()
        return rows

    def snapshot(self, read: Any = None) -> tuple[list[Part], Any]:
        """(parts, read(parts)) for a set of parts that is the table at one moment (see the module docstring);
        `read` defaults to reading them into one table. Retries while merges run under it."""
        read = read or (lambda parts: self.read_parts(parts))
        previous: list[Part] | None = None
        attempts = 0
        odd_since: float | None = None
        while attempts < _READ_ATTEMPTS:
            before = self.read_merges()
            if before % 2:
                odd_since = odd_since if odd_since is not None else time.monotonic()
                if time.monotonic() - odd_since < _ODD_PATIENCE_S:
                    time.sleep(0.002)  # a merge is under way: it takes milliseconds
                    continue
                # Odd for long: a writer killed inside a merge, so no merge runs now; the listing checks suffice.
            attempts += 1
            guarded = before % 2 == 0
            parts = self.parts()
            if guarded and self.read_merges() != before:
                continue  # a merge ran under the listing
            if not _gapless(parts) and parts != previous:
                # A torn listing, or a gap for good (a part lost outside the study): the same listing twice.
                previous = parts
                time.sleep(0.005)
                continue
            try:
                value = read(parts)  # the files are immutable: once listed whole, reading them needs no lock
            except FileNotFoundError:
                continue  # a merge since the listing replaced one
            end = parts[-1].hi if parts else -1
            if guarded or not any(p.lo <= end < p.hi for p in self._listed()):
                return parts, value
        raise OSError(f"{self.location} kept changing under {_READ_ATTEMPTS} reads; is a second writer at work?")

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """Everything written so far (a consistent snapshot), optionally only some columns."""
        _, table = self.snapshot(lambda parts: self.read_parts(parts, columns))
        return table

    def read_parts(self, parts: Sequence[Part], columns: Sequence[str] | None = None) -> pa.Table:
        """The rows of `parts` (from `parts()` or a snapshot) as one table; FileNotFoundError for one replaced."""
        return self._read_files([p.path for p in parts], columns)

    def _read_files(self, files: Sequence[str], columns: Sequence[str] | None) -> pa.Table:
        if not files:
            return self.schema.empty_table().select(list(columns) if columns else self.schema.names)
        dataset = pads.dataset(list(files), schema=self.schema, format="parquet", filesystem=self.filesystem)
        return dataset.to_table(columns=list(columns) if columns else None)
