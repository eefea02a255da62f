"""Datasets that serve whole batches, and the trainer's way of drawing them: the host half of the next batch is
prepared in a thread while the device works on the current one.

A `BatchSource` splits a batch in two: `host_batch(indices, pin=...)` does the CPU work (gathering pixels from
memory or a memory-mapped cache into one buffer, page-locked for a GPU) and is safe to run in a thread;
`device_batch(host, device, generator)` moves that buffer to the device and finishes the batch there (crops,
flips, normalisation), drawing its random choices from `generator` alone. In-memory data sets and the decoded disk
cache are sources; a data set without `host_batch` is read through a DataLoader instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["BatchSource", "serve_batches"]


@runtime_checkable
class BatchSource(Protocol):
    def host_batch(self, indices: torch.Tensor, *, pin: bool = False) -> Any:
        """The CPU half of the batch at (B,) int64 `indices`; thread-safe."""

    def device_batch(self, host: Any, device: torch.device,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, C, S, S) float32, labels (B,) int64) on `device`, finished from a `host_batch`."""


def serve_batches(source: BatchSource, index_batches: Iterable[torch.Tensor | list[int]], device: torch.device,
                  generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of `index_batches` in order, each host half prepared one batch ahead in a worker thread.

    The index batches are drawn here, in the caller's thread and order; on an accelerator the device halves run
    here too (so every CUDA launch keeps one order). Random draws come from `generator` alone, in batch order: a
    seeded run serves the same batches with or without the look-ahead.
    """
    pin = device.type == "cuda"
    # On the CPU the "device" half is CPU work too: the worker does it as well, so the augmentation of the next
    # batch overlaps the model's step on this one. It draws from `generator` alone, one batch after another in
    # submission order (one worker), so the draws are those of the serial order.
    whole = device.type == "cpu"
    indices = iter(index_batches)

    def prepare(batch: torch.Tensor) -> Any:
        host = source.host_batch(batch, pin=pin)
        return source.device_batch(host, device, generator) if whole else host

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="host-batch") as pool:

        def submit() -> Future[Any] | None:
            batch = next(indices, None)
            return None if batch is None else pool.submit(prepare, torch.as_tensor(batch))

        pending = submit()
        while pending is not None:
            prepared = pending.result()
            pending = submit()
            yield prepared if whole else source.device_batch(prepared, device, generator)
