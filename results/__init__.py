"""Analysis of finished or running studies with pandas: tables, importance, plots and the Markdown report.

Reads the study's Parquet tables (docs/architecture.md); never imports Ray or torch, so it runs in a notebook or
on a machine that only holds the study directory.
"""

from __future__ import annotations

from results._best import SCORED, best_per_loss, status_counts
from results._importance import MIN_TRIALS, importance
from results._load import load_epochs, load_trials
from results._plot_importance import plot_importance
from results._plot_learning import plot_learning_curves
from results._plot_sensitivity import plot_sensitivity
from results._report import write_report
from results._running import trials_in_progress
from results._schema import METRICS, Mode, Status
from results._sensitivity import sensitivity
from results._study_dir import StudyInfo, read_study_info
from results._summary import summary

__all__ = [
    "METRICS",
    "MIN_TRIALS",
    "SCORED",
    "Mode",
    "Status",
    "StudyInfo",
    "best_per_loss",
    "importance",
    "load_epochs",
    "load_trials",
    "plot_importance",
    "plot_learning_curves",
    "plot_sensitivity",
    "read_study_info",
    "sensitivity",
    "status_counts",
    "summary",
    "trials_in_progress",
    "write_report",
]
