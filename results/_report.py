"""`write_report`: report.md and its PNGs for one or several studies, finished or still running."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from dml_core.files import write_text
from dml_core.mode import Mode
from results._best import SCORED, best_per_loss, scored_rows, status_counts
from results._importance import MIN_TRIALS, importance
from results._load import load_epochs, load_trials
from results._markdown import format_metric, format_params, markdown_table
from results._plot_importance import plot_importance
from results._plot_learning import plot_learning_curves
from results._plot_sensitivity import plot_sensitivity, varying_hyperparameters
from results._running import trials_in_progress
from results._load import PathsLike, load_final, study_dirs
from results._plot_reality_check import plot_reality_check
from results._reality_check import REALITY_CHECK_METRICS, reality_check_table
from results._schema import metric_column, metric_name, metric_names, resolve_mode
from results.study_dir import StudyInfo, read_study_info
from results._summary import summary

__all__ = ["write_report"]

# What a report reads of the epochs table: enough for learning curves and for rows of trials still running.
_EPOCH_COLUMNS = ("trial_id", "config_id", "loss", "miner", "epoch", "*.*")


def write_report(paths: PathsLike, out_dir: Path | str | None = None, *, metric: str | None = None) -> Path:
    """Write report.md and its PNGs into `out_dir` (default: <first study dir>/report, or ./<name>-report for a
    study on a URI: the report is written locally); return report.md's path.

    `metric` defaults to the first study's (study.json), else recall@1. Trials still running are included from
    their epochs so far. Every file is written atomically (temp file + os.replace).
    """
    dirs = study_dirs(paths)
    infos = [read_study_info(d) for d in dirs]
    if out_dir is not None:
        out = Path(out_dir).expanduser()
    else:
        out = dirs[0] / "report" if isinstance(dirs[0], Path) else Path.cwd() / f"{infos[0].name}-report"
    metric = metric or infos[0].metric
    name = metric_name(metric)
    epochs = load_epochs(dirs, columns=[*_EPOCH_COLUMNS, name])
    finished = load_trials(dirs)
    mode = resolve_mode(name, None, finished)
    running = trials_in_progress(epochs, finished, metric=name, mode=mode)
    trials = pd.concat([t for t in (finished, running) if not t.empty] or [finished], ignore_index=True)
    trials.attrs = finished.attrs
    final = load_final(dirs)
    reality_check = any(i.protocol.get("kind") == "reality_check" for i in infos)
    # A reality check's best configurations are judged on its search trials; its final runs (reruns of them)
    # get a section of their own, which replaces the repeated-runs summary.
    searched = trials[trials["phase"] != "final"] if reality_check and "phase" in trials.columns else trials
    searched.attrs = trials.attrs
    sections = [
        _header(infos, trials, metric, mode),
        _status_section(trials),
        _reality_check_section(final, out) if reality_check else "",
        _best_section(searched, metric, mode),
        "" if reality_check else _summary_section(trials, metric, mode),
        _importance_section(searched, metric, mode, out),
        _sensitivity_section(searched, metric, out),
        _learning_section(epochs, finished, name, out),
    ]
    path = out / "report.md"
    write_text(path, "\n\n".join(s for s in sections if s) + "\n")
    return path


def _header(infos: list[StudyInfo], trials: pd.DataFrame, metric: str, mode: Mode) -> str:
    counts = trials.groupby("study").size() if len(trials) else pd.Series(dtype=int)
    studies = "\n".join(f"- `{i.name}`: {int(counts.get(i.name, 0))} trials, {i.path}"
                        + ("" if i.from_file else " (no study.json: defaults assumed)") for i in infos)
    column = f"best_{metric_name(metric)}" if metric == metric_name(metric) else metric
    return (f"# Study report\n\n{studies}\n\nMetric: **{metric}** ({mode.value}). A trial's value is `{column}` "
            "(at its best epoch). Trials still running count with their epochs so far.")


def _status_section(trials: pd.DataFrame) -> str:
    if trials.empty:
        return "## Trials by status\n\nNo trial has reported an epoch yet."
    return "## Trials by status\n\n" + markdown_table(status_counts(trials, by=("study",)))


def _best_section(trials: pd.DataFrame, metric: str, mode: Mode) -> str:
    if trials.empty:
        return ""
    best = best_per_loss(trials, metric=metric, mode=mode)
    best["params"] = best["params"].map(format_params)
    best = best.rename(columns={"params": "hyperparameters", "trial_id": "trial", "best_epoch": "epoch"})
    return "## Best trial per loss\n\n" + markdown_table(best, {metric: format_metric})


def _summary_section(trials: pd.DataFrame, metric: str, mode: Mode) -> str:
    title = "## Best configuration over repeated runs (mean ± 95% CI)"
    metrics = [m for m in metric_names(trials) if f"best_{m}" in trials.columns]
    table = summary(trials, metrics=metrics, metric=metric, mode=mode) if metrics and len(trials) else pd.DataFrame()
    if table.empty:
        return f"{title}\n\nNo completed trial yet."
    cells = table[["loss", "n"]].copy()
    for name in metrics:
        cells[name] = [_mean_ci(m, c) for m, c in zip(table[name], table[f"{name}_ci"])]
    cells["config"] = table["config_id"]
    cells["hyperparameters"] = table["params"].map(format_params)
    return (f"{title}\n\nPer loss, the configuration with the best mean {metric} among those run at least twice "
            "(other seeds or folds; a loss with no repeated configuration shows its best single run), completed "
            "runs only. ± is the half-width of the 95% Student-t interval; n is the number of runs.\n\n"
            + markdown_table(cells, {name: str for name in metrics}))


def _reality_check_section(final: pd.DataFrame, out: Path) -> str:
    title = "## Reality check: the test classes (mean ± 95% CI over the final runs)"
    if final.empty:
        return f"{title}\n\nNo loss has finished its final runs yet."
    table = reality_check_table(final)
    cells = table[[c for c in ("study", "loss", "n") if c in table.columns]].copy()
    short = {"precision@1": "P@1", "r_precision": "R-P", "map@r": "MAP@R"}
    for evaluation in ("concatenated", "separated"):
        for metric in REALITY_CHECK_METRICS:
            column = f"{evaluation}.{metric}"
            cells[f"{evaluation} {short[metric]}"] = [_mean_ci(m, c) for m, c in zip(table[column],
                                                                                     table[f"{column}_ci"])]
    plot_reality_check(table, out / "reality_check.png")
    return (f"{title}\n\nPer loss, its best configuration (by the fold-mean validation metric) retrained with new "
            "seeds, each run training one model per cross-validation fold. Concatenated: the metrics of the fold "
            "models' L2-normalised embeddings concatenated; separated: each fold model's metrics, averaged. ± is "
            "the half-width of the 95% Student-t interval over the n final runs.\n\n"
            + markdown_table(cells, {c: str for c in cells.columns if c not in ("study", "loss", "n")})
            + "\n\n![MAP@R per loss on the test classes](reality_check.png)")


def _mean_ci(mean: float, half: float) -> str:
    return format_metric(mean) + ("" if pd.isna(half) else f" ± {format_metric(half)}")


def _scored_by_loss(trials: pd.DataFrame, metric: str) -> dict[str, pd.DataFrame]:
    """Each loss's trials that have a value (completed, stopped, running), in name order."""
    if trials.empty:
        return {}
    scored = scored_rows(trials, metric_column(trials, metric), SCORED)
    return {str(loss): scored[scored["loss"] == loss] for loss in sorted(trials["loss"].dropna().unique())}


