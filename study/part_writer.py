"""The study's Parquet writes, off Tune's event loop: a writer thread with a bounded queue.

The recorder (on Tune's loop) hands each flush's rows to `submit`, which only enqueues; this thread writes them as
parts in the order they came (so a trial row never reaches disk before its epochs), hands each written part to the
MLflow mirror and compacts the table (results.parts). Crash safety is the recorder's: rows submitted but not yet on
disk are `in_flight` and go into every experiment snapshot with the recorder's buffers, so a restored study writes
them (a row both on disk and in a snapshot is written once: the recorder skips rows already on disk).

The queue is bounded: when storage falls behind by `queue_size` flushes, `submit` waits, which slows the study
rather than letting memory grow. A write that fails is retried with backoff (storage blips are normal on shared
file systems and object stores); one that keeps failing for `give_up_after_s` is raised on Tune's loop by the
next `submit` or `drain`, which ends the run: the tables are the record, a study that cannot write them must stop
(resume continues it once the storage is back).
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from results.parts import PartTable

__all__ = ["FAULT_PAUSE_ENV", "PartWriter", "WriteFailed"]

log = logging.getLogger(__name__)

FAULT_PAUSE_ENV = "DML_STUDY_FAULT_PAUSE_IN_FLUSH"
_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)

Written = Callable[[str, Any, list[dict[str, Any]]], None]


class WriteFailed(RuntimeError):
    """The study's tables could not be written for longer than the writer waits."""


def _pause_for_fault_injection(results_dir: str) -> None:
    """Fault injection (benchmarks/faults.py): with FAULT_PAUSE_ENV set to a number of seconds, each part written
    touches STUDY_DIR/.fault-in-flush and waits that long, so that a fault can be injected inside a flush."""
    pause = float(os.environ.get(FAULT_PAUSE_ENV, "0") or 0)
    if pause > 0:
        marker = os.path.join(os.path.dirname(results_dir.rstrip("/")), ".fault-in-flush")
        with open(marker, "a") as f:
            f.write(f"{time.time()}\n")
        time.sleep(pause)


class PartWriter:
    """Writes submitted rows as parts of `tables` from a thread of its own; `written(table, location, rows)` is
    called (on that thread) after each part is on disk."""

    def __init__(self, tables: Mapping[str, PartTable], *, results_dir: str, written: Written | None = None,
                 compact: bool = True, queue_size: int = 64, give_up_after_s: float = 300.0) -> None:
        if queue_size < 1:
            raise ValueError(f"the writer's queue holds at least one flush, got {queue_size=}")
        self.tables = dict(tables)
        self.results_dir = results_dir
        self.written = written
        self.compact = compact
        self.give_up_after_s = give_up_after_s
        self._queue: queue.Queue[tuple[int, str, list[dict[str, Any]]] | None] = queue.Queue(queue_size)
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._in_flight: dict[int, tuple[str, list[dict[str, Any]]]] = {}  # submitted, not on disk yet
        self._failure: BaseException | None = None  # set once a write has failed for give_up_after_s
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Delete what a crash inside a merge left (inputs the merged part covers), then start the thread."""
        for table in self.tables.values():
            table.remove_covered()
        self._thread = threading.Thread(target=self._run, name="parquet-writer", daemon=True)
        self._thread.start()

    # -- Tune's loop ------------------------------------------------------------------------------------------

    def submit(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Queue `rows` to be written as one part of `table` (waits only while the queue is full)."""
        self._raise_failure()
        if not rows:
            return
        batch = next(self._ids)
        with self._lock:
            self._in_flight[batch] = (table, rows)
        self._queue.put((batch, table, rows))

    def in_flight(self) -> dict[str, list[dict[str, Any]]]:
        """Per table, the rows submitted and not yet on disk, in submission order."""
        with self._lock:
            pending: dict[str, list[dict[str, Any]]] = {}
            for batch in sorted(self._in_flight):
                table, rows = self._in_flight[batch]
                pending.setdefault(table, []).extend(rows)
            return pending

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until everything submitted is on disk (True) or `timeout_s` passed (False)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self._raise_failure()
            with self._lock:
                if not self._in_flight:
                    return True
            if self._thread is None or not self._thread.is_alive():
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def close(self) -> None:
        """Write what is queued, then end the thread."""
        if self._thread is None:
            return
        self.drain()
        self._queue.put(None)
        self._thread.join()
        self._thread = None

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise WriteFailed(f"the study's tables in {self.results_dir} could not be written for "
                              f"{self.give_up_after_s:.0f} s: {self._failure}") from self._failure

    # -- the thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch, name, rows = item
            location = self._write(name, rows)
            if location is None:
                return  # gave up: the rows stay in flight (in every snapshot), the loop raises
            with self._lock:
                del self._in_flight[batch]
            if self.written is not None:
                self.written(name, location, rows)
            if self.compact:
                self._compact(name)

    def _write(self, name: str, rows: list[dict[str, Any]]) -> Any:
        first_failure: float | None = None
        for attempt in itertools.count():
            try:
                location = self.tables[name].append(rows)
                _pause_for_fault_injection(self.results_dir)
                return location
            except Exception as error:  # noqa: BLE001 - any storage error is retried, then raised on the loop
                first_failure = first_failure or time.monotonic()
                if time.monotonic() - first_failure >= self.give_up_after_s:
                    self._failure = error
                    return None
                log.warning("writing %s failed (%s); retrying", self.tables[name].location, error)
                time.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
        return None

    def _compact(self, name: str) -> None:
        try:
            self.tables[name].compact()
        except Exception as error:  # noqa: BLE001 - the parts stay as they are; the next append tries again
            log.warning("compacting %s failed (%s); its parts stay as they are", self.tables[name].location, error)
