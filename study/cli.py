"""`dml-study`: run, resume, show, rerun and report studies.

Bad input exits with code 2 and one line naming the key path or file, before Ray starts and before anything is
written. Heavy imports (Ray, torch) happen inside the commands that need them, so `--help` and `report` are quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dml_core.errors import ConfigError

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _params_text(loss: str, params: Any, width: int = 90) -> str:
    """`margin=0.2931 miner=triplet_margin miner.triplet_margin.margin=0.3`: one line, the loss's prefix dropped."""
    if not isinstance(params, dict):
        return ""
    text = " ".join(f"{k.removeprefix(loss + '.')}={_short(v)}" for k, v in params.items())
    return text if len(text) <= width else text[:width - 3] + "..."


def _show(study_dir: str) -> None:
    """Trial counts by status and the best trial per loss, one line each."""
    import results

    info = results.read_study_info(study_dir)
    metric, mode = info.metric, info.mode
    trials = results.load_trials(study_dir)
    epochs = results.load_epochs(study_dir, columns=["trial_id"])
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    running = len(set(epochs["trial_id"]) - set(trials["trial_id"])) if len(epochs) else 0
    status = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"study {info.name}: {len(trials)} finished trials ({status or 'none'}), {running} unfinished")
    if not len(trials) or not trials[f"best_{metric}"].notna().any():
        return
    if info.protocol.get("kind") == "reality_check":
        _show_phases(info.protocol, trials, results.load_final(study_dir))
        trials = trials[trials["phase"] == "search"]
    best = results.best_per_loss(trials, metric=metric, mode=mode)
    print(f"\nbest {metric} per loss (trials: full budget/stopped early/error):")
    for row in best.to_dict("records"):
        value = "-" if row[metric] != row[metric] else f"{row[metric]:.4f}"
        tally = f"{row.get('completed', 0)}/{row.get('stopped', 0)}/{row.get('error', 0)}"
        print(f"  {row['loss']:<19} {value:>7}  {tally:<8} trial {row['trial_id']}  "
              f"{_params_text(row['loss'], row.get('params'))}")


def _show_phases(protocol: Any, trials: Any, final: Any) -> None:
    """Reality check: where each loss is, `search 12/50` then `final 3/10` then `done`."""
    per_loss, finals = int(protocol["trials_per_loss"]), int(protocol["final_runs"])
    searched = trials[trials["phase"] == "search"].groupby("loss").size()
    scored = final.groupby("loss").size() if len(final) else {}
    print(f"\nreality check: {protocol['folds']} folds, {per_loss} search trials and {finals} final runs per loss")
    for loss in protocol.get("losses") or sorted(set(trials["loss"])):
        done_search, done_final = int(searched.get(loss, 0)), int(scored.get(loss, 0))
        phase = ("done" if done_final >= finals else f"final {done_final}/{finals}") if done_search >= per_loss \
            else f"search {done_search}/{per_loss}"
        print(f"  {loss:<19} {phase}")


def _finish_message(run: Any) -> int:
    """The study's summary; the exit code: 0, or EXIT_INTERRUPTED when trials are left to run."""
    from results.study_dir import StudyPaths

    paths = StudyPaths(run.study_dir)
    print()
    if run.already_complete:
        print(f"study {run.study_dir} had already finished all {run.num_trials} trials: nothing was run again")
    try:
        _show(run.study_dir)
    except Exception as exc:  # noqa: BLE001 - the study ran; a summary problem must not hide where results are
        print(f"(could not summarise the study: {exc})")
    print(f"\nresults: {paths.epochs}\n         {paths.trials}")
    print("         pandas.read_parquet(<path>) reads either table")
    if run.tracking_uri:
        print(f"MLflow:  mlflow ui --backend-store-uri {run.tracking_uri}")
    print(f"report:  dml-study report {run.study_dir}")
    print(f"wall time {run.wall_time_s:.0f} s")
    if run.complete:
        return 0
    print(f"dml-study: interrupted with {run.finished_trials} of {run.num_trials} trials finished; continue with "
          f"`dml-study resume {run.study_dir}`", file=sys.stderr)
    return EXIT_INTERRUPTED


