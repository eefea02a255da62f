"""Part tables: compaction keeps the parts few, and readers see the table as it was at one moment while a writer
appends and compacts, in another process, under them. The writer thread: rows off Tune's loop, in snapshots until
on disk, a storage that keeps failing stops the study."""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from results.parts import Part, PartTable, live_parts, parse_part
from study.part_writer import PartWriter, WriteFailed

SCHEMA = pa.schema([pa.field("trial_id", pa.string()), pa.field("epoch", pa.int64())])


def _rows(seq: int, n: int = 3) -> list[dict[str, object]]:
    return [{"trial_id": f"t{seq}", "epoch": i} for i in range(n)]


def _keys(table: pa.Table) -> list[tuple[str, int]]:
    return list(zip(table["trial_id"].to_pylist(), table["epoch"].to_pylist()))


def test_part_names_parse_both_ways():
    assert parse_part("/x/part-000012-ab12cd34.parquet") == Part(12, 12, "/x/part-000012-ab12cd34.parquet")
    assert parse_part("/x/part-000008-000015-ab12cd34.parquet") == Part(8, 15, "/x/part-000008-000015-ab12cd34.parquet")
    assert parse_part("/x/.part-000001-ab.parquet.tmp") is None and parse_part("/x/part-x-y.parquet") is None


def test_live_parts_drop_what_a_merged_part_covers():
    parts = [Part(0, 0, "a"), Part(1, 1, "b"), Part(0, 7, "m"), Part(8, 8, "c"), Part(2, 2, "d")]
    assert live_parts(parts) == [Part(0, 7, "m"), Part(8, 8, "c")]


@pytest.mark.parametrize("fanout", [2, 4, 8])
def test_compaction_keeps_parts_logarithmic_and_rows_in_write_order(tmp_path, fanout):
    table = PartTable(tmp_path / "t.parquet", SCHEMA, fanout=fanout)
    n = 300
    for seq in range(n):
        table.append(_rows(seq))
        table.compact()
        # A base-`fanout` counter: at most fanout - 1 parts per level.
        assert len(table.parts()) <= (fanout - 1) * (1 + math.log(seq + 1, fanout)) + 1e-9
    expected = [(f"t{s}", i) for s in range(n) for i in range(3)]
    assert _keys(table.read()) == expected
    files = sorted(p.name for p in (tmp_path / "t.parquet").glob("*.parquet"))
    assert len(files) == len(table.parts()) < 3 * fanout  # the inputs are gone: plain pandas reads it too
    assert table.read_merges() % 2 == 0 and table.read_merges() > 0  # no merge left open
    frame = pd.read_parquet(tmp_path / "t.parquet")
    assert sorted(zip(frame["trial_id"], frame["epoch"])) == sorted(expected)
    again = PartTable(tmp_path / "t.parquet", SCHEMA, fanout=fanout)
    assert again.next_seq == n  # a restored writer numbers on after the last part


def test_merge_inputs_left_by_a_crash_are_never_read_twice_and_removed_on_start(tmp_path):
    table = PartTable(tmp_path / "t.parquet", SCHEMA)
    for seq in range(3):
        table.append(_rows(seq))
    inputs = table.parts()
    merged = table.merge(inputs[:2])
    # A crash between writing the merged part and deleting its inputs: put the inputs back.
    for part in inputs[:2]:
        pq_copy = Path(part.path)
        pa.parquet.write_table(pa.Table.from_pylist(_rows(part.lo), schema=SCHEMA), pq_copy)
    assert len(list((tmp_path / "t.parquet").glob("part-*"))) == 4
    assert _keys(table.read()) == [(f"t{s}", i) for s in range(3) for i in range(3)]
    assert table.parts() == [merged, inputs[2]]
    assert table.remove_covered() == 2
    assert len(list((tmp_path / "t.parquet").glob("part-*"))) == 2


def test_a_write_that_fails_takes_no_part_number(tmp_path, monkeypatch):
    table = PartTable(tmp_path / "t.parquet", SCHEMA)
    table.append(_rows(0))
    with pytest.raises(pa.ArrowInvalid):
        table.append([{"trial_id": "t1", "epoch": "not a number"}])
    table.append(_rows(1))
    assert [(p.lo, p.hi) for p in table.parts()] == [(0, 0), (1, 1)]


