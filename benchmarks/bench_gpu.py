"""One-shot GPU benchmark (issue 10): how close training from disk comes to the trunk's own speed, how long an
evaluation takes, and what packing several trials on one GPU gives. Estimated at 4-5 minutes on one H100 (the
JPEGs' generation included); the wrapper stops it at 8.

    benchmarks/gpu_check.sh                       # the full form under a hard 8-minute limit -> $OUT/bench_gpu.md
    python3 benchmarks/bench_gpu.py --out bench_gpu.md [--device cuda:0] [--parts 1,2,3,4]
    python3 benchmarks/bench_gpu.py --reduced     # the CPU form the tests run: tiny sizes, a few seconds a part

Needs only torch, torchvision, numpy and Pillow, and no torch API newer than 2.11: Ray, Optuna and MLflow are
never imported, nor is faiss on CUDA (on the CPU, train()'s evaluation uses dml_core's faiss k-NN backend).
`--out FILE` writes the table as markdown and the raw numbers beside it (FILE with .json), rewritten after every
part, so a run stopped by its time limit still leaves what it measured. The goals' measurements run first; (2) at
batch sizes other than 32 runs last (the table lists rows by part). A part that fails is a row saying so, and the
next part runs; the exit status is then 1 (124 when stopped by SIGTERM).

The parts, each with the model (ResNet-50 + a 128-d head, from scratch), batch and precision (bf16 autocast;
fp16 where the GPU has no bf16) of a trial, and channels-last on CUDA as `dml_core.train` uses them:
 1. trunk bound: forward + backward + Adam step on random images already on the GPU, batch 32 and 128, no
    per-step synchronisation; images/s over `--seconds` after a warm-up. The ceiling for (2).
 2. `train()` on a generated CUB-sized image folder (11,788 JPEGs of CUB's sizes in 200 classes, made by a pool
    of one process per CPU and kept in --work-dir for reruns; the first 100 classes, 5,864 images, train, the
    rest is evaluated after each epoch): two epochs of a full pass each, the first a warm-up; images/s of the second
    epoch's training (its `train_time_s`: evaluation excluded), as a fraction of (1). Once through the decoded
    cache (augmented on the GPU), once through the JPEG path (DataLoader, one worker per CPU). The cache's one-off
    build (decode + resize of every image, written to disk) is timed apart.
 3. evaluation: `retrieval_metrics(backend="torch")` of 60,502 x 128 embeddings on the GPU in 11,316 classes of
    2 or more images, 5.3 on average (SOP's test set), median of 3; and `embed` (the trainer's evaluation pass)
    over the test classes of (2) from the decoded cache, whose images/s is extrapolated to SOP's 60,502 images
    (embedding them all at 224 px would take a minute or more of this run; the rate is what matters).
 4. packing: 1, 2 and 4 plain processes (multiprocessing spawn, each with its own CUDA context: what Ray's
    `gpus_per_trial` 1, 0.5 and 0.25 would place; Ray's fraction only schedules) train as (2) from the one decoded
    cache, start together after a warm-up and train for `--packed-seconds`; total and per-process images/s. Whether
    CUDA MPS was running is detected and printed (with MPS off, the processes' kernels time-slice the GPU).

Goals (judged in the full form on CUDA only): (2) decoded cache >= 80% of (1) at batch 32; (3) retrieval_metrics
of 60k embeddings < 2 s; (4) four packed trials >= 2x the images/s of one.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(Path(__file__).resolve().parent)):  # the repository (dml_core) and _jpeg_tree
    if _path not in sys.path:
        sys.path.insert(0, _path)

# Imported after the paths above are set: a plain checkout run as a script has neither on its path.
from _jpeg_tree import make_tree, tree_stats

from dml_core.config import DatasetConfig, ModelConfig, Precision, TrainConfig
from dml_core.data import load_dataset
from dml_core.files import write_text
from dml_core.metrics import retrieval_metrics
from dml_core.models import make_model
from dml_core.train import TrainingRun, _autocast, _autocast_dtype, embed, train

GOAL_TRAIN_FRACTION = 0.8  # (2): train() through the decoded cache vs the trunk bound, at batch 32
GOAL_EVAL_S = 2.0  # (3): retrieval_metrics of SOP's 60k test embeddings
GOAL_PACKED_SPEEDUP = 2.0  # (4): four packed trials vs one
SOP_TEST_IMAGES, SOP_TEST_CLASSES = 60_502, 11_316
CUB_IMAGES, CUB_CLASSES = 11_788, 200
PARTS = ("1", "2", "3", "4")


@dataclass(frozen=True)
class Plan:
    """Every size and time budget of one run; `full_plan` and `reduced_plan` are the two forms."""

    form: str  # "full" (a GPU, the sizes) or "reduced" (the CPU form the tests run)
    device: str
    precision: str  # "bf16" | "fp16" | "fp32": autocast dtype of the trunk, as TrainConfig.precision
    trunk: str = "resnet50"
    image_size: int = 224
    embedding_dim: int = 128  # the reality check's
    batch_sizes: tuple[int, ...] = (32, 128)
    m_per_class: int = 4
    eval_batch_size: int = 512  # TrainConfig's default
    # (1): steps before timing (cuDNN/cuBLAS set-up, allocator warm-up), then seconds of steady state.
    warmup_steps: int = 10
    seconds: float = 6.0
    # (2): the data set; `scale` shrinks CUB's 500 px long side. The first `train_epochs - 1` epochs are warm-up.
    images: int = CUB_IMAGES
    classes: int = CUB_CLASSES
    scale: float = 1.0
    train_epochs: int = 2
    jpeg_workers: int = field(default_factory=lambda: min(16, os.cpu_count() or 1))
    # (3)
    knn_n: int = SOP_TEST_IMAGES
    knn_classes: int = SOP_TEST_CLASSES
    knn_repeats: int = 3
    # (4): processes packed at once; each trains `packed_chunk` steps per step_epoch call.
    packed: tuple[int, ...] = (1, 2, 4)
    packed_batch: int = 32
    packed_seconds: float = 12.0
    packed_chunk: int = 10
    packed_start_timeout_s: float = 180.0  # spawn + imports + CUDA context + data + model + warm-up, per round
    # CPU threads of torch per process; None: torch's default in the parent, CPUs / processes when packed. The
    # reduced form uses 1: a CPU shared with other jobs makes OpenMP's threads wait on each other for seconds.
    torch_threads: int | None = None
    work_dir: Path = Path(tempfile.gettempdir()) / "dml-bench-gpu"

    def __post_init__(self) -> None:
        if self.precision not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be bf16, fp16 or fp32, got precision={self.precision!r}")
        for name in ("batch_sizes", "packed"):
            values = getattr(self, name)
            if not values or any(v < 1 for v in values):
                raise ValueError(f"{name} must be positive integers, got {name}={values!r}")
        if any(b % self.m_per_class for b in (*self.batch_sizes, self.packed_batch)):
            raise ValueError(f"batch sizes must be multiples of m_per_class={self.m_per_class}")
        if self.knn_n < 2 * self.knn_classes:
            raise ValueError(f"knn_n must be at least 2 x knn_classes (every class has 2 or more), got "
                             f"knn_n={self.knn_n}, knn_classes={self.knn_classes}")
        if self.train_epochs < 1:
            raise ValueError(f"train_epochs must be >= 1, got train_epochs={self.train_epochs}")

    @property
    def tree(self) -> Path:
        return self.work_dir / f"jpegs-{self.images}-{self.classes}-{self.scale:g}"

    @property
    def cache(self) -> Path:
        return self.work_dir / "cache"


def full_plan(device: str, precision: str) -> Plan:
    return Plan(form="full", device=device, precision=precision)


def reduced_plan(device: str, precision: str) -> Plan:
    """Seconds per part on a 2-core CPU: small_cnn at 32 px, 96 JPEGs of 100 px, 2 packed processes."""
    return Plan(form="reduced", device=device, precision=precision, trunk="small_cnn", image_size=32,
                embedding_dim=64, batch_sizes=(16,), eval_batch_size=64, warmup_steps=2, seconds=1.0, images=96,
                classes=8, scale=0.2, jpeg_workers=1, knn_n=3000, knn_classes=600, knn_repeats=2, packed=(1, 2),
                packed_batch=16, packed_seconds=1.5, packed_chunk=2, packed_start_timeout_s=120.0, torch_threads=1)


# ---------------------------------------------------------------------------------------------------------------
# The report: rows for the table, raw numbers for the JSON, both rewritten after every part.


@dataclass
class Row:
    part: str
    what: str
    value: str
    goal: str = ""
    met: bool | None = None  # None: no goal, or not judged (reduced form, CPU)


@dataclass
class Report:
    plan: Plan
    out: Path | None
    environment: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def judged(self) -> bool:
        return self.plan.form == "full" and self.plan.device.startswith("cuda")

    def add(self, part: str, what: str, value: str, goal: str = "", met: bool | None = None) -> None:
        self.rows.append(Row(part, what, value, goal, met if self.judged else None))
        judged = self.rows[-1].met
        print(f"  ({part}) {what}: {value}" + (f"   [goal {goal}: {_verdict(judged)}]" if goal else ""), flush=True)

    def markdown(self) -> str:
        env = self.environment
        lines = ["# GPU benchmark (benchmarks/bench_gpu.py)", ""]
        lines += [f"- {key}: {value}" for key, value in env.items()]
        plan = self.plan
        channels_last = "on" if plan.device.startswith("cuda") else "off"
        lines.append(f"- form: {plan.form}; trunk {plan.trunk} at {plan.image_size} px, {plan.embedding_dim}-d "
                     f"head, precision {plan.precision}, channels-last {channels_last}")
        lines += ["", "| part | measurement | value | goal | met |", "|---|---|---|---|---|"]
        for row in sorted(self.rows, key=lambda r: r.part[:1] if r.part[:1] in PARTS else "0"):
            met = "" if not row.goal else ("not judged" if row.met is None else ("yes" if row.met else "**no**"))
            lines.append(f"| {row.part} | {row.what} | {row.value} | {row.goal} | {met} |")
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        if self.out is None:
            return
        write_text(self.out, self.markdown())
        raw = {"plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.plan).items()},
               "environment": self.environment, "parts": self.raw, "notes": self.notes, "failed": self.failed}
        write_text(self.out.with_suffix(".json"), json.dumps(raw, indent=2, default=str) + "\n")


def _verdict(met: bool | None) -> str:
    return "not judged" if met is None else ("met" if met else "MISSED")


class Interrupted(BaseException):
    """SIGTERM (the wrapper's time limit): unwind, write what was measured, end the child processes."""


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(f"stopped by signal {signum}")


# ---------------------------------------------------------------------------------------------------------------
# Device, precision and timing helpers.


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The trainer's own choice for `precision`, so the trunk bound runs what train() runs."""
    return _autocast_dtype(Precision(precision), device)


def autocast(device: torch.device, precision: str) -> Any:
    return _autocast(device, autocast_dtype(precision, device))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step: Callable[[], None], *, warmup: int, seconds: float, device: torch.device) -> tuple[int, float]:
    """(steps, seconds): `step` run `warmup` times, then until `seconds` have passed. The host may queue ahead
    of the GPU, so the clock stops only after a synchronize: the time is the GPU's for the steps counted."""
    for _ in range(warmup):
        step()
    synchronize(device)
    started = time.perf_counter()
    steps = 0
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    synchronize(device)
    return steps, time.perf_counter() - started


