"""ASHA vs FIFO on the default study: epochs of compute each needs to get within 1 point of FIFO's best recall@1.

Both run configs/default.yaml with the same searcher seed and number of trials; FIFO trains every trial for all
its epochs, ASHA stops the weak ones at its rungs. Epochs are counted in the order they finished (the study's
timeline); "needed" is the number of epochs run when the best recall@1 so far first came within `--tolerance` of
FIFO's final best. Goal: ASHA needs >= 3x fewer.

`--asha G:R,...` runs ASHA once per (grace_period, reduction_factor) pair (default: the config's own). With
`--storage DIR` the studies are kept; running again restores finished ones instead of training them again.

    python benchmarks/bench_asha.py [--num-samples 28] [--tolerance 0.01] [--asha 2:2,1:3] [--storage DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from study.config import SchedulerSection, parse_config, read_yaml
from study.runner import run_study

ROOT = Path(__file__).resolve().parents[1]


def epochs_to_reach(epochs: pd.DataFrame, target: float, metric: str) -> int | None:
    """Epochs run (in completion order) until the running best of `metric` reaches `target`; None if never."""
    ordered = epochs.sort_values("timestamp", kind="stable")
    reached = (ordered[metric].cummax() >= target).to_numpy()
    return int(reached.argmax()) + 1 if reached.any() else None


def run(storage: str, num_samples: int, scheduler: dict[str, object]) -> tuple[pd.DataFrame, float]:
    """The default study with `scheduler` merged into its scheduler section; (epochs table, wall seconds)."""
    raw = read_yaml((ROOT / "configs" / "default.yaml").read_text())
    raw["scheduler"] = {**(raw.get("scheduler") or {}), **scheduler}
    name = "fifo" if scheduler["kind"] == "fifo" else \
        f"asha-g{scheduler['grace_period']}-r{scheduler['reduction_factor']}"
    study = run_study(parse_config(raw, storage=storage, name=name, num_samples=num_samples), progress=False)
    epochs = pd.read_parquet(Path(study.study_dir, "results", "epochs.parquet"))
    # The study's own span (first epoch start to last report), not this process's: a restored study trains nothing.
    wall = float(epochs["timestamp"].max() - (epochs["timestamp"] - epochs["time_total_s"]).min())
    return epochs, wall


def scheduler_pairs(text: str) -> list[tuple[int, int]]:
    """`2:2,1:3` -> [(2, 2), (1, 3)]: (grace_period, reduction_factor) pairs, for argparse."""
    try:
        pairs = [tuple(int(x) for x in item.split(":")) for item in text.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 or p[0] < 1 or p[1] < 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"expected GRACE:FACTOR pairs such as 2:2,1:3 "
                                         f"(grace >= 1, factor >= 2), got {text!r}")
    return pairs  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=28)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--metric", default="recall@1")
    parser.add_argument("--asha", type=scheduler_pairs, default=None,
                        help="comma-separated grace_period:reduction_factor pairs")
    parser.add_argument("--storage", default=None, help="keep the studies here (default: a temporary directory)")
    args = parser.parse_args()
    default = SchedulerSection()  # configs/default.yaml keeps the code's scheduler defaults
    pairs = args.asha or [(default.grace_period, default.reduction_factor)]

    with tempfile.TemporaryDirectory() as scratch:
        storage = args.storage or scratch
        fifo, fifo_wall = run(storage, args.num_samples, {"kind": "fifo"})
        target = fifo[args.metric].max() - args.tolerance
        need_fifo = epochs_to_reach(fifo, target, args.metric)
        print(f"default study, {args.num_samples} trials each; target {args.metric} >= {target:.4f} "
              f"(FIFO best {fifo[args.metric].max():.4f} - {args.tolerance})")
        print(f"  FIFO: {len(fifo):4d} epochs in all ({fifo_wall:.0f} s), best {fifo[args.metric].max():.4f}, "
              f"target after {need_fifo} epochs")
        for grace, factor in pairs:
            asha, wall = run(storage, args.num_samples,
                             {"kind": "asha", "grace_period": grace, "reduction_factor": factor})
            need = epochs_to_reach(asha, target, args.metric)
            shown = "never" if need is None else f"after {need} epochs"
            ratio = "" if need is None or need_fifo is None else \
                f"; {need_fifo / need:.2f}x fewer epochs to the target (goal >= 3x)"
            print(f"  ASHA grace {grace} factor {factor}: {len(asha):4d} epochs in all ({wall:.0f} s), "
                  f"best {asha[args.metric].max():.4f}, target {shown}{ratio}; "
                  f"total compute {len(fifo) / len(asha):.2f}x less")


if __name__ == "__main__":
    main()
