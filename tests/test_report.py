"""write_report: report.md holds the studies' numbers and links valid PNGs written beside it."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from results_fixtures import assert_valid_png, hand_ci, metrics_for, study_frames, write_study
from scipy import stats

from dml_core.mode import Mode
from results import write_report
from results.study_dir import new_study_info, write_study_info

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """alpha: finished, 30 normalized_softmax trials (enough for importance) and 12 triplet ones (too few);
    beta: still running (no trials table yet) and older (no study.json)."""
    rng = np.random.default_rng(31)
    root = tmp_path_factory.mktemp("report")
    ea, ta = study_frames(rng, study="alpha", losses=["normalized_softmax"], configs_per_loss=10, repeats=3)
    et, tt = study_frames(rng, study="alpha", losses=["triplet"], configs_per_loss=4, repeats=3)
    tt["trial_id"] = tt["trial_id"] + "t"
    et["trial_id"] = et["trial_id"] + "t"
    ea, ta = pd.concat([ea, et], ignore_index=True), pd.concat([ta, tt], ignore_index=True)
    eb, tb = study_frames(rng, study="beta", losses=["contrastive"], configs_per_loss=3, repeats=3)
    alpha = write_study(root, "alpha", ea, ta)
    beta = write_study(root, "beta", eb, None, study_json=False)
    path = write_report([alpha, beta])
    return SimpleNamespace(path=path, text=path.read_text(), alpha=alpha, beta=beta, ta=ta, tb=tb)


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _row(section: str, first_cell: str) -> list[str]:
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{section}")


def test_report_lands_in_the_first_study_and_links_valid_pngs(report: SimpleNamespace) -> None:
    assert report.path == report.alpha / "report" / "report.md"
    links = IMAGE_LINK.findall(report.text)
    assert {"importance.png", "learning_curves.png", "sensitivity_normalized_softmax.png",
            "sensitivity_triplet.png", "sensitivity_contrastive.png"} <= set(links)
    for link in links:
        assert not Path(link).is_absolute()
        assert_valid_png(report.path.parent / link)


def test_report_counts_trials_by_status(report: SimpleNamespace) -> None:
    section = _section(report.text, "Trials by status")
    header = _row(section, "study")
    alpha = dict(zip(header, _row(section, "alpha")))
    for status, count in report.ta["status"].value_counts().items():
        assert alpha[status] == str(count)
    assert alpha["running"] == "0" and alpha["total"] == str(len(report.ta))
    beta = dict(zip(header, _row(section, "beta")))
    started = int((report.tb["epochs"] > 0).sum())  # a trial with no epoch yet is not visible
    assert (beta["completed"], beta["running"], beta["total"]) == ("0", str(started), str(started))


def test_report_best_per_loss_holds_the_studies_numbers(report: SimpleNamespace) -> None:
    section = _section(report.text, "Best trial per loss")
    header = _row(section, "loss")
    truth = pd.concat([report.ta[report.ta["status"] != "error"], report.tb[report.tb["epochs"] > 0]])
    for loss, rows in truth.groupby("loss"):
        top = rows.loc[rows["best_recall@1"].idxmax()]
        row = dict(zip(header, _row(section, loss)))
        assert row["recall@1"] == f"{top['best_recall@1']:.4f}"
        assert row["trial"] == top["trial_id"] and row["study"] == top["study"]
        assert f"train.lr={top['train.lr']:.4g}" in row["hyperparameters"]


def test_report_summary_matches_a_hand_computed_interval(report: SimpleNamespace) -> None:
    section = _section(report.text, "Best configuration over repeated runs")
    header = _row(section, "loss")
    done = report.ta[(report.ta["status"] == "completed") & (report.ta["loss"] == "normalized_softmax")]
    runs = done.groupby("config_id")["best_recall@1"].agg(["mean", "count"])
    best = runs[runs["count"] >= 2]["mean"].idxmax()
    row = dict(zip(header, _row(section, "normalized_softmax")))
    assert row["config"] == best and row["n"] == str(runs.loc[best, "count"])
    chosen = done[done["config_id"] == best]
    for metric in ("recall@1", "map@r", "precision@1"):
        values = chosen[f"best_{metric}"].tolist()
        mean, half = hand_ci(values, stats.t.ppf(0.975, len(values) - 1))
        assert row[metric] == f"{mean:.4f} ± {half:.4f}"
    assert "contrastive" not in section  # beta has no completed trial


def test_report_importance_table_and_skipped_losses(report: SimpleNamespace) -> None:
    section = _section(report.text, "Hyperparameter importance")
    row = _row(section, "normalized_softmax")
    assert row[1].startswith("normalized_softmax.temperature ")  # the parameter the synthetic recall depends on
    scored = int(((report.ta["loss"] == "triplet") & (report.ta["status"] != "error")).sum())
    assert f"`triplet` ({scored} scored trials; importance needs 20)" in section
    assert "`contrastive` (" in section


def test_report_for_another_metric_into_another_directory(report: SimpleNamespace, tmp_path: Path) -> None:
    path = write_report(report.alpha, tmp_path / "out", metric="map@r")
    assert path == tmp_path / "out" / "report.md"
    text = path.read_text()
    assert "Metric: **map@r** (max)" in text
    section = _section(text, "Best trial per loss")
    scored = report.ta[report.ta["status"] != "error"]
    top = scored.loc[scored[scored["loss"] == "triplet"]["best_map@r"].idxmax()]
    assert _row(section, "triplet")[1] == f"{top['best_map@r']:.4f}"
    assert "beta" not in text


def test_report_of_a_study_with_no_finished_trial(report: SimpleNamespace, tmp_path: Path) -> None:
    text = write_report(report.beta, tmp_path).read_text()
    assert "No completed trial yet." in text
    assert "no study.json: defaults assumed" in text
    assert_valid_png(tmp_path / "learning_curves.png")


def test_report_refuses_a_directory_that_is_not_a_study(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is not a study directory: expected study.json, results/epochs.parquet "
                                         r"or results/trials.parquet"):
        write_report(tmp_path)


def test_report_tables_hold_every_metric_the_study_reports(tmp_path: Path) -> None:
    """A study whose train.ks is [1, 10] and that optimised recall@10: recall@10 is in the report's tables and is
    the metric (study.json's), recall@2 (not reported) is nowhere."""
    epochs, trials = study_frames(np.random.default_rng(32), study="ks", losses=["triplet", "contrastive"],
                                  configs_per_loss=3, repeats=3, ks=(1, 10))
    info = new_study_info(tmp_path, name="ks", metric="recall@10", mode=Mode.MAX, metrics=metrics_for((1, 10)),
                          log_scale={})
    study = write_study(tmp_path, "ks", epochs, trials, metrics=info.metrics, study_json=info)
    text = write_report(study, tmp_path / "out").read_text()
    assert "Metric: **recall@10** (max)" in text
    best = _section(text, "Best trial per loss")
    scored = trials[trials["status"] != "error"]
    for loss, rows in scored.groupby("loss"):
        assert _row(best, loss)[1] == f"{rows['best_recall@10'].max():.4f}"
    section = _section(text, "Best configuration over repeated runs")
    header = _row(section, "loss")
    assert header[:7] == ["loss", "n", "precision@1", "r_precision", "map@r", "recall@1", "recall@10"]
    done = trials[trials["status"] == "completed"]
    for loss in ("triplet", "contrastive"):
        row = dict(zip(header, _row(section, loss)))
        chosen = done[(done["loss"] == loss) & (done["config_id"] == row["config"])]
        values = chosen["best_recall@10"].tolist()
        mean, half = hand_ci(values, stats.t.ppf(0.975, len(values) - 1))
        assert row["n"] == str(len(values)) and row["recall@10"] == f"{mean:.4f} ± {half:.4f}"
    assert "recall@2" not in text and "recall@8" not in text


def test_report_of_a_study_that_has_not_flushed_yet(tmp_path: Path) -> None:
    """Only study.json so far (the study writes it at its start): a report that says so, with the study's metric."""
    write_study_info(new_study_info(tmp_path / "fresh", name="fresh", metric="recall@10", mode=Mode.MAX,
                                    metrics=metrics_for((1, 10)), log_scale={}))
    text = write_report(tmp_path / "fresh").read_text()
    assert "- `fresh`: 0 trials" in text and "no study.json" not in text
    assert "Metric: **recall@10** (max)" in text
    assert "No trial has reported an epoch yet." in text and "No completed trial yet." in text
    assert not IMAGE_LINK.findall(text)