def mps_status() -> dict[str, Any]:
    """Whether a CUDA MPS control daemon or server serves this machine, with the evidence found: its pipe
    directory's control socket, its processes, or an MPS server among nvidia-smi's compute processes."""
    evidence: list[str] = []
    pipe = Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))
    if (pipe / "control").exists():
        evidence.append(f"control pipe {pipe / 'control'}")
    names = set()
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            names.add(comm.read_text().strip())
        except OSError:
            continue
    evidence += [f"process {name}" for name in sorted(names) if name.startswith("nvidia-cuda-mps")]
    compute_mode = None
    try:
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20, check=False).stdout
        if "nvidia-cuda-mps-server" in smi or " M+C " in smi:
            evidence.append("MPS server among nvidia-smi's processes")
        compute_mode = subprocess.run(["nvidia-smi", "--query-gpu=compute_mode", "--format=csv,noheader"],
                                      capture_output=True, text=True, timeout=20,
                                      check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"on": bool(evidence), "evidence": evidence, "compute_mode": compute_mode}


def describe_environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "torchvision": torchvision.__version__, "CPUs": os.cpu_count(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["GPU"] = f"{torch.cuda.get_device_name(device)} ({props.total_memory / 2**30:.0f} GiB, " \
                     f"compute capability {props.major}.{props.minor})"
        cudnn = torch.backends.cudnn.version()  # type: ignore[no-untyped-call]
        env["CUDA / cuDNN"] = f"{torch.version.cuda} / {cudnn}"
        env["bf16 supported"] = torch.cuda.is_bf16_supported()
        mps = mps_status()
        env["CUDA MPS"] = ("on: " + "; ".join(mps["evidence"])) if mps["on"] else "off (no control pipe, daemon or " \
                                                                                   "server found)"
        env["compute mode"] = mps["compute_mode"]
    return env


# ---------------------------------------------------------------------------------------------------------------
# Part 1: the trunk bound.


def trunk_images_per_s(plan: Plan, batch_size: int, device: torch.device) -> float:
    """Forward + backward + Adam step of the trial's model on one random batch kept on the device."""
    torch.manual_seed(0)
    model = make_model(plan.trunk, embedding_dim=plan.embedding_dim).to(device).train()
    images = torch.randn(batch_size, 3, plan.image_size, plan.image_size, device=device)
    if device.type == "cuda":  # as the trainer: channels-last model and input on CUDA only
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)

    def step() -> None:
        with autocast(device, plan.precision):
            embeddings = model(images)  # (B, D)
        # A linear loss: its backward costs what a metric loss's does through the trunk, with no sync (.item()).
        loss = embeddings.float()[:, 0].sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    steps, seconds = timed_steps(step, warmup=plan.warmup_steps, seconds=plan.seconds, device=device)
    return steps * batch_size / seconds


