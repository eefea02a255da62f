"""The study's driver at scale: the searcher's suggest, its sampling quality, reading a large study, and a real
Tuner run of many trials with a trainable that only reports.

    python benchmarks/bench_scale.py searcher [--points 1000 10000 50000]   suggest ms vs finished trials
    python benchmarks/bench_scale.py quality [--trials 200 --seeds 5]       best after N trials, bounded vs full
    python benchmarks/bench_scale.py reads [--trials 10000]                 load_epochs/load_trials/show/report s
    python benchmarks/bench_scale.py tuner [--trials 1000]                  trials/s, driver CPU per block, per thread

Each prints a markdown table (docs/benchmarks.md holds the figures measured). `tuner` runs the real Tuner,
searcher (TPE, per-loss studies, bounded history), PerLossASHA and recorder (Parquet writer thread, compaction,
MLflow mirror to sqlite) on the default space, with 5 epochs per trial and Tune's slow-operation warning lowered
to 100 ms (TUNE_WARN_THRESHOLD_S): every warning is a step of Tune's loop that took longer.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EPOCHS = 5


# -- a synthetic objective over the default space --------------------------------------------------------------


def _unit(param: Any, value: Any) -> float:
    """Where `value` lies in `param`'s range, 0..1 (log ranges on a log scale; a choice by its index)."""
    if hasattr(param, "low") and hasattr(param, "high"):
        low, high, v = float(param.low), float(param.high), float(value)
        if param.log_scaled and low > 0:
            return (math.log(v) - math.log(low)) / (math.log(high) - math.log(low))
        return (v - low) / (high - low)
    values = list(getattr(param, "values", ()) or ())
    return values.index(value) / max(1, len(values) - 1) if value in values else 0.5


def objective(space: Any, config: dict[str, Any], epoch: int = EPOCHS) -> float:
    """A smooth, loss-dependent stand-in for recall@1: each loss has its base level and each hyperparameter an
    optimum (fixed by its name), and the value grows with the epoch, as a training curve does."""
    loss = config["loss"]
    base = 0.45 + 0.3 * (zlib.crc32(loss.encode()) % 1000) / 1000
    miner = config.get("miner", "none")
    penalty = 0.0
    for entry in space.branch(loss, miner):
        if entry.name in config:
            optimum = (zlib.crc32(entry.name.encode()) % 1000) / 1000
            penalty += (_unit(entry.param, config[entry.name]) - optimum) ** 2
    return (base - 0.15 * penalty) * (1 - 0.5 ** epoch)


def default_space() -> Any:
    from study.config import parse_config, read_yaml
    from study.plan import plan_study

    raw = read_yaml((ROOT / "configs" / "default.yaml").read_text())
    return plan_study(parse_config(raw, storage=tempfile.gettempdir(), name="bench-scale")).space


# -- searcher ---------------------------------------------------------------------------------------------------