def cmd_run(args: argparse.Namespace) -> int:
    from search_spaces import space_from_config
    from study.config import load_config

    # The config and its search space are checked before torch and Ray are imported (seconds): a bad one is
    # refused at once. What needs torch (the data set, a loss built at every boundary) is checked next, still
    # before Ray starts.
    config = load_config(args.config, storage=args.storage, name=args.name, address=args.address,
                         num_samples=args.num_samples)
    space_from_config(config.search.space, path="search")
    if not args.quiet:  # the checks that need torch and Ray's start take seconds: say what is happening
        print(f"dml-study: study {config.name!r} in {config.study_dir}: checking the data set and the search "
              f"space", flush=True)
    from study.runner import run_study

    run = run_study(config, progress=not args.quiet, verbose=args.verbose)
    return _finish_message(run)


def cmd_resume(args: argparse.Namespace) -> int:
    if not args.quiet:
        print(f"dml-study: resuming {args.study_dir}: checking it", flush=True)
    from study.runner import resume_study

    run = resume_study(args.study_dir, progress=not args.quiet, verbose=args.verbose)
    return _finish_message(run)


def cmd_show(args: argparse.Namespace) -> int:
    _show(args.study_dir)
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    from study.rerun import rerun_trial

    result = rerun_trial(args.study_dir, args.trial_id, device=args.device)
    print(f"trial {result.trial_id}: {result.sampled}")
    for epoch, (old, new) in enumerate(zip(result.recorded, result.rerun), start=1):
        pairs = "  ".join(f"{m} {old.get(m, float('nan')):.4f}/{new.get(m, float('nan')):.4f}"
                          for m in result.metrics[:4])
        print(f"epoch {epoch}: recorded/rerun {pairs}")
    print(f"largest difference over {len(result.rerun)} epochs: {result.max_abs_diff():.2e}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import results

    path = results.write_report(args.study_dirs, args.out, metric=args.metric)
    out = Path(path).parent
    pngs = sorted(out.rglob("*.png"))
    print(f"report: {path}")
    print(f"plots:  {len(pngs)} PNG files in {out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dml-study", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a study from a YAML config (or continue it if it exists)",
                         description="Run a study: STORAGE/NAME/ gets config.yaml, results/*.parquet, "
                                     "mlflow.db and Ray Tune's state. Running it again continues it.")
    run.add_argument("config", help="study YAML (see configs/default.yaml)")
    run.add_argument("--storage", help="directory or URI that holds studies (overrides `storage`)")
    run.add_argument("--name", help="study name (overrides `name`)")
    run.add_argument("--address", help="Ray cluster to join: 'auto' or ray://host:10001 (overrides ray.address)")
    run.add_argument("--num-samples", type=int, help="number of trials (overrides search.num_samples)")
    run.add_argument("--quiet", action="store_true", help="no progress line per finished trial")
    run.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2, 3), help="Ray Tune's own output level")
    run.set_defaults(func=cmd_run)

    resume = sub.add_parser("resume", help="continue an interrupted study",
                            description="Continue a study from its directory: finished trials are kept, "
                                        "unfinished ones continue from their last checkpoint.")
    resume.add_argument("study_dir")
    resume.add_argument("--quiet", action="store_true", help="no progress line per finished trial")
    resume.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2, 3), help="Ray Tune's own output level")
    resume.set_defaults(func=cmd_resume)

    show = sub.add_parser("show", help="trial counts by status and the best trial per loss",
                          description="Summarise a finished or running study.")
    show.add_argument("study_dir")
    show.set_defaults(func=cmd_show)

    rerun = sub.add_parser("rerun", help="run one trial again without Ray and compare its metrics",
                           description="Rerun one trial from its recorded configuration and seed, without Ray; "
                                       "on the CPU it reproduces the recorded metrics.")
    rerun.add_argument("study_dir")
    rerun.add_argument("trial_id")
    rerun.add_argument("--device", default="cpu", help="torch device (default cpu)")
    rerun.set_defaults(func=cmd_rerun)

    report = sub.add_parser("report", help="write report.md and plots for one or more studies",
                            description="Write report.md (tables, importance, plots) and PNGs.")
    report.add_argument("study_dirs", nargs="+", metavar="STUDY_DIR")
    report.add_argument("--out", help="output directory (default: STUDY_DIR/report)")
    report.add_argument("--metric", help="metric to rank by (default: the study's)")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"dml-study: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, FileNotFoundError) as exc:
        if args.command in ("show", "report", "rerun"):
            print(f"dml-study: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise
    except KeyboardInterrupt:
        print("dml-study: interrupted; continue with `dml-study resume STUDY_DIR`", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