def part_trunk(plan: Plan, device: torch.device, report: Report) -> None:
    results = {}
    for batch in plan.batch_sizes:
        rate = trunk_images_per_s(plan, batch, device)
        results[batch] = rate
        report.add("1", f"trunk bound, batch {batch}: images/s", f"{rate:,.0f}")
    report.raw["trunk_images_per_s"] = results
    report.notes.append(f"(1) {plan.warmup_steps} warm-up steps, then {plan.seconds:g} s per batch size; cuDNN's "
                        f"benchmark mode left at torch's default (off), as dml_core.train leaves it.")


# ---------------------------------------------------------------------------------------------------------------
# Part 2: train() from disk; the decoded cache built first (also used by parts 3 and 4).


def dataset_options(plan: Plan, *, decoded: bool) -> dict[str, Any]:
    return {"image_size": plan.image_size, "decoded_cache": decoded, "cache_dir": str(plan.cache)}


def train_config(plan: Plan, batch_size: int, *, decoded: bool, steps: int, epochs: int) -> TrainConfig:
    """The trial: contrastive loss, no miner (the loss's cost is small next to the trunk's either way)."""
    return TrainConfig(dataset=DatasetConfig("imagefolder", str(plan.tree), dataset_options(plan, decoded=decoded)),
                       model=ModelConfig(plan.trunk, embedding_dim=plan.embedding_dim), loss="contrastive",
                       miner="none", batch_size=batch_size, m_per_class=plan.m_per_class, epochs=epochs,
                       batches_per_epoch=steps, eval_batch_size=plan.eval_batch_size, device=plan.device,
                       precision=plan.precision, num_workers=0 if decoded else plan.jpeg_workers)


