"""Analysis of finished or running studies with pandas: tables, importance, plots and the Markdown report.

Reads the study directory through `results.study_dir`, the one owner of its format (the study writes through it
too); never imports Ray or torch, so it runs in a notebook or on a machine that only holds the study directory.

Conventions of every function: the table (or the study directories) comes first, everything else is keyword-only;
`metric=None` means the study's metric (study.json), else recall@1; `mode=None` the study's direction, else the
metric's own; one hyperparameter is `param=`, several are `params=`.
"""

from __future__ import annotations

from dml_core.mode import Mode
from results._best import SCORED, best_per_loss, status_counts
from results._importance import MIN_TRIALS, importance
from results._load import load_epochs, load_final, load_folds, load_trials
from results._plot_importance import plot_importance
from results._plot_learning import plot_learning_curves
from results._plot_reality_check import plot_reality_check
from results._reality_check import REALITY_CHECK_METRICS, reality_check_table
from results._plot_sensitivity import plot_sensitivity
from results._report import write_report
from results._running import trials_in_progress
from results._schema import hyperparameter_columns, is_hyperparameter, metric_names
from results._sensitivity import sensitivity
from results._summary import summary
from results.study_dir import Phase, Status, StudyInfo, read_study_info

__all__ = [
    "MIN_TRIALS",
    "REALITY_CHECK_METRICS",
    "SCORED",
    "Mode",
    "Phase",
    "Status",
    "StudyInfo",
    "best_per_loss",
    "hyperparameter_columns",
    "importance",
    "is_hyperparameter",
    "load_epochs",
    "load_final",
    "load_folds",
    "load_trials",
    "metric_names",
    "plot_importance",
    "plot_learning_curves",
    "plot_reality_check",
    "plot_sensitivity",
    "read_study_info",
    "reality_check_table",
    "sensitivity",
    "status_counts",
    "summary",
    "trials_in_progress",
    "write_report",
]