def _write_and_compact(location: str, parts: int, started: multiprocessing.synchronize.Event) -> None:
    table = PartTable(location, SCHEMA, fanout=2)  # fanout 2: a merge after every other part, the most churn
    for seq in range(parts):
        table.append([{"trial_id": f"t{seq}", "epoch": seq}])
        table.compact()
        started.set()


@pytest.mark.timeout(180)
def test_a_reader_looping_while_a_writer_compacts_sees_no_row_twice_and_none_missing(tmp_path):
    """Another process appends one row per part and compacts after each; the reader's every read must be the
    rows 0..m of some m, m never going back (so: no duplicate, no hole, no row that was there and is gone)."""
    from results import load_epochs
    from results.study_dir import StudyPaths

    study = tmp_path / "study"
    location = str(StudyPaths(study).epochs)
    context = multiprocessing.get_context("spawn")
    started = context.Event()
    writer = context.Process(target=_write_and_compact, args=(location, 1500, started))
    writer.start()
    started.wait(60)
    reads, last, merges_seen = 0, -1, 0
    table = PartTable(location, SCHEMA)
    while writer.is_alive() or reads < 5:
        if reads % 2:
            epochs = sorted(table.read()["epoch"].to_pylist())
        else:
            epochs = sorted(load_epochs(study, columns=["epoch"])["epoch"].tolist())
        assert epochs == list(range(len(epochs))), f"read {reads}: duplicates or a hole"
        assert len(epochs) - 1 >= last, f"read {reads}: rows that were read before are gone"
        last = len(epochs) - 1
        merges_seen += any(p.span > 1 for p in table.parts())
        reads += 1
    writer.join()
    assert writer.exitcode == 0 and last == 1499 and reads > 20 and merges_seen


def test_a_merge_left_open_by_a_killed_writer_delays_readers_briefly_and_the_next_writer_closes_it(tmp_path):
    table = PartTable(tmp_path / "t.parquet", SCHEMA, fanout=2)
    for seq in range(4):
        table.append(_rows(seq))
        table.compact()
    (tmp_path / "t.parquet" / "_merges").write_text(str(table.read_merges() + 1))  # killed inside a merge
    started = time.monotonic()
    assert len(PartTable(tmp_path / "t.parquet", SCHEMA).read()) == 12  # read with the listing checks alone
    assert time.monotonic() - started >= 1.0  # after waiting for a merge that never ends
    writer = PartTable(tmp_path / "t.parquet", SCHEMA, fanout=2)
    writer.remove_covered()
    assert writer.read_merges() % 2 == 0
    started = time.monotonic()
    assert len(writer.read()) == 12 and time.monotonic() - started < 1.0


# -- the writer thread -----------------------------------------------------------------------------------------


def test_writer_keeps_rows_in_flight_until_they_are_on_disk(tmp_path):
    table = PartTable(tmp_path / "t.parquet", SCHEMA)
    gate = threading.Event()
    append = table.append

    def slow_append(rows):
        gate.wait(10)
        return append(rows)

    table.append = slow_append  # storage that is slow: the loop must not wait for it
    written = []
    writer = PartWriter({"epochs": table}, results_dir=str(tmp_path), written=lambda *a: written.append(a))
    writer.start()
    writer.submit("epochs", _rows(0))
    writer.submit("epochs", _rows(1))
    assert writer.in_flight() == {"epochs": _rows(0) + _rows(1)}  # returned at once, rows still pending
    assert not writer.drain(timeout_s=0.1)
    gate.set()
    assert writer.drain(timeout_s=10)
    assert writer.in_flight() == {} and len(written) == 2
    writer.close()
    assert _keys(table.read()) == [(f"t{s}", i) for s in range(2) for i in range(3)]


def test_writer_that_cannot_write_stops_the_study_with_the_path(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results directory should be")
    table = PartTable(str(blocker / "epochs.parquet"), SCHEMA)
    writer = PartWriter({"epochs": table}, results_dir=str(blocker), give_up_after_s=0.3)
    writer.start()
    writer.submit("epochs", _rows(0))
    with pytest.raises(WriteFailed, match="results"):
        writer.drain(timeout_s=30)
    assert writer.in_flight() == {"epochs": _rows(0)}  # still in every snapshot: a resume writes them