def build_cache(plan: Plan, report: Report) -> int:
    """Build the decoded cache from scratch (timed: it is a one-off per node); returns the training images."""
    shutil.rmtree(plan.cache, ignore_errors=True)
    started = time.perf_counter()
    split = load_dataset("imagefolder", root=plan.tree, **dataset_options(plan, decoded=True))
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in plan.cache.rglob("*.bin"))
    report.raw["cache"] = {"build_s": seconds, "bytes": size, "train_images": len(split.train),
                           "test_images": len(split.test)}
    report.add("2", f"decoded cache build, one-off ({len(split.train) + len(split.test):,} images, "
                    f"{size / 2**30:.2f} GiB): s", f"{seconds:.1f}")
    return len(split.train)


def train_images_per_s(plan: Plan, batch_size: int, *, decoded: bool, train_images: int) -> dict[str, Any]:
    steps = train_images // batch_size  # one pass over the training classes, as the sampler's default
    summary = train(train_config(plan, batch_size, decoded=decoded, steps=steps, epochs=plan.train_epochs))
    epochs = [{"train_time_s": m["train_time_s"], "eval_time_s": m["eval_time_s"],
               "images_per_s": steps * batch_size / m["train_time_s"]} for m in summary.history]
    return {"steps": steps, "epochs": epochs, "images_per_s": epochs[-1]["images_per_s"]}


