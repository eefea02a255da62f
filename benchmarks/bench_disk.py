"""Disk data sets on the CPU: one training epoch through the decoded cache against the JPEG path, and the memory of
several trials reading one cache.

    python benchmarks/bench_disk.py epoch [--images 11788 --classes 200 --trunk small_cnn --threads 2]
    python benchmarks/bench_disk.py memory [--trials 4]

`epoch` generates (once, under --root) a synthetic CUB-sized image folder with `_jpeg_tree.make_tree`: --images
JPEGs of CUB's typical sizes (500 px on the long side, landscape, portrait and square, about 85 KiB each, as CUB's
photos), half the classes for training. It then trains one epoch of `dml_core.train` (batch 32, 4 per class,
224 px crops) on the training classes through each pipeline and prints the seconds of the epoch's training (the
evaluation is timed apart), the decoded cache's one-off build, and the ratio.

`memory` starts --trials processes that map the same cache and each read every image of it; per process it reads
/proc/<pid>/smaps_rollup: RSS counts a shared page in every process that maps it, PSS divides it among them. The
cache is counted once when the PSS of the file-backed pages, summed over the processes, is one cache's size.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _jpeg_tree import make_tree, tree_stats


def _config(root: Path, trunk: str, decoded: bool, cache: Path, workers: int, size: int) -> Any:
    from dml_core.config import DatasetConfig, ModelConfig, TrainConfig

    options = {"image_size": size, "decoded_cache": decoded, "cache_dir": str(cache)}
    return TrainConfig(dataset=DatasetConfig("imagefolder", str(root), options),
                       model=ModelConfig(trunk, embedding_dim=128), loss="contrastive", miner="none", batch_size=32,
                       m_per_class=4, epochs=1, eval_batch_size=128, num_workers=workers, device="cpu",
                       precision="fp32")


def _epoch(config: Any) -> dict[str, float]:
    from dml_core.train import train

    metrics = train(config).history[0]
    return {"train_s": metrics["train_time_s"], "eval_s": metrics["eval_time_s"]}


def _data_only(root: Path, cache: Path, decoded: bool, workers: int, size: int) -> float:
    """Seconds to serve one epoch of training batches, without a model: the data path alone."""
    import torch

    from dml_core.data import load_dataset, serve_batches
    from dml_core.samplers import MPerClassSampler

    train = load_dataset("imagefolder", root=root, image_size=size, decoded_cache=decoded,
                         cache_dir=str(cache)).train
    sampler = MPerClassSampler(train.labels, 4, 32, torch.Generator().manual_seed(0))
    started = time.perf_counter()
    if decoded:
        for _ in serve_batches(train, sampler, torch.device("cpu"), torch.Generator().manual_seed(1)):
            pass
    else:
        for _ in torch.utils.data.DataLoader(train, batch_sampler=sampler, num_workers=workers):
            pass
    return time.perf_counter() - started


def run_epoch(args: argparse.Namespace) -> None:
    import torch

    from dml_core.data import load_dataset

    torch.set_num_threads(args.threads)
    root = make_tree(args.root / f"cub-like-{args.images}", images=args.images, classes=args.classes)
    cache = args.root / "cache"
    started = time.perf_counter()
    split = load_dataset("imagefolder", root=root, image_size=args.image_size, cache_dir=str(cache))
    build = time.perf_counter() - started
    stats = tree_stats(root)
    print(f"{stats.images} JPEGs, mean {stats.mean_width:.0f} x {stats.mean_height:.0f} px, {stats.mean_kib:.0f} KiB")
    print(f"{len(split.train)} training images, {len(split.test)} test images; decoded cache: "
          f"{build:.1f} s to build or open, {sum(p.stat().st_size for p in cache.rglob('*.bin')) / 2**30:.2f} GiB")
    size = args.image_size
    rows = [("decoded cache", _epoch(_config(root, args.trunk, True, cache, 0, size)),
             _data_only(root, cache, True, 0, size))]
    for workers in args.jpeg_workers:
        rows.append((f"JPEG path, {workers} loader workers",
                     _epoch(_config(root, args.trunk, False, cache, workers, size)),
                     _data_only(root, cache, False, workers, size)))
    batches = len(split.train) // 32
    print(f"\n{args.trunk}, {args.threads} threads, {batches} batches of 32 (one epoch), {size} px crops\n")
    print("| pipeline | train epoch s | images/s | eval s | data path alone: epoch s | images/s | "
          "decoded cache faster (train / data alone) |")
    print("|---|---|---|---|---|---|---|")
    base, base_data = rows[0][1]["train_s"], rows[0][2]
    for name, result, data in rows:
        print(f"| {name} | {result['train_s']:.1f} | {batches * 32 / result['train_s']:.0f} | "
              f"{result['eval_s']:.1f} | {data:.1f} | {batches * 32 / data:.0f} | "
              f"{result['train_s'] / base:.2f}x / {data / base_data:.2f}x |")


def _read_all(root: str, cache: str, ready: Any, go: Any, done: Any) -> None:
    import torch

    from dml_core.data import load_dataset

    torch.set_num_threads(1)
    split = load_dataset("imagefolder", root=root, image_size=224, cache_dir=cache)
    ready.release()
    go.wait()
    for part in (split.train, split.test):
        for first in range(0, len(part), 256):
            part.host_batch(torch.arange(first, min(first + 256, len(part))))
    done.release()
    time.sleep(3600)  # held until measured and killed


def _rollup(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) * 1024
    return fields


def run_memory(args: argparse.Namespace) -> None:
    from dml_core.data import load_dataset

    root = make_tree(args.root / f"cub-like-{args.images}", images=args.images, classes=args.classes)
    cache = args.root / "cache"
    split = load_dataset("imagefolder", root=root, image_size=224, cache_dir=str(cache))  # built before the trials
    size = split.train.images.path.stat().st_size
    context = multiprocessing.get_context("spawn")
    ready, done = context.Semaphore(0), context.Semaphore(0)
    go = context.Event()
    processes = [context.Process(target=_read_all, args=(str(root), str(cache), ready, go, done))
                 for _ in range(args.trials)]
    for process in processes:
        process.start()
    for _ in processes:
        ready.acquire()
    go.set()
    for _ in processes:
        done.acquire()
    rollups = [_rollup(p.pid) for p in processes]
    for process in processes:
        process.kill()
    gib = 2**30
    print(f"\ncache file {size / gib:.2f} GiB; {args.trials} processes, each read every image of it\n")
    print("| process | RSS GiB | of it file-backed GiB | PSS GiB | PSS of file-backed GiB | anonymous GiB |")
    print("|---|---|---|---|---|---|")
    for r in rollups:
        r["File"] = r["Rss"] - r.get("Anonymous", 0)  # smaps_rollup has no file-backed RSS line of its own
    for i, r in enumerate(rollups):
        print(f"| {i + 1} | {r['Rss'] / gib:.2f} | {r['File'] / gib:.2f} | {r['Pss'] / gib:.2f} | "
              f"{r.get('Pss_File', 0) / gib:.2f} | {r.get('Anonymous', 0) / gib:.2f} |")
    total = {k: sum(r.get(k, 0) for r in rollups) for k in ("Rss", "File", "Pss", "Pss_File", "Anonymous")}
    print(f"| sum | {total['Rss'] / gib:.2f} | {total['File'] / gib:.2f} | {total['Pss'] / gib:.2f} | "
          f"{total['Pss_File'] / gib:.2f} | {total['Anonymous'] / gib:.2f} |")
    print(f"\nfile-backed PSS summed over the processes: {total['Pss_File'] / size:.2f} x the cache file "
          f"(1.00 = counted once; the libraries' mapped files add a little; RSS counts it "
          f"{total['File'] / size:.2f} x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("epoch", "memory"))
    parser.add_argument("--root", type=Path, default=Path("/tmp/dml-bench-disk"))
    parser.add_argument("--images", type=int, default=11_788)  # CUB-200-2011
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--trunk", default="small_cnn")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jpeg-workers", type=int, nargs="+", default=[2])
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    run_epoch(args) if args.what == "epoch" else run_memory(args)


if __name__ == "__main__":
    main()