def _importance_section(trials: pd.DataFrame, metric: str, mode: Mode, out: Path) -> str:
    scores: dict[str, pd.Series] = {}
    skipped: list[str] = []
    for loss, rows in _scored_by_loss(trials, metric).items():
        if len(rows) < MIN_TRIALS:
            skipped.append(f"`{loss}` ({len(rows)} scored trials; importance needs {MIN_TRIALS})")
        elif not varying_hyperparameters(rows, loss):
            skipped.append(f"`{loss}` (no hyperparameter varies)")
        else:
            scores[loss] = importance(trials, loss=loss, metric=metric, mode=mode)
    if not scores and not skipped:
        return ""
    parts = ["## Hyperparameter importance (Optuna PED-ANOVA)"]
    if scores:
        rows = pd.DataFrame({"loss": list(scores), "importance": [
            ", ".join(f"{p} {v:.2f}" for p, v in s.items()) for s in scores.values()]})
        plot_importance(scores, out / "importance.png")
        parts += [markdown_table(rows), "![Hyperparameter importance](importance.png)"]
    if skipped:
        parts.append("Skipped: " + "; ".join(skipped) + ".")
    return "\n\n".join(parts)


def _sensitivity_section(trials: pd.DataFrame, metric: str, out: Path) -> str:
    parts = []
    for loss, rows in _scored_by_loss(trials, metric).items():
        params = varying_hyperparameters(rows, loss) if len(rows) >= 2 else []
        if params:
            file = f"sensitivity_{_file_part(loss)}.png"
            plot_sensitivity(trials, out / file, loss=loss, params=params, metric=metric)
            parts.append(f"### {loss}\n\n![{loss}: {metric} against its hyperparameters]({file})")
    if not parts:
        return ""
    intro = "## Sensitivity\n\nMean ± std of the trials' values per grid value or bin; points are trials."
    return "\n\n".join([intro, *parts])


def _learning_section(epochs: pd.DataFrame, finished: pd.DataFrame, metric: str, out: Path) -> str:
    if epochs[metric].notna().sum() == 0:
        return ""
    plot_learning_curves(epochs, out / "learning_curves.png", metric=metric, trials=finished)
    return ("## Learning curves\n\n![Learning curves](learning_curves.png)\n\nCompleted: solid; stopped: dashed, "
            "ending in x; error: dotted, ending in X; running: solid, ending in >.")


def _file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