def goal_batch(plan: Plan) -> int:
    """The batch size goal (2) is judged at: 32, else the smallest measured."""
    return 32 if 32 in plan.batch_sizes else min(plan.batch_sizes)


def part_train(plan: Plan, report: Report, train_images: int, batches: tuple[int, ...]) -> None:
    bound = report.raw.get("trunk_images_per_s", {})
    results: dict[str, Any] = report.raw.setdefault("train", {})
    if not results:
        report.notes.append(f"(2) an epoch is {train_images:,} // batch steps over the training classes, each "
                            f"followed by the evaluation of the test classes (not timed in the rate); the warm-up "
                            f"epochs' rates are in the JSON.")
    for batch in batches:
        for decoded in (True, False):
            path = "decoded cache" if decoded else f"JPEG path ({plan.jpeg_workers} workers)"
            result = train_images_per_s(plan, batch, decoded=decoded, train_images=train_images)
            results[f"{'decoded' if decoded else 'jpeg'}_{batch}"] = result
            rate = result["images_per_s"]
            what = f"train(), {path}, batch {batch}: images/s (epoch {plan.train_epochs} of {plan.train_epochs})"
            if batch not in bound:
                report.add("2", what, f"{rate:,.0f}")
                continue
            fraction = rate / bound[batch]
            value = f"{rate:,.0f} ({fraction:.0%} of (1))"
            if decoded and batch == goal_batch(plan):
                report.add("2", what, value, f">= {GOAL_TRAIN_FRACTION:.0%} of (1)", fraction >= GOAL_TRAIN_FRACTION)
            else:
                report.add("2", what, value)


# ---------------------------------------------------------------------------------------------------------------
# Part 3: evaluation.