def _fill(searcher: Any, space: Any, n: int, seed: int, history: int) -> None:
    """The searcher's studies as a study of n finished trials leaves them (random configurations, a third pruned
    at a random epoch), made through Optuna's own API: fast at 50,000. With a bounded history, each study holds
    what it would hold in a long study right before a replacement: its bounded history plus a quarter more, so
    the first trial told to it in the measurement replaces it (the most expensive tell there is)."""
    import numpy as np
    import optuna

    from search_spaces.space import suggest, suggest_loss
    from study.searcher import KEEP_BEST, bounded

    def steady(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        trials = study.get_trials(deepcopy=False)
        if len(trials) <= history + history // 4:
            return trials
        kept = bounded(study, optuna.samplers.RandomSampler, history=history, keep_best=min(KEEP_BEST, history // 2))
        have = {t.user_attrs["n"] for t in kept.trials}
        newer = [t for t in trials if t.user_attrs["n"] not in have][-(history // 4):]
        return sorted([*kept.trials, *newer], key=lambda t: t.user_attrs["n"])

    rng = np.random.default_rng(seed)
    losses = list(space.loss_names)
    chooser = optuna.create_study(direction="maximize")
    number = 0
    for index, loss in enumerate(losses):
        count = n // len(losses) + (index < n % len(losses))
        scratch = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed + index))
        for _ in range(count):
            trial = scratch.ask()
            config = {"loss": loss, **suggest(space, loss, trial)}
            chooser.enqueue_trial({"loss": loss})
            pick = chooser.ask()
            suggest_loss(space, pick)
            epochs = EPOCHS if rng.random() > 1 / 3 else int(rng.integers(1, EPOCHS))
            for epoch in range(1, epochs + 1):
                value = objective(space, config, epoch)
                trial.report(value, epoch)
                pick.report(value, epoch)
            state = optuna.trial.TrialState.COMPLETE if epochs == EPOCHS else optuna.trial.TrialState.PRUNED
            final = objective(space, config) if epochs == EPOCHS else None
            for t in (trial, pick):
                t.set_user_attr("n", number)
            number += 1
            scratch.tell(trial, final, state=state)
            chooser.tell(pick, final, state=state)
        searcher.studies[loss].add_trials(steady(scratch))
    searcher.chooser.add_trials(steady(chooser))


def _cycle(searcher: Any, space: Any, trial_id: str) -> tuple[float, float]:
    """One trial through the searcher: (suggest ms, on_trial_complete ms)."""
    started = time.perf_counter()
    config = searcher.suggest(trial_id)
    suggested = time.perf_counter()
    for epoch in range(1, EPOCHS + 1):
        searcher.on_trial_result(trial_id, {"epoch": epoch, "recall@1": objective(space, config, epoch)})
    told = time.perf_counter()
    searcher.on_trial_complete(trial_id, {"epoch": EPOCHS, "recall@1": objective(space, config)})
    return (suggested - started) * 1e3, (time.perf_counter() - told) * 1e3


def bench_searcher(points: list[int], cycles: int, unbounded_max: int) -> None:
    from dml_core.mode import Mode
    from study.searcher import HISTORY, OptunaSearcher

    space = default_space()
    print("| finished trials | history | suggest ms (median) | suggest ms (max) | complete ms (max) | "
          "trials per study |")
    print("|---|---|---|---|---|---|")
    for n in points:
        for history in (HISTORY, 10**9):
            if history > HISTORY and n > unbounded_max:
                continue
            searcher = OptunaSearcher(space, metric="recall@1", mode=Mode.MAX, max_epochs=EPOCHS, seed=0,
                                      history=history)
            _fill(searcher, space, n, seed=n, history=history)
            timings = [_cycle(searcher, space, f"t{i}") for i in range(cycles)]
            suggests, completes = [t[0] for t in timings], [t[1] for t in timings]
            sizes = [len(s.trials) for s in searcher.studies.values()]
            label = "full" if history > HISTORY else str(history)
            print(f"| {n:,} | {label} | {statistics.median(suggests):.1f} | {max(suggests):.1f} | "
                  f"{max(completes):.1f} | {min(sizes):,}-{max(sizes):,} |", flush=True)


def bench_quality(trials: int, seeds: int, histories: list[int]) -> None:
    """Best value found after `trials` trials, per seed, for each history: the mean over the losses that have
    hyperparameters of each one's best (a loss without any, such as npair, is found at its best by its first
    trial and says nothing about the sampler), and the study's best among them."""
    from dml_core.mode import Mode
    from study.searcher import OptunaSearcher

    space = default_space()
    tunable = [loss for loss in space.loss_names if len(space.branch(loss, "none")) > 0]
    best: dict[str, list[tuple[float, float]]] = {}
    for seed in range(seeds):
        for history in histories:
            searcher = OptunaSearcher(space, metric="recall@1", mode=Mode.MAX, max_epochs=EPOCHS, seed=seed,
                                      history=history)
            per_loss: dict[str, float] = {}
            for i in range(trials):
                config = searcher.suggest(f"t{i}")
                value = objective(space, config)
                per_loss[config["loss"]] = max(per_loss.get(config["loss"], -1.0), value)
                searcher.on_trial_complete(f"t{i}", {"epoch": EPOCHS, "recall@1": value})
            mine = [per_loss[loss] for loss in tunable if loss in per_loss]
            label = "full (today's TPE)" if history >= 10**9 else f"history {history}"
            best.setdefault(label, []).append((statistics.mean(mine), max(mine)))
    print(f"| searcher | mean over {len(tunable)} losses of each one's best after {trials} trials, per seed | mean | "
          f"study best, mean over seeds |")
    print("|---|---|---|---|")
    for label, values in best.items():
        print(f"| {label} | {', '.join(f'{m:.4f}' for m, _ in values)} | {statistics.mean(m for m, _ in values):.4f}"
              f" | {statistics.mean(b for _, b in values):.4f} |")


# -- reading a large study --------------------------------------------------------------------------------------


class _Trial:
    def __init__(self, trial_id: str, config: dict[str, Any]) -> None:
        self.trial_id, self.config, self.status, self.error_file = trial_id, config, "RUNNING", None

    def get_error(self) -> None:
        return None


def build_study(study_dir: Path, trials: int) -> dict[str, float]:
    """A study directory of `trials` trials written by the real recorder, flushing after every result (the most
    parts a study can make); returns the recorder's CPU ms per result."""
    from dml_core.mode import Mode
    from results.study_dir import new_study_info, write_study_info
    from study.config import Algorithm, parse_config, read_yaml
    from study.plan import plan_study
    from study.recorder import StudyRecorder
    from study.searcher import OptunaSearcher

    raw = read_yaml((ROOT / "configs" / "default.yaml").read_text())
    plan = plan_study(parse_config(raw, storage=str(study_dir.parent), name=study_dir.name))
    write_study_info(new_study_info(study_dir, name=study_dir.name, metric="recall@1", mode=Mode.MAX,
                                    metrics=plan.metrics, log_scale={}))
    searcher = OptunaSearcher(plan.space, metric="recall@1", mode=Mode.MAX, max_epochs=EPOCHS,
                              algorithm=Algorithm.RANDOM)
    recorder = StudyRecorder(study=study_dir.name, results_dir=str(study_dir / "results"), base=plan.base,
                             param_columns=plan.param_columns, metrics=plan.metrics, metric="recall@1", sign=1.0,
                             stop_reason="asha", flush_interval_s=0.0)
    recorder.setup()
    cpu, results = 0.0, 0
    for i in range(trials):
        trial = _Trial(f"{i:08x}", searcher.suggest(str(i)))
        epochs = EPOCHS if i % 3 else 1 + i % (EPOCHS - 1)
        started = time.process_time()
        recorder.on_trial_start(0, [], trial)
        recorder.get_state()  # a snapshot lists it
        for epoch in range(1, epochs + 1):
            value = objective(plan.space, trial.config, epoch)
            recorder.on_trial_result(0, [], trial, {"epoch": epoch, "recall@1": value, "recall@2": value,
                                                    "precision@1": value, "r_precision": value / 2,
                                                    "map@r": value / 3, "train_loss": 1 / epoch,
                                                    "time_total_s": float(epoch), "timestamp": time.time()})
            results += 1
        trial.status = "TERMINATED"
        recorder.on_trial_complete(0, [], trial)
        cpu += time.process_time() - started
    recorder.on_experiment_end([])
    return {"recorder CPU ms per result (writer thread included)": 1e3 * cpu / results}


def bench_reads(trials: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        study_dir = Path(scratch) / "scale"
        started = time.perf_counter()
        costs = build_study(study_dir, trials)
        print(f"built {trials:,} trials in {time.perf_counter() - started:.0f} s; "
              + "; ".join(f"{k}: {v:.2f}" for k, v in costs.items()))
        parts = {t: len(list((study_dir / "results" / f"{t}.parquet").glob("part-*"))) for t in ("epochs", "trials")}
        rows = []
        import results

        for name, action in (("load_epochs", lambda: results.load_epochs(study_dir)),
                             ("load_trials", lambda: results.load_trials(study_dir))):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                action()
                times.append(time.perf_counter() - t0)
            rows.append((name, min(times)))
        for name, command in (("dml-study show (process)", ["show", str(study_dir)]),
                              ("dml-study report (process)", ["report", str(study_dir), "--out",
                                                              str(Path(scratch) / "report")])):
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "study.cli", *command], cwd=ROOT, capture_output=True,
                                  text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            rows.append((name, time.perf_counter() - t0))
            if done.returncode != 0:
                print(f"{name} failed: {done.stderr.strip().splitlines()[-1:]}")
        print(f"\nparts after compaction: epochs {parts['epochs']}, trials {parts['trials']}\n")
        print("| read | seconds |")
        print("|---|---|")
        for name, seconds in rows:
            print(f"| {name} | {seconds:.2f} |")


# -- a real Tuner run -------------------------------------------------------------------------------------------


def reporting_trainable(config: dict[str, Any], base: Any = None, cross_validate: bool = False,
                        metric: str = "recall@1", mode: Any = None) -> None:
    """dml_trainable's signature, no training: reports EPOCHS epochs of a value fixed by the configuration."""
    from ray import tune

    level = 0.3 + 0.5 * (zlib.crc32(repr(sorted(config.items())).encode()) % 1000) / 1000
    for epoch in range(1, EPOCHS + 1):
        value = level * (1 - 0.5 ** epoch)
        tune.report({"epoch": epoch, "recall@1": value, "recall@2": value, "precision@1": value,
                     "r_precision": value / 2, "map@r": value / 3, "train_loss": 1.0 / epoch})


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process by name, Ray's native threads included (Linux /proc; empty
    elsewhere): Tune's loop is the main thread, the MLflow mirror and the Parquet writer have threads of their own."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    cpu: dict[str, float] = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return cpu
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ... utime is field 14
        name = names.get(int(tid), "other")
        cpu[name] = cpu.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return cpu


class _SlowSteps(logging.Handler):
    """Counts Tune's warnings of a loop operation slower than TUNE_WARN_THRESHOLD_S."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "may be a performance bottleneck" in message:
            self.messages.append(message)


def bench_tuner(trials: int, block: int, cpus_per_trial: float, algorithm: str, tracking: bool) -> None:
    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "0.1")
    from ray.tune import Callback

    from study.config import parse_config, read_yaml
    from study.runner import run_study

    marks: list[tuple[int, float, float, dict[str, float]]] = []  # (trials done, wall, driver CPU, per thread)

    class Marks(Callback):  # type: ignore[misc]
        done = 0

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            Marks.done += 1
            if Marks.done % block == 0:
                marks.append((Marks.done, time.perf_counter(), time.process_time(), thread_cpu()))

    slow = _SlowSteps()
    logging.getLogger("ray.tune.utils.util").addHandler(slow)
    raw = read_yaml((ROOT / "configs" / "default.yaml").read_text())
    raw["train"] = {**raw.get("train", {}), "epochs": EPOCHS}
    raw["resources"] = {"cpus_per_trial": cpus_per_trial}
    raw["ray"] = {"num_cpus": 2}
    raw["search"] = {**raw.get("search", {}), "algorithm": algorithm}
    raw["tracking"] = {"enabled": tracking}
    with tempfile.TemporaryDirectory() as scratch:
        config = parse_config(raw, storage=scratch, name="tuner-scale", num_samples=trials)
        marks.append((0, time.perf_counter(), time.process_time(), thread_cpu()))
        run = run_study(config, callbacks=[Marks()], progress=False, trainable=reporting_trainable)
        parts = {t: len(list(Path(run.study_dir, "results", f"{t}.parquet").glob("part-*")))
                 for t in ("epochs", "trials")}
    print(f"\n{trials:,} trials in {run.wall_time_s:.0f} s: {trials / run.wall_time_s:.1f} trials/s overall; "
          f"parts: epochs {parts['epochs']}, trials {parts['trials']}; "
          f"Tune loop operations over 100 ms: {len(slow.messages)}")
    for message in slow.messages[:10]:
        print(f"  {message}")
    print("\n| trials | trials/s | driver CPU s | driver CPU ms per trial | of it: Tune's loop (main thread) | "
          "MLflow mirror thread | other threads |")
    print("|---|---|---|---|---|---|---|")
    for (n0, w0, c0, t0), (n1, w1, c1, t1) in zip(marks, marks[1:]):
        per = {name: 1e3 * (t1.get(name, 0.0) - t0.get(name, 0.0)) / (n1 - n0) for name in t1}
        loop, mirror = per.pop("MainThread", math.nan), per.pop("mlflow-mirror", 0.0)
        print(f"| {n0 + 1:,}-{n1:,} | {(n1 - n0) / (w1 - w0):.1f} | {c1 - c0:.1f} | {1e3 * (c1 - c0) / (n1 - n0):.1f} "
              f"| {loop:.1f} | {mirror:.1f} | {sum(per.values()):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("searcher")
    p.add_argument("--points", type=int, nargs="+", default=[1000, 10000, 50000])
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--unbounded-max", type=int, default=10000)
    q = sub.add_parser("quality")
    q.add_argument("--trials", type=int, default=200)
    q.add_argument("--seeds", type=int, default=5)
    q.add_argument("--histories", type=int, nargs="+", default=[10**9, 1000, 200])
    r = sub.add_parser("reads")
    r.add_argument("--trials", type=int, default=10000)
    t = sub.add_parser("tuner")
    t.add_argument("--trials", type=int, default=1000)
    t.add_argument("--block", type=int, default=250)
    t.add_argument("--cpus-per-trial", type=float, default=0.25)
    t.add_argument("--algorithm", default="optuna", help="optuna (TPE) or random: random isolates Tune's cost")
    t.add_argument("--no-mlflow", action="store_true", help="tracking.enabled: false")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.part == "searcher":
        bench_searcher(args.points, args.cycles, args.unbounded_max)
    elif args.part == "quality":
        bench_quality(args.trials, args.seeds, args.histories)
    elif args.part == "reads":
        bench_reads(args.trials)
    else:
        bench_tuner(args.trials, args.block, args.cpus_per_trial, args.algorithm, not args.no_mlflow)


if __name__ == "__main__":
    main()
