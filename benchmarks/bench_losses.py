"""Loss speed and memory: ours (through make_loss) against pytorch-metric-learning 2.9 on the same batch.

For every loss PML has, forward + backward time on B=256 (64 classes x 4) and B=32 (8 classes x 4), D=128, with
identical class weights copied into PML, the speed-up (PML time / ours) and its geometric mean. Then the peak
memory of one forward + backward at B=1024 (256 classes x 4) for every loss, each case in a fresh subprocess
(its peak RSS during the call above its RSS just before it).

Goals: never slower than PML, geometric mean >= 2x, lifted_structure and triplet (all triplets) >= 10x,
memory O(B^2). Timings are medians of a few repetitions: rerun on a quiet machine for numbers to quote.

    python benchmarks/bench_losses.py            # about 2-3 minutes
    python benchmarks/bench_losses.py --quick    # B=256 only, fewer repetitions, memory of two losses
    python benchmarks/bench_losses.py --collapsed --no-memory   # every embedding equal (a collapsed model)

--collapsed times the worst case of the exact zero distances: every pair of the batch is within rounding noise of
0, so every Euclidean distance is recomputed from its differences (O(B^2 D)). Its value column then compares with
PML's cdist, which leaves noise between equal embeddings above 25 rows: differences there are PML's rounding.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dml_core.losses import LOSSES, loss_hparams, make_loss  # noqa: E402

D = 128
# (name, PML class); PML gets our hyperparameter defaults (it requires RankedList's margin and Tn).
PML_LOSSES: tuple[tuple[str, str], ...] = (
    ("contrastive", "ContrastiveLoss"), ("triplet", "TripletMarginLoss"), ("lifted_structure", "LiftedStructureLoss"),
    ("npair", "NPairsLoss"), ("multi_similarity", "MultiSimilarityLoss"), ("ranked_list", "RankedListLoss"),
    ("proxy_nca", "ProxyNCALoss"), ("proxy_anchor", "ProxyAnchorLoss"), ("soft_triple", "SoftTripleLoss"),
    ("normalized_softmax", "NormalizedSoftmaxLoss"), ("arcface", "ArcFaceLoss"), ("cosface", "CosFaceLoss"),
)
_PML_CLASS_ARGS = frozenset({"proxy_nca", "proxy_anchor", "soft_triple", "normalized_softmax", "arcface", "cosface"})
# PML's lifted structure builds a (positive pairs x negative pairs) matrix: at B=1024 about 3e9 entries (25 GB).
_PML_TOO_BIG = frozenset({("lifted_structure", 1024)})


def batch(size: int, per_class: int = 4, seed: int = 0, *,
          collapsed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(1 if collapsed else size, D, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(size) // per_class
    return x.expand(size, D).clone(), labels


def ours_loss(name: str, num_classes: int) -> torch.nn.Module:
    return make_loss(name, num_classes=num_classes, embedding_dim=D)


def pml_loss(name: str, cls_name: str, num_classes: int, ours: torch.nn.Module) -> torch.nn.Module:
    """PML's loss with our hyperparameter defaults and, for proxy losses, our class weights."""
    from pytorch_metric_learning import losses as pml_losses

    kwargs: dict[str, Any] = dict(loss_hparams(name))
    if name in _PML_CLASS_ARGS:
        kwargs.update(num_classes=num_classes, embedding_size=D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pml = getattr(pml_losses, cls_name)(**kwargs)
    proxies = getattr(ours, "proxies", None)
    if proxies is not None:
        _copy_weights(pml, name, proxies.detach(), num_classes)
    return pml


def _copy_weights(pml: torch.nn.Module, name: str, proxies: torch.Tensor, num_classes: int) -> None:
    with torch.no_grad():
        if name in ("proxy_nca", "proxy_anchor"):
            pml.proxies.copy_(proxies)
        elif name in ("normalized_softmax", "arcface", "cosface"):
            pml.W.copy_(proxies.t())
        elif name == "soft_triple":
            pml.fc.copy_(proxies.reshape(-1, D).t())


def step(loss: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    """One forward + backward; returns the loss value."""
    loss.zero_grad(set_to_none=True)
    x.grad = None
    value = loss(x, labels)
    value.backward()
    return float(value.detach())


def median_ms(fn: Callable[[], Any], reps: int, budget_s: float, clock: Callable[[], float]) -> float:
    """Median time of `fn` over up to `reps` runs (at least 3, fewer than `reps` if slow), after a warm-up run."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < reps and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return 1e3 * statistics.median(times)


def time_case(name: str, cls_name: str, size: int, reps: int, clock: Callable[[], float], *,
              collapsed: bool = False) -> tuple[float, float, float]:
    """(ours ms, PML ms, relative difference of the loss values)."""
    x, labels = batch(size, collapsed=collapsed)
    num_classes = int(labels.max()) + 1
    ours = ours_loss(name, num_classes)
    pml = pml_loss(name, cls_name, num_classes, ours)
    x = x.requires_grad_(True)
    v_ours, v_pml = step(ours, x, labels), step(pml, x, labels)
    diff = abs(v_ours - v_pml) / max(abs(v_pml), 1e-12)
    t_ours = median_ms(lambda: step(ours, x, labels), reps, 3.0, clock)
    t_pml = median_ms(lambda: step(pml, x, labels), reps, 3.0, clock)
    return t_ours, t_pml, diff


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_child(name: str, impl: str, size: int) -> None:
    """Run in a fresh process: print the peak RSS (MiB) of one forward + backward above the RSS just before it.

    The peak is reset first (Linux: `5 > /proc/self/clear_refs`), so imports' own peak does not hide the call's;
    where that is not possible, the growth of getrusage's lifetime peak is a lower bound.
    """
    x, labels = batch(size)
    num_classes = int(labels.max()) + 1
    loss = ours_loss(name, num_classes)
    if impl == "pml":
        loss = pml_loss(name, dict(PML_LOSSES)[name], num_classes, loss)
    x = x.requires_grad_(True)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before, read_peak = _status_kib("VmRSS"), lambda: _status_kib("VmHWM")
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        read_peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
    step(loss, x, labels)
    print(json.dumps({"mib": (read_peak() - before) / 1024}))


def peak_mib(name: str, impl: str, size: int, threads: int) -> str:
    if impl == "pml" and (name, size) in _PML_TOO_BIG:
        return "too big"
    cmd = [sys.executable, __file__, "--memory-child", name, impl, str(size), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return "failed"
    return f"{json.loads(done.stdout.strip().splitlines()[-1])['mib']:.0f}"


def speed_table(sizes: list[int], reps: int, clock_name: str, *, collapsed: bool = False) -> None:
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    kind = "every embedding equal" if collapsed else "random embeddings"
    print(f"forward+backward, D={D}, 4 samples per class, {kind}, median {clock_name} ms "
          f"({torch.get_num_threads()} threads)")
    print(f"{'loss':<20}{'B':>6}{'ours ms':>10}{'PML ms':>11}{'speed-up':>10}{'value diff':>12}")
    ratios: list[float] = []
    for name, cls_name in PML_LOSSES:
        for size in sizes:
            try:
                t_ours, t_pml, diff = time_case(name, cls_name, size, reps, clock, collapsed=collapsed)
            except Exception as error:  # noqa: BLE001 - a broken loss is a table row, not an abort
                print(f"{name:<20}{size:>6}   failed: {type(error).__name__}: {str(error)[:60]}")
                continue
            ratios.append(t_pml / t_ours)
            flag = "" if t_pml >= t_ours else "  SLOWER"
            print(f"{name:<20}{size:>6}{t_ours:>10.2f}{t_pml:>11.2f}{t_pml / t_ours:>9.1f}x{diff:>12.1e}{flag}")
    if ratios:
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print(f"geometric mean speed-up over {len(ratios)} cases: {geo:.1f}x (goal >= 2x); "
              f"slowest case {min(ratios):.2f}x (goal >= 1x)")


def memory_table(names: list[str], sizes: list[int], threads: int) -> None:
    print(f"\npeak memory of one forward+backward, MiB above the inputs (fresh process each, D={D}, 4 per class)")
    header = "".join(f"{'ours B=' + str(s):>14}{'PML B=' + str(s):>13}" for s in sizes)
    print(f"{'loss':<20}{header}")
    pml_names = dict(PML_LOSSES)
    for name in names:
        row = ""
        for size in sizes:
            pml = peak_mib(name, "pml", size, threads) if name in pml_names else "-"
            row += f"{peak_mib(name, 'ours', size, threads):>14}{pml:>13}"
        print(f"{name:<20}{row}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, B=256 only, memory for two losses")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the B=1024 memory table")
    parser.add_argument("--collapsed", action="store_true", help="every embedding equal (the worst case of the exact "
                        "zero distances)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or process CPU time (steadier on a busy machine; use with --threads 1)")
    parser.add_argument("--memory-child", nargs=3, metavar=("LOSS", "IMPL", "B"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        name, impl, size = args.memory_child
        memory_child(name, impl, int(size))
        return
    speed_table([256] if args.quick else [256, 32], 5 if args.quick else 30, args.clock, collapsed=args.collapsed)
    if not args.no_memory:
        names = ["triplet", "lifted_structure"] if args.quick else list(LOSSES)
        memory_table(names, [1024], args.threads)


if __name__ == "__main__":
    main()