def sop_like(plan: Plan, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 128) L2-normalised embeddings on `device` and (N,) labels: every class has 2 images, the rest are
    spread at random (SOP's test classes hold 2-12, 5.3 on average), each class a cluster around a random centre."""
    generator = torch.Generator().manual_seed(0)
    n, classes = plan.knn_n, plan.knn_classes
    labels = torch.cat([torch.arange(classes).repeat(2), torch.randint(0, classes, (n - 2 * classes,),
                                                                       generator=generator)])
    labels = labels[torch.randperm(n, generator=generator)]
    centres = torch.randn(classes, 128, generator=generator)
    embeddings = centres[labels] + 0.7 * torch.randn(n, 128, generator=generator)
    return torch.nn.functional.normalize(embeddings, dim=1).to(device), labels


def metrics_seconds(plan: Plan, device: torch.device) -> list[float]:
    embeddings, labels = sop_like(plan, device)
    retrieval_metrics(embeddings[:2000], labels[:2000], backend="torch")  # warm-up: kernels, allocator
    times = []
    for _ in range(plan.knn_repeats):
        synchronize(device)
        started = time.perf_counter()
        retrieval_metrics(embeddings, labels, backend="torch")  # returns host numbers: synchronised inside
        times.append(time.perf_counter() - started)
    return times


def embed_images_per_s(plan: Plan, device: torch.device) -> tuple[float, int]:
    """The trainer's evaluation pass (`embed`) over the test classes, from the decoded cache."""
    test = load_dataset("imagefolder", root=plan.tree, **dataset_options(plan, decoded=True)).test
    torch.manual_seed(0)
    model = make_model(plan.trunk, embedding_dim=plan.embedding_dim).to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    dtype = autocast_dtype(plan.precision, device)
    warm = test.select(torch.arange(min(len(test), 2 * plan.eval_batch_size)), train=False)
    embed(model, warm, batch_size=plan.eval_batch_size, device=device, autocast_dtype=dtype)
    synchronize(device)
    started = time.perf_counter()
    embed(model, test, batch_size=plan.eval_batch_size, device=device, autocast_dtype=dtype)
    synchronize(device)
    return len(test) / (time.perf_counter() - started), len(test)


def part_eval(plan: Plan, device: torch.device, report: Report) -> None:
    times = metrics_seconds(plan, device)
    seconds = statistics.median(times)
    report.raw["eval"] = {"metrics_s": times, "n": plan.knn_n, "classes": plan.knn_classes}
    report.add("3", f"retrieval_metrics, {plan.knn_n:,} x 128 in {plan.knn_classes:,} classes, torch k-NN: s "
                    f"(median of {len(times)})", f"{seconds:.2f}", f"< {GOAL_EVAL_S:g} s", seconds < GOAL_EVAL_S)
    rate, measured = embed_images_per_s(plan, device)
    extrapolated = SOP_TEST_IMAGES / rate
    report.raw["eval"].update(embed_images_per_s=rate, embed_measured_images=measured,
                              embed_sop_s_extrapolated=extrapolated)
    report.add("3", f"embed (eval pass, decoded cache, batch {plan.eval_batch_size}): images/s, "
                    f"measured on {measured:,} images", f"{rate:,.0f}")
    report.add("3", f"embed {SOP_TEST_IMAGES:,} images (SOP test) + retrieval_metrics: s, embedding extrapolated",
               f"{extrapolated:.1f} + {seconds:.2f} = {extrapolated + seconds:.1f}")


# ---------------------------------------------------------------------------------------------------------------
# Part 4: trials packed on one device as plain processes.


def _packed_worker(plan: Plan, rank: int, threads: int, barrier: Any, results: Any) -> None:
    """One packed trial: set up and warm up, wait for the others, train for plan.packed_seconds."""
    try:
        torch.set_num_threads(threads)
        device = torch.device(plan.device)
        config = train_config(plan, plan.packed_batch, decoded=True, steps=plan.packed_chunk, epochs=1)
        split = load_dataset("imagefolder", root=plan.tree, **dataset_options(plan, decoded=True))
        run = TrainingRun(config.replace(seed=rank), split.train, device)
        for epoch in range(1, 1 + max(1, math.ceil(plan.warmup_steps / plan.packed_chunk))):
            run.step_epoch(epoch)
        synchronize(device)
        barrier.wait(timeout=plan.packed_start_timeout_s)
        started, steps, epoch = time.perf_counter(), 0, 1000
        while time.perf_counter() - started < plan.packed_seconds:
            epoch += 1
            run.step_epoch(epoch)  # each step ends in loss.item(): the device has caught up
            steps += plan.packed_chunk
        seconds = time.perf_counter() - started
        results.put({"rank": rank, "images": steps * plan.packed_batch, "seconds": seconds})
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which names it in the table
        barrier.abort()
        results.put({"rank": rank, "error": f"{type(exc).__name__}: {exc}"})


def packed_threads(plan: Plan, count: int) -> int:
    return plan.torch_threads or max(1, (os.cpu_count() or 1) // count)  # as Ray shares a node's CPUs


def packed_run(plan: Plan, count: int) -> list[dict[str, Any]]:
    """`count` spawned processes (a fresh CUDA context each); their results, in rank order."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(count), context.Queue()
    threads = packed_threads(plan, count)
    processes = [context.Process(target=_packed_worker, args=(plan, rank, threads, barrier, results))
                 for rank in range(count)]
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + plan.packed_start_timeout_s + plan.packed_seconds + 60
    try:
        for process in processes:
            process.start()
        while len(out) < count and time.monotonic() < deadline:
            try:
                out.append(results.get(timeout=1.0))
            except queue.Empty:  # check for a process that died without a word
                dead = [p for p in processes if p.exitcode not in (None, 0)]
                if dead and results.empty():
                    raise RuntimeError(f"a packed process exited with code {dead[0].exitcode}") from None
        if len(out) < count:
            raise TimeoutError(f"{count - len(out)} of {count} packed processes reported nothing in time")
        for process in processes:
            process.join(timeout=30)
    finally:
        for process in processes:  # only the processes started here, each by its handle
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
    errors = [r["error"] for r in out if "error" in r]
    if errors:
        raise RuntimeError(f"packed process failed: {errors[0]}")
    return sorted(out, key=lambda r: r["rank"])


def part_packed(plan: Plan, report: Report) -> None:
    gc.collect()
    if plan.device.startswith("cuda"):
        torch.cuda.empty_cache()  # this process's cached blocks would be memory the packed processes lack
    results: dict[str, Any] = {}
    single = None
    for count in plan.packed:
        per_process = [r["images"] / r["seconds"] for r in packed_run(plan, count)]
        total = sum(per_process)  # the processes train over the same window (started at one barrier)
        results[str(count)] = {"total_images_per_s": total, "per_process_images_per_s": per_process}
        single = total if count == 1 else single
        what = f"{count} trial(s) packed (gpus_per_trial {1 / count:g}), batch {plan.packed_batch}: total images/s"
        value = f"{total:,.0f} (per process: {', '.join(f'{r:,.0f}' for r in per_process)})"
        if single is not None and count > 1:
            value += f"; {total / single:.2f}x one trial"
        if count == 4 and single is not None:
            report.add("4", what, value, f">= {GOAL_PACKED_SPEEDUP:g}x one trial",
                       total >= GOAL_PACKED_SPEEDUP * single)
        else:
            report.add("4", what, value)
    report.raw["packed"] = results
    report.notes.append(f"(4) CUDA MPS: {report.environment.get('CUDA MPS', 'n/a (not CUDA)')}; "
                        f"{plan.packed_seconds:g} s of training per round after a warm-up, all processes started "
                        f"at one barrier; torch threads per process: "
                        f"{', '.join(str(packed_threads(plan, n)) for n in plan.packed)}.")


# ---------------------------------------------------------------------------------------------------------------
# The run.


@contextmanager
def timed_part(report: Report, name: str) -> Iterator[None]:
    """Run a part; an error is recorded in the table (and its traceback printed) and the next part runs."""
    print(f"== part {name}", flush=True)
    started = time.perf_counter()
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - one failed part must not lose the others' numbers
        traceback.print_exc()
        report.failed.append(name)
        report.rows.append(Row(name, f"**failed**: {type(exc).__name__}", str(exc).splitlines()[0]
                               if str(exc) else ""))
    finally:
        report.raw.setdefault("part_seconds", {})[name] = time.perf_counter() - started
        print(f"   part {name}: {time.perf_counter() - started:.1f} s", flush=True)
        report.write()


def run(plan: Plan, parts: tuple[str, ...], report: Report) -> None:
    """The parts asked for, in order, into `report` (written after each)."""
    device = torch.device(plan.device)
    needs_data = bool({"2", "3", "4"} & set(parts))
    if needs_data:
        with timed_part(report, "setup: JPEG tree"):
            # Before anything touches CUDA: the generator forks its workers.
            started = time.perf_counter()
            make_tree(plan.tree, images=plan.images, classes=plan.classes, scale=plan.scale)
            stats = tree_stats(plan.tree)
            report.raw["tree"] = {**asdict(stats), "seconds": time.perf_counter() - started}
            report.notes.append(f"data: {stats.images:,} generated JPEGs in {stats.classes} classes, mean "
                                f"{stats.mean_width:.0f} x {stats.mean_height:.0f} px, {stats.mean_kib:.0f} KiB "
                                f"(made or found in {time.perf_counter() - started:.1f} s, {plan.tree}); half the "
                                f"classes train, half test (CUB's split)")
    if device.type == "cuda" and plan.precision == "bf16" and not torch.cuda.is_bf16_supported():
        plan = report.plan = replace(plan, precision="fp16")
        report.notes.append("this GPU has no bf16: fp16 autocast instead (no loss scaling in (1))")
    report.environment = describe_environment(device)
    print("\n".join(f"{k}: {v}" for k, v in report.environment.items()), flush=True)
    if "1" in parts:
        with timed_part(report, "1"):
            part_trunk(plan, device, report)
    train_images = 0
    if needs_data:
        with timed_part(report, "2 cache"):
            train_images = build_cache(plan, report)
    # The goals' measurements first; (2) at the other batch sizes last, so that a run cut short by the time limit
    # loses those (the table lists rows by part whatever the order they were measured in).
    if "2" in parts and train_images:
        with timed_part(report, "2"):
            part_train(plan, report, train_images, (goal_batch(plan),))
    if "3" in parts:
        with timed_part(report, "3"):
            part_eval(plan, device, report)
    if "4" in parts and train_images:
        with timed_part(report, "4"):
            part_packed(plan, report)
    others = tuple(b for b in plan.batch_sizes if b != goal_batch(plan))
    if "2" in parts and train_images and others:
        with timed_part(report, "2 (other batch sizes)"):
            part_train(plan, report, train_images, others)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def parse_plan(argv: list[str] | None = None) -> tuple[Plan, tuple[str, ...], Path | None]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="markdown table here, raw numbers in the same name with .json")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--reduced", action="store_true", help="the CPU test form (default without CUDA)")
    form.add_argument("--full", action="store_true", help="the issue's sizes (default on CUDA)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of 1,2,3,4")
    parser.add_argument("--precision", choices=("bf16", "fp16", "fp32"),
                        help="default: bf16 on CUDA (fp16 where the GPU lacks bf16), fp32 on the CPU")
    parser.add_argument("--trunk")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--batch-sizes", type=_ints, help="e.g. 32,128")
    parser.add_argument("--seconds", type=float, help="(1): seconds timed per batch size")
    parser.add_argument("--images", type=int, help="(2): JPEGs generated (CUB: 11788)")
    parser.add_argument("--classes", type=int, help="(2): classes (CUB: 200)")
    parser.add_argument("--jpeg-workers", type=int, help="(2): DataLoader workers of the JPEG path")
    parser.add_argument("--knn-n", type=int, help="(3): embeddings (SOP test: 60502)")
    parser.add_argument("--packed", type=_ints, help="(4): process counts, e.g. 1,2,4")
    parser.add_argument("--packed-seconds", type=float, help="(4): seconds timed per round")
    parser.add_argument("--work-dir", type=Path, help="JPEG tree and decoded cache (kept for reruns)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    # bf16 support is checked in `run`, after the JPEG pool has forked: asking now would create a CUDA context.
    precision = args.precision or ("fp32" if device.type != "cuda" else "bf16")
    reduced = args.reduced or (not args.full and device.type != "cuda")
    plan = (reduced_plan if reduced else full_plan)(str(device), precision)
    overrides = {"trunk": args.trunk, "image_size": args.image_size, "batch_sizes": args.batch_sizes,
                 "seconds": args.seconds, "images": args.images, "classes": args.classes,
                 "jpeg_workers": args.jpeg_workers, "knn_n": args.knn_n, "packed": args.packed,
                 "packed_seconds": args.packed_seconds, "work_dir": args.work_dir}
    if args.knn_n is not None:  # keep SOP's images per class
        overrides["knn_classes"] = max(1, round(args.knn_n * SOP_TEST_CLASSES / SOP_TEST_IMAGES))
    try:
        plan = replace(plan, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        parser.error(str(exc))
    parts = tuple(p for p in args.parts.split(",") if p.strip())
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown part(s) {', '.join(unknown)}; expected a subset of 1,2,3,4")
    return plan, parts, args.out


def main(argv: list[str] | None = None) -> int:
    plan, parts, out = parse_plan(argv)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    if plan.torch_threads is not None:
        torch.set_num_threads(plan.torch_threads)
    started = time.perf_counter()
    print(f"bench_gpu: {plan.form} form on {plan.device}, parts {','.join(parts)}, precision {plan.precision}",
          flush=True)
    report = Report(plan, out)
    status = 0
    try:
        run(plan, parts, report)
        report.notes.append(f"whole run: {time.perf_counter() - started:.0f} s")
    except (Interrupted, KeyboardInterrupt) as stop:
        # The table holds every part that finished; say where the run stopped.
        report.notes.append(f"run stopped early ({stop or 'interrupted'}) after {time.perf_counter() - started:.0f} "
                            f"s: parts missing from the table did not finish")
        report.failed.append("interrupted")
        status = 124
    report.write()
    print("\n" + report.markdown(), flush=True)
    return status or (1 if report.failed else 0)


if __name__ == "__main__":
    sys.exit(main())
