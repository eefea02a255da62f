"""results: loading study tables, best per loss, sensitivity, importance, the repeated-runs summary, the metrics a
study reports, and the API's conventions (the table first, the rest keyword-only, metric=None the study's)."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from results_fixtures import (
    EVAL_METRICS,
    LOG_SCALE,
    hand_ci,
    metrics_for,
    study_frames,
    temperature_trials,
    write_part,
    write_study,
)
from scipy import stats

import results
from results import (
    Mode,
    best_per_loss,
    importance,
    load_epochs,
    load_trials,
    metric_names,
    sensitivity,
    status_counts,
    summary,
    trials_in_progress,
)

GRID = (0.005, 0.01, 0.03, 0.05, 0.1, 0.5, 1.0)
# The table order of a study with train.ks = [1, 10], and the order results reads them in (P@1, R-Precision,
# MAP@R, then Recall@K by K).
KS_METRICS = metrics_for((1, 10))  # recall@1, recall@10, precision@1, r_precision, map@r
KS_ORDER = ["precision@1", "r_precision", "map@r", "recall@1", "recall@10"]


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """alpha: normalized_softmax + triplet, repeats by seed, `train.lr` absent from its first part files;
    beta: contrastive, repeats by fold."""
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("studies")
    ea, ta = study_frames(rng, study="alpha", losses=["normalized_softmax", "triplet"], configs_per_loss=4,
                          repeats=3)
    eb, tb = study_frames(rng, study="beta", losses=["contrastive"], configs_per_loss=3, repeats=4,
                          repeat_by="train.fold")
    alpha = write_study(root, "alpha", ea, ta, drop_from_first_part=["train.lr"])
    beta = write_study(root, "beta", eb, tb, parts=2)
    return SimpleNamespace(alpha=alpha, beta=beta, ea=ea, ta=ta, eb=eb, tb=tb)


@pytest.fixture(scope="module")
def ks_study(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A study whose train.ks is [1, 10]: its tables hold recall@1 and recall@10 only, study.json lists them; the
    same tables again under an older study.json that lists no metrics."""
    root = tmp_path_factory.mktemp("ks")
    epochs, trials = study_frames(np.random.default_rng(12), study="ks", losses=["triplet", "contrastive"],
                                  configs_per_loss=3, repeats=3, ks=(1, 10))
    listed = write_study(root, "ks", epochs, trials, metrics=KS_METRICS)
    unlisted = write_study(root, "ks_old", epochs, trials, metrics=KS_METRICS,
                           study_json={"name": "ks_old", "metric": "recall@1", "mode": "max"})
    return SimpleNamespace(listed=listed, unlisted=unlisted, epochs=epochs, trials=trials)


def json_of(info: results.StudyInfo) -> dict[str, object]:
    """study.json's content as a mapping, to write an edited copy."""
    return json.loads(info.to_json())


def _first_part_ids(table_dir: Path) -> set[str]:
    first = min(table_dir.glob("part-*.parquet"))
    return set(pq.read_table(first, columns=["trial_id"])["trial_id"].to_pylist())


def _hparams(row: pd.Series) -> dict[str, object]:
    """The sampled values a trial set, by the naming rule (dotted, or the miner choice; not seed or fold)."""
    return {k: v for k, v in row.items() if (k == "miner" or "." in k)
            and k not in ("train.seed", "train.fold") and not pd.isna(v)}


# --- loading -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("table", ["trials", "epochs"])
def test_load_keeps_a_column_missing_from_the_first_part(studies: SimpleNamespace, table: str) -> None:
    loaded = load_trials(studies.alpha) if table == "trials" else load_epochs(studies.alpha)
    truth = studies.ta if table == "trials" else studies.ea
    first = _first_part_ids(studies.alpha / "results" / f"{table}.parquet")
    assert len(loaded) == len(truth)
    in_first = loaded["trial_id"].isin(first)
    assert 0 < in_first.sum() < len(loaded)
    assert loaded.loc[in_first, "train.lr"].isna().all()
    keys = ["trial_id", "epoch"] if table == "epochs" else ["trial_id"]
    later = loaded[~in_first].merge(truth, on=keys, suffixes=("", "_truth"))
    assert len(later) == (~in_first).sum()
    np.testing.assert_allclose(later["train.lr"], later["train.lr_truth"])


def test_load_concatenates_studies_that_sampled_other_losses(studies: SimpleNamespace) -> None:
    trials = load_trials([studies.alpha, studies.beta])
    assert len(trials) == len(studies.ta) + len(studies.tb)
    assert trials.groupby("study").size().to_dict() == {"alpha": len(studies.ta), "beta": len(studies.tb)}
    beta = trials[trials["study"] == "beta"]
    alpha = trials[trials["study"] == "alpha"]
    assert beta[["normalized_softmax.temperature", "triplet.margin", "miner.triplet_margin.margin"]].isna().all().all()
    assert alpha["contrastive.neg_margin"].isna().all() and alpha["train.fold"].isna().all()
    merged = beta.merge(studies.tb, on="trial_id", suffixes=("", "_truth"))
    np.testing.assert_allclose(merged["contrastive.neg_margin"], merged["contrastive.neg_margin_truth"])
    np.testing.assert_allclose(merged["best_recall@1"].fillna(-1), merged["best_recall@1_truth"].fillna(-1))
    assert merged["train.fold"].tolist() == merged["train.fold_truth"].tolist()
    assert str(trials["train.seed"].dtype) == "Int64" and str(trials["best_epoch"].dtype) == "Int64"
    assert trials.attrs["studies"] == ["alpha", "beta"]
    assert trials.attrs["metrics"] == list(EVAL_METRICS)
    assert trials.attrs["log_scale"]["normalized_softmax"] == LOG_SCALE["normalized_softmax"]


def test_load_gives_the_metric_and_mode_the_studies_agree_on(studies: SimpleNamespace, tmp_path: Path) -> None:
    trials = load_trials([studies.alpha, studies.beta])
    assert trials.attrs["metric"] == "recall@1" and trials.attrs["mode"] == "max"
    info = results.read_study_info(studies.beta)
    by_map = write_study(tmp_path, "by_map", studies.eb, studies.tb,
                         study_json={**json_of(info), "name": "by_map", "metric": "map@r"})
    loaded = load_trials(by_map)
    assert loaded.attrs["metric"] == "map@r" and loaded.attrs["mode"] == "max"
    assert "map@r" in best_per_loss(loaded).columns  # metric=None: the study's


def test_load_leaves_the_metric_out_when_the_studies_disagree(studies: SimpleNamespace, tmp_path: Path) -> None:
    other = write_study(tmp_path, "other", studies.eb, studies.tb,
                        study_json={**json_of(results.read_study_info(studies.beta)), "name": "other",
                                    "metric": "map@r"})
    attrs = load_trials([studies.alpha, other]).attrs
    assert "metric" not in attrs and "mode" not in attrs
    # Without metric in attrs every metric=None falls back to recall@1.
    assert "recall@1" in best_per_loss(load_trials([studies.alpha, other])).columns


def test_load_reads_only_the_requested_columns(studies: SimpleNamespace) -> None:
    # Patterns may match in one study only: alpha has no contrastive columns, beta no triplet ones.
    epochs = load_epochs([studies.alpha, studies.beta], columns=["trial_id", "triplet.*", "contrastive.*",
                                                                  "recall@1"])
    wanted = {c for c in (*studies.ea.columns, *studies.eb.columns) if c.startswith(("triplet.", "contrastive."))}
    assert wanted >= {"triplet.margin", "contrastive.pos_margin", "contrastive.neg_margin"}
    assert set(epochs.columns) == {"study", "trial_id", "recall@1"} | wanted
    assert len(epochs) == len(studies.ea) + len(studies.eb)
    with pytest.raises(ValueError, match=r"'no_such_column'.*available: .*recall@1"):
        load_epochs(studies.alpha, columns=["no_such_column"])


def test_studies_on_a_uri_load_like_local_ones(studies: SimpleNamespace, tmp_path: Path) -> None:
    """Storage given as a URI (s3://, gs://, file://) is read through pyarrow's filesystems, as the study wrote it."""
    uris = [studies.alpha.as_uri(), studies.beta.as_uri() + "/"]
    for load in (load_trials, load_epochs):
        local, remote = load([studies.alpha, studies.beta]), load(uris)
        pd.testing.assert_frame_equal(remote, local)
        assert remote.attrs == local.attrs
    with pytest.raises(ValueError, match="not a study directory") as err:
        load_trials((tmp_path / "nothing").as_uri())
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="cannot be read"):
        load_trials("nosuchscheme://bucket/study")


def test_load_names_the_study_after_its_directory_when_the_table_does_not(tmp_path: Path) -> None:
    epochs, trials = study_frames(np.random.default_rng(0), study="x", losses=["triplet"], configs_per_loss=2)
    old = write_study(tmp_path, "old_study", epochs.drop(columns="study"), trials.drop(columns="study"),
                      omit=["study"], study_json=False)
    assert "study" not in pq.read_schema(min((old / "results" / "trials.parquet").glob("part-*"))).names
    loaded = load_trials(old)
    assert (loaded["study"] == "old_study").all() and len(loaded) == len(trials)
    assert "metric" not in loaded.attrs and "metrics" not in loaded.attrs and loaded.attrs["log_scale"] == {}


def test_load_sees_parts_that_appear_between_calls(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    epochs, trials = study_frames(rng, study="live", losses=["triplet"], configs_per_loss=2, repeats=2)
    _, later_trials = study_frames(rng, study="live", losses=["contrastive"], configs_per_loss=1, repeats=2)
    later_trials["trial_id"] = later_trials["trial_id"] + "_late"
    study = write_study(tmp_path, "live", epochs, trials, parts=1)
    assert len(load_trials(study)) == len(trials)
    # A later part with other columns (another loss's), as a study appends it while running.
    write_part(study / "results" / "trials.parquet", later_trials, table="trials")
    reloaded = load_trials(study)
    assert len(reloaded) == len(trials) + len(later_trials)
    assert set(reloaded["loss"]) == {"triplet", "contrastive"}
    assert reloaded["contrastive.neg_margin"].notna().sum() == len(later_trials)
    assert reloaded["triplet.margin"].notna().sum() == len(trials)


def test_running_study_has_empty_trials_and_rows_from_its_epochs(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    epochs, truth = study_frames(rng, study="run", losses=["triplet", "contrastive"], configs_per_loss=3)
    study = write_study(tmp_path, "run", epochs, None)
    finished = load_trials(study)
    assert finished.empty and {"status", "best_recall@1", "trial_id", "train.seed"} <= set(finished.columns)
    running = trials_in_progress(load_epochs(study), finished)
    expected = truth[truth["epochs"] > 0].set_index("trial_id")
    running = running.set_index("trial_id").loc[expected.index]
    assert (running["status"] == "running").all() and len(running) == len(expected)
    for column in ("best_recall@1", "last_recall@1", "best_map@r", "last_train_loss"):
        np.testing.assert_allclose(running[column], expected[column], err_msg=column)
    assert running["best_epoch"].tolist() == expected["best_epoch"].tolist()
    assert running["epochs"].tolist() == expected["epochs"].tolist()
    assert running["train.seed"].tolist() == expected["train.seed"].tolist()
    assert running["triplet.margin"].fillna(-1).tolist() == expected["triplet.margin"].fillna(-1).tolist()


def test_trials_in_progress_leaves_out_finished_trials(studies: SimpleNamespace) -> None:
    epochs = load_epochs(studies.alpha)
    trials = load_trials(studies.alpha)
    finished = trials.iloc[: len(trials) // 2]
    running = trials_in_progress(epochs, finished)
    with_epochs = set(epochs["trial_id"])
    assert set(running["trial_id"]) == with_epochs - set(finished["trial_id"])
    assert trials_in_progress(epochs, trials).empty


def test_a_directory_that_is_not_a_study_is_refused(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    for path in (tmp_path, tmp_path / "missing"):
        with pytest.raises(ValueError, match=r"not a study directory: expected study.json, "
                                             r"results/epochs.parquet or results/trials.parquet") as err:
            load_trials(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="no study directory given"):
        load_epochs([])


def test_a_broken_study_json_is_refused(tmp_path: Path) -> None:
    epochs, trials = study_frames(np.random.default_rng(0), study="j", losses=["triplet"], configs_per_loss=1)
    study = write_study(tmp_path, "j", epochs, trials, study_json={"name": "j", "mode": "upwards"})
    for load in (load_trials, load_epochs):
        with pytest.raises(ValueError, match=r"study.json is not a valid study.json") as err:
            load(study)
        assert str(study / "study.json") in str(err.value) and "\n" not in str(err.value)


# --- the metrics come from the study -----------------------------------------------------------------------------

def test_metric_names_are_the_studys_in_reading_order(ks_study: SimpleNamespace) -> None:
    for load in (load_trials, load_epochs):
        table = load(ks_study.listed)
        assert table.attrs["metrics"] == list(KS_METRICS)  # as study.json lists them
        assert metric_names(table) == KS_ORDER


def test_metric_names_without_study_json_metrics_come_from_the_columns(ks_study: SimpleNamespace) -> None:
    for load in (load_trials, load_epochs):
        table = load(ks_study.unlisted)
        assert "metrics" not in table.attrs
        assert metric_names(table) == KS_ORDER
    # Recall@K by K as a number (recall@10 after recall@2), best_/last_ read as one metric, NMI last; timings,
    # losses and hyperparameters are not retrieval metrics.
    columns = ["best_recall@10", "last_recall@10", "best_recall@2", "best_nmi", "best_map@r", "best_train_loss",
               "best_r_precision", "best_precision@1", "train.lr", "epoch_time_s", "best_epoch"]
    frame = pd.DataFrame({c: [0.5] for c in columns})
    assert metric_names(frame) == ["precision@1", "r_precision", "map@r", "recall@2", "recall@10", "nmi"]
    # A study's list wins over the columns: its metrics, in reading order, even one without a column yet.
    frame.attrs["metrics"] = ["recall@4", "map@r", "recall@1"]
    assert metric_names(frame) == ["map@r", "recall@1", "recall@4"]


@pytest.mark.parametrize("which", ["listed", "unlisted"])
def test_summary_reports_every_metric_of_the_study(ks_study: SimpleNamespace, which: str) -> None:
    table = summary(load_trials(getattr(ks_study, which))).set_index("loss")
    assert list(table.columns[4:]) == [f"{m}{s}" for m in KS_ORDER for s in ("", "_ci")]
    done = ks_study.trials[ks_study.trials["status"] == "completed"]
    for loss, row in table.iterrows():
        chosen = done[(done["loss"] == loss) & (done["config_id"] == row["config_id"])]
        assert row["n"] == len(chosen) >= 2
        mean, half = hand_ci(chosen["best_recall@10"].tolist(), stats.t.ppf(0.975, len(chosen) - 1))
        assert row["recall@10"] == pytest.approx(mean) and row["recall@10_ci"] == pytest.approx(half)
    assert not any("recall@2" in c or "recall@8" in c for c in table.columns)


# --- the API's conventions ---------------------------------------------------------------------------------------

# What a function may take positionally: the table(s) or study directories it reads, and where a writer writes.
_DATA = {"table", "trials", "epochs", "paths", "study_dir", "importances", "column"}
_SECOND = {"trials", "path", "out_dir"}


def test_every_public_function_takes_its_data_positionally_and_the_rest_by_keyword() -> None:
    functions = {name: getattr(results, name) for name in results.__all__
                 if inspect.isfunction(getattr(results, name))}
    assert {"best_per_loss", "summary", "sensitivity", "importance", "plot_sensitivity",
            "plot_learning_curves", "metric_names", "write_report", "load_trials"} <= set(functions)
    for name, function in functions.items():
        parameters = list(inspect.signature(function).parameters.values())
        positional = [p.name for p in parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        assert positional and positional[0] in _DATA, (name, positional)
        assert set(positional[1:]) <= _SECOND and len(positional) <= 2, (name, positional)
        assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters), name


def test_options_given_positionally_are_refused(studies: SimpleNamespace, tmp_path: Path) -> None:
    trials, epochs = load_trials(studies.alpha), load_epochs(studies.alpha)
    with pytest.raises(TypeError):
        best_per_loss(trials, "recall@1")  # type: ignore[misc]
    with pytest.raises(TypeError):
        best_per_loss(trials, "recall@1", "max")  # type: ignore[misc]
    with pytest.raises(TypeError):
        summary(trials, ["recall@1"])  # type: ignore[misc]
    with pytest.raises(TypeError):
        sensitivity(trials, "triplet", "triplet.margin")  # type: ignore[misc]
    with pytest.raises(TypeError):
        importance(trials, "triplet")  # type: ignore[misc]
    with pytest.raises(TypeError):
        trials_in_progress(epochs, trials, "recall@1")  # type: ignore[misc]
    with pytest.raises(TypeError):
        status_counts(trials, ["study"])  # type: ignore[misc]
    with pytest.raises(TypeError):
        load_trials(studies.alpha, ["trial_id"])  # type: ignore[misc]
    with pytest.raises(TypeError):
        results.plot_sensitivity(trials, tmp_path / "s.png", "triplet")  # type: ignore[misc]


def _disagreeing() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(epochs, trials) of one loss whose recall@1 and map@r rank everything the other way round: configs a, b, c
    run twice each; within each trial recall@1 peaks at epoch 1 and map@r at epoch 2."""
    config = ["a", "a", "b", "b", "c", "c"]
    r1 = [0.60, 0.62, 0.50, 0.52, 0.40, 0.42]
    trials = pd.DataFrame({
        "study": "s", "trial_id": [f"t{i}" for i in range(6)], "config_id": config, "loss": "x", "miner": "none",
        "x.a": [1.0, 1.0, 2.0, 2.0, 3.0, 3.0], "status": "completed",
        "best_recall@1": r1, "best_map@r": [1.0 - r for r in r1]})
    epochs = pd.DataFrame({
        "study": "s", "trial_id": ["t0", "t0", "t1", "t1"], "loss": "x", "epoch": [1, 2, 1, 2],
        "recall@1": [0.6, 0.5, 0.7, 0.4], "map@r": [0.2, 0.3, 0.1, 0.5]})
    return epochs, trials


def test_metric_none_is_the_studys_metric_and_mode_from_attrs() -> None:
    epochs, trials = _disagreeing()
    # No study facts: recall@1, maximised.
    best = best_per_loss(trials)
    assert "map@r" not in best.columns and best.loc[0, "trial_id"] == "t1"
    assert best.loc[0, "recall@1"] == pytest.approx(0.62)
    assert summary(trials).loc[0, "config_id"] == "a"
    assert sensitivity(trials, loss="x", param="x.a").attrs["metric"] == "best_recall@1"
    assert trials_in_progress(epochs, trials.iloc[0:0])["best_epoch"].tolist() == [1, 1]

    trials.attrs.update(metric="map@r", mode="max")
    epochs.attrs.update(metric="map@r", mode="max")
    best = best_per_loss(trials)
    assert "recall@1" not in best.columns and best.loc[0, "trial_id"] == "t4"
    assert best.loc[0, "map@r"] == pytest.approx(0.6)
    assert summary(trials, metrics=["recall@1"]).loc[0, "config_id"] == "c"
    assert sensitivity(trials, loss="x", param="x.a").attrs["metric"] == "best_map@r"
    assert trials_in_progress(epochs, trials.iloc[0:0])["best_epoch"].tolist() == [2, 2]
    # An explicit metric still wins over the study's.
    assert best_per_loss(trials, metric="recall@1").loc[0, "trial_id"] == "t1"

    # The study's mode is its metric's: a study that minimised map@r.
    trials.attrs["mode"] = epochs.attrs["mode"] = "min"
    assert best_per_loss(trials).loc[0, "trial_id"] == "t1"
    assert summary(trials).loc[0, "config_id"] == "a"
    assert trials_in_progress(epochs, trials.iloc[0:0])["best_epoch"].tolist() == [1, 1]
    assert best_per_loss(trials, mode="max").loc[0, "trial_id"] == "t4"
    # ... and says nothing about another metric's direction.
    assert best_per_loss(trials, metric="recall@1").loc[0, "trial_id"] == "t1"


# --- best per loss -----------------------------------------------------------------------------------------------

def test_best_per_loss_matches_a_direct_search(studies: SimpleNamespace) -> None:
    trials = load_trials([studies.alpha, studies.beta])
    best = best_per_loss(trials).set_index("loss")
    truth = pd.concat([studies.ta, studies.tb], ignore_index=True)
    assert set(best.index) == {"normalized_softmax", "triplet", "contrastive"}
    for loss, rows in truth.groupby("loss"):
        scored = [r for _, r in rows.iterrows() if r["status"] != "error" and not pd.isna(r["best_recall@1"])]
        top = max(scored, key=lambda r: r["best_recall@1"])
        assert best.loc[loss, "recall@1"] == pytest.approx(top["best_recall@1"])
        assert best.loc[loss, "trial_id"] == top["trial_id"]
        expected = _hparams(top)
        if top["study"] == "alpha" and top["trial_id"] in _first_part_ids(studies.alpha / "results/trials.parquet"):
            expected.pop("train.lr")  # that part file has no train.lr column
        assert best.loc[loss, "params"] == pytest.approx(expected)
        assert "train.seed" not in best.loc[loss, "params"] and "train.fold" not in best.loc[loss, "params"]
        counts = rows["status"].value_counts()
        for status in ("completed", "stopped", "error"):
            assert best.loc[loss, status] == counts.get(status, 0)
        assert best.loc[loss, "total"] == len(rows)
    assert best["recall@1"].is_monotonic_decreasing


def test_best_per_loss_minimises_when_asked_and_keeps_failed_losses() -> None:
    trials = pd.DataFrame({
        "study": "s", "trial_id": ["t1", "t2", "t3", "t4", "t5"], "config_id": ["a", "b", "c", "d", "e"],
        "loss": ["x", "x", "x", "y", "y"], "miner": "none", "x.margin": [0.1, 0.2, 0.3, None, None],
        "y.scale": [None, None, None, 4.0, 8.0], "train.seed": [0, 0, 0, 0, 0],
        "status": ["completed", "stopped", "error", "error", "error"],
        "best_train_loss": [0.5, 0.2, 0.01, None, None]})
    best = best_per_loss(trials, metric="train_loss").set_index("loss")
    # minimised (inferred from the name); the errored trial's lower value does not count
    assert best.loc["x", "train_loss"] == 0.2 and best.loc["x", "trial_id"] == "t2"
    assert best.loc["x", "params"] == {"x.margin": 0.2, "miner": "none"}
    assert math.isnan(best.loc["y", "train_loss"]) and best.loc["y", "error"] == 2
    assert best_per_loss(trials, metric="train_loss", mode="max").set_index("loss").loc["x", "trial_id"] == "t1"
    assert best_per_loss(trials, metric="train_loss", mode=Mode.MAX).set_index("loss").loc["x", "trial_id"] == "t1"
    assert best.index.tolist() == ["x", "y"]


def test_status_counts_per_study(studies: SimpleNamespace) -> None:
    counts = status_counts(load_trials([studies.alpha, studies.beta])).set_index("study")
    for name, truth in (("alpha", studies.ta), ("beta", studies.tb)):
        for status, count in truth["status"].value_counts().items():
            assert counts.loc[name, status] == count
        assert counts.loc[name, "total"] == len(truth)


def test_bad_metric_loss_mode_and_status_are_one_line_errors(studies: SimpleNamespace) -> None:
    trials = load_trials(studies.alpha)
    with pytest.raises(ValueError, match=r"metric 'recall@3' is not in the table; available: .*best_recall@1"):
        best_per_loss(trials, metric="recall@3")
    with pytest.raises(ValueError, match=r"loss 'arcface' is not in the table; available: normalized_softmax, "
                                         r"triplet"):
        sensitivity(trials, loss="arcface", param="arcface.margin")
    with pytest.raises(ValueError, match=r"hyperparameter 'triplet.margin' is not set .*available: "
                                         r"normalized_softmax.temperature"):
        sensitivity(trials, loss="normalized_softmax", param="triplet.margin")
    with pytest.raises(ValueError, match=r"mode must be 'max' or 'min', got mode='up'"):
        best_per_loss(trials, mode="up")
    with pytest.raises(ValueError, match=r"unknown trial status status='done'"):
        best_per_loss(trials, statuses=["done"])
    with pytest.raises(ValueError, match=r"cannot tell whether 'best_epoch_time' is to be maxim"):
        best_per_loss(trials.assign(best_epoch_time=1.0), metric="best_epoch_time")


# --- sensitivity -------------------------------------------------------------------------------------------------

def test_sensitivity_finds_the_peak_on_a_grid() -> None:
    trials = temperature_trials(np.random.default_rng(3), 350, grid=GRID)
    curve = sensitivity(trials, loss="normalized_softmax", param="normalized_softmax.temperature")
    assert curve["value"].tolist() == list(GRID) and not curve.attrs["binned"]
    assert curve.loc[curve["mean"].idxmax(), "value"] == 0.1
    assert curve["count"].sum() == 350
    at_peak = trials.loc[trials["normalized_softmax.temperature"] == 0.1, "best_recall@1"].to_numpy()
    row = curve.set_index("value").loc[0.1]
    assert row["mean"] == pytest.approx(at_peak.sum() / len(at_peak))
    assert row["std"] == pytest.approx(math.sqrt(((at_peak - at_peak.mean()) ** 2).sum() / (len(at_peak) - 1)))
    assert row["count"] == len(at_peak)


def test_sensitivity_bins_continuous_values_log_spaced_and_finds_the_peak() -> None:
    trials = temperature_trials(np.random.default_rng(4), 400)  # no study.json: the scale is inferred
    curve = sensitivity(trials, loss="normalized_softmax", param="normalized_softmax.temperature")
    assert curve.attrs["binned"] and curve.attrs["log"]
    ratios = (curve["high"] / curve["low"]).to_numpy()
    np.testing.assert_allclose(ratios, ratios[0])
    np.testing.assert_allclose(curve["value"], np.sqrt(curve["low"] * curve["high"]))
    peak = curve.loc[curve["mean"].idxmax()]
    assert peak["low"] <= 0.1 <= peak["high"]
    assert curve["count"].sum() == 400 and len(curve) == 10
    t = trials["normalized_softmax.temperature"]
    inside = trials[(t >= peak["low"]) & (t <= peak["high"])]
    assert peak["mean"] == pytest.approx(inside["best_recall@1"].mean())


def test_sensitivity_takes_the_scale_from_study_json_and_honours_bins() -> None:
    param = "normalized_softmax.temperature"
    trials = temperature_trials(np.random.default_rng(5), 200)
    trials.attrs["log_scale"] = {"normalized_softmax": ["train.lr"]}  # temperature listed as linear
    linear = sensitivity(trials, loss="normalized_softmax", param=param, bins=4)
    widths = (linear["high"] - linear["low"]).to_numpy()
    assert not linear.attrs["log"] and len(linear) == 4
    np.testing.assert_allclose(widths, widths[0])
    trials.attrs["log_scale"] = {"normalized_softmax": [param]}
    assert sensitivity(trials, loss="normalized_softmax", param=param).attrs["log"]
    edges = sensitivity(trials, loss="normalized_softmax", param=param, bins=[0.001, 0.05, 2.0])
    assert edges["low"].tolist() == [0.001, 0.05] and edges["high"].tolist() == [0.05, 2.0]
    assert edges["count"].tolist() == [(trials[param] <= 0.05).sum(), (trials[param] > 0.05).sum()]
    assert not sensitivity(trials, loss="normalized_softmax", param=param, log=False).attrs["log"]
    shifted = trials.assign(**{param: trials[param] - 0.5})
    with pytest.raises(ValueError, match=r"log=True needs positive numeric values of "
                                         r"'normalized_softmax.temperature'"):
        sensitivity(shifted, loss="normalized_softmax", param=param, log=True)
    for bad in (0, True, [0.1], [0.5, 0.1]):
        with pytest.raises(ValueError, match="bin"):
            sensitivity(trials, loss="normalized_softmax", param=param, bins=bad)


def test_sensitivity_on_the_epochs_table_and_a_categorical_parameter(studies: SimpleNamespace) -> None:
    epochs = load_epochs(studies.alpha)
    first = epochs[epochs["epoch"] == 1]
    curve = sensitivity(first, loss="triplet", param="miner", metric="recall@1").set_index("value")
    truth = studies.ea[(studies.ea["epoch"] == 1) & (studies.ea["loss"] == "triplet")]
    for miner in truth["miner"].unique():
        values = truth.loc[truth["miner"] == miner, "recall@1"].tolist()
        assert curve.loc[miner, "mean"] == pytest.approx(sum(values) / len(values))
        assert curve.loc[miner, "count"] == len(values)
    assert curve.attrs["metric"] == "recall@1"


# --- importance --------------------------------------------------------------------------------------------------

def test_importance_ranks_the_relevant_parameter_first() -> None:
    trials = temperature_trials(np.random.default_rng(6), 200)
    scores = importance(trials, loss="normalized_softmax", metric="recall@1")
    # miner and train.batch_size are constant: dropped; train.seed is a repeat key, not a hyperparameter
    assert set(scores.index) == {"normalized_softmax.temperature", "train.weight_decay"}
    assert scores.index[0] == "normalized_softmax.temperature"
    assert scores["normalized_softmax.temperature"] > 3 * scores["train.weight_decay"]
    assert scores.sum() == pytest.approx(1.0)


def _two_sided(rng: np.random.Generator, n: int = 300) -> pd.DataFrame:
    """High values need a > 0.8, low values come from b > 0.8: which one matters depends on the direction."""
    a, b = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    y = (a > 0.8).astype(float) - (b > 0.8).astype(float) + rng.normal(0, 0.01, n)
    return pd.DataFrame({"study": "s", "trial_id": [f"t{i}" for i in range(n)], "loss": "x", "miner": "none",
                         "x.a": a, "x.b": b, "status": "completed", "best_recall@1": y, "best_train_loss": y})


def test_importance_follows_the_direction_of_the_metric() -> None:
    trials = _two_sided(np.random.default_rng(7))
    maximised = importance(trials, loss="x", metric="recall@1")
    minimised = importance(trials, loss="x", metric="train_loss")  # a loss is minimised: inferred from the name
    assert maximised.index[0] == "x.a" and maximised["x.a"] > 2 * maximised["x.b"]
    assert minimised.index[0] == "x.b" and minimised["x.b"] > 2 * minimised["x.a"]
    explicit = importance(trials, loss="x", metric="recall@1", mode=Mode.MIN)
    assert explicit.index[0] == "x.b"
    # metric=None, mode=None: the study's (attrs), here a study that minimised train_loss, then maximised it.
    trials.attrs.update(metric="train_loss", mode="min")
    assert importance(trials, loss="x").index[0] == "x.b"
    trials.attrs["mode"] = "max"
    assert importance(trials, loss="x").index[0] == "x.a"


def test_importance_handles_conditional_parameters_and_integer_columns() -> None:
    _, trials = study_frames(np.random.default_rng(8), study="c", losses=["triplet"], configs_per_loss=120,
                             repeats=1)
    trials["train.batch_size"] = pd.array(np.random.default_rng(9).choice([16, 32, 64], len(trials)), dtype="Int64")
    # Completed trials only: a stopped trial's value reflects its budget more than its hyperparameters.
    scores = importance(trials, loss="triplet", statuses=["completed"])
    assert {"triplet.margin", "miner", "miner.triplet_margin.margin", "miner.triplet_margin.type_of_triplets",
            "train.batch_size"} <= set(scores.index)
    assert "train.seed" not in scores.index
    assert scores.index[0] == "triplet.margin"  # the only parameter the synthetic recall depends on
    assert (scores >= 0).all() and scores.sum() == pytest.approx(1.0)


def test_importance_refuses_too_few_trials_and_constant_tables() -> None:
    trials = temperature_trials(np.random.default_rng(10), 12)
    with pytest.raises(ValueError, match=r"needs at least 20 scored trials with best_recall@1; it has 12"):
        importance(trials, loss="normalized_softmax")
    many = temperature_trials(np.random.default_rng(10), 40).assign(**{"train.weight_decay": 0.0})
    with pytest.raises(ValueError, match=r"no hyperparameter of loss 'normalized_softmax' takes more than one"):
        importance(many, loss="normalized_softmax", params=["train.weight_decay"])
    with pytest.raises(ValueError, match=r"hyperparameter\(s\) 'train.seed' are not set by loss"):
        importance(many, loss="normalized_softmax", params=["train.seed"])
    with pytest.raises(ValueError, match=r"min_trials must be an integer of at least 2, got min_trials=1"):
        importance(many, loss="normalized_softmax", min_trials=1)


# --- summary -----------------------------------------------------------------------------------------------------

T_975_DF3 = 3.182446305284263  # Student t, 97.5% quantile, 3 degrees of freedom (any t-table: 3.182)
T_95_DF3 = 2.353363434801823  # 95% quantile, 3 degrees of freedom (t-table: 2.353)


def _repeats() -> pd.DataFrame:
    rows = [  # loss, config, status, recall@1, map@r
        ("p", "c1", "completed", 0.50, 0.30), ("p", "c1", "completed", 0.56, 0.33),
        ("p", "c1", "completed", 0.61, 0.31), ("p", "c1", "completed", 0.53, 0.36),
        ("p", "c1", "stopped", 0.90, 0.90),  # a shorter run: not averaged with full ones
        ("p", "c2", "completed", 0.40, 0.20), ("p", "c2", "completed", 0.45, 0.22),
        ("p", "c3", "completed", 0.70, 0.50),  # better, but a single run: not a repeated configuration
        ("q", "d1", "completed", 0.30, 0.10), ("q", "d2", "completed", 0.35, 0.12),
    ]
    frame = pd.DataFrame(rows, columns=["loss", "config_id", "status", "best_recall@1", "best_map@r"])
    frame["study"] = "s"
    frame["trial_id"] = [f"t{i}" for i in range(len(frame))]
    frame["p.margin"] = frame["config_id"].map({"c1": 0.1, "c2": 0.2, "c3": 0.3})
    frame["q.margin"] = frame["config_id"].map({"d1": 1.0, "d2": 2.0})
    frame["train.seed"] = range(len(frame))  # repeats differ in seed: not a hyperparameter of the config
    return frame


def test_summary_confidence_interval_matches_a_hand_computation() -> None:
    table = summary(_repeats(), metrics=["recall@1", "map@r"]).set_index("loss")
    mean, half = hand_ci([0.50, 0.56, 0.61, 0.53], T_975_DF3)
    assert table.loc["p", "config_id"] == "c1" and table.loc["p", "n"] == 4
    assert table.loc["p", "recall@1"] == pytest.approx(mean) and table.loc["p", "recall@1_ci"] == pytest.approx(half)
    mean, half = hand_ci([0.30, 0.33, 0.31, 0.36], T_975_DF3)
    assert table.loc["p", "map@r"] == pytest.approx(mean) and table.loc["p", "map@r_ci"] == pytest.approx(half)
    assert table.loc["p", "params"] == {"p.margin": 0.1}
    # q has no repeated configuration: its best single run, without an interval
    assert table.loc["q", "config_id"] == "d2" and table.loc["q", "n"] == 1
    assert table.loc["q", "params"] == {"q.margin": 2.0}
    assert math.isnan(table.loc["q", "recall@1_ci"])
    assert table.index.tolist() == ["p", "q"]
    ninety = summary(_repeats(), metrics=["recall@1"], confidence=0.9).set_index("loss")
    assert ninety.loc["p", "recall@1_ci"] == pytest.approx(hand_ci([0.50, 0.56, 0.61, 0.53], T_95_DF3)[1])
    singles = summary(_repeats(), metrics=["recall@1"], min_repeats=1).set_index("loss")
    assert singles.loc["p", "config_id"] == "c3"
    # Chosen by map@r instead, reported on recall@1 only: the selection metric need not be among `metrics`.
    by_map = summary(_repeats(), metrics=["recall@1"], metric="map@r", min_repeats=1).set_index("loss")
    assert by_map.loc["p", "config_id"] == "c3" and "map@r" not in by_map.columns


def test_summary_of_a_study_repeated_over_folds(studies: SimpleNamespace) -> None:
    table = summary(load_trials(studies.beta))
    assert table["loss"].tolist() == ["contrastive"]
    done = studies.tb[studies.tb["status"] == "completed"]
    means = done.groupby("config_id")["best_recall@1"].agg(["mean", "count"])
    best = means[means["count"] >= 2]["mean"].idxmax()
    assert table.loc[0, "config_id"] == best and table.loc[0, "n"] == means.loc[best, "count"]
    assert list(table.columns[5:]) == [f"{m}{s}" for m in ("precision@1", "r_precision", "map@r", "recall@1",
                                                           "recall@2", "recall@4", "recall@8") for s in ("", "_ci")]
    assert "train.fold" not in table.loc[0, "params"]
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got confidence=1.5"):
        summary(load_trials(studies.beta), confidence=1.5)
    with pytest.raises(ValueError, match=r"min_repeats must be a positive integer, got min_repeats=0"):
        summary(load_trials(studies.beta), min_repeats=0)


# --- packaging ---------------------------------------------------------------------------------------------------

def test_results_imports_neither_ray_nor_torch(studies: SimpleNamespace) -> None:
    """Nor does using it: loading, the tables and the study directory's module (lazy imports count too)."""
    code = ("import sys, results, results.study_dir\n"
            "trials = results.load_trials(sys.argv[1])\n"
            "results.best_per_loss(trials); results.summary(trials); results.metric_names(trials)\n"
            "print('ray' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(studies.alpha)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False"]


# --- the reality check's table -----------------------------------------------------------------------------------


def _final_table(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for loss, centre, runs in (("triplet", 0.30, 10), ("proxy_anchor", 0.36, 10), ("contrastive", 0.25, 3)):
        for run in range(runs):
            row = {"study": "rc", "trial_id": f"{loss}{run}", "loss": loss, "final_run": run}
            for evaluation, shift in (("concatenated", 0.03), ("separated", 0.0)):
                for metric, scale in (("precision@1", 2.0), ("r_precision", 1.2), ("map@r", 1.0)):
                    row[f"{evaluation}.{metric}"] = scale * (centre + shift) + rng.normal(0, 0.01)
            rows.append(row)
    return pd.DataFrame(rows)


def test_reality_check_table_means_and_intervals_equal_scipys() -> None:
    final = _final_table(np.random.default_rng(4))
    table = results.reality_check_table(final)
    assert list(table["loss"]) == ["proxy_anchor", "triplet", "contrastive"]  # by concatenated MAP@R
    assert list(table["n"]) == [10, 10, 3]
    for row in table.to_dict("records"):
        runs = final[final["loss"] == row["loss"]]
        for evaluation in ("concatenated", "separated"):
            for metric in results.REALITY_CHECK_METRICS:
                values = runs[f"{evaluation}.{metric}"].to_numpy()
                low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
                assert row[f"{evaluation}.{metric}"] == pytest.approx(values.mean(), rel=1e-12)
                assert row[f"{evaluation}.{metric}_ci"] == pytest.approx((high - low) / 2, rel=1e-9)
    # Sorted by the first metric when MAP@R is not asked for; a table without final runs is refused by name.
    by_p1 = results.reality_check_table(final, metrics=["precision@1"])
    assert list(by_p1.columns) == ["loss", "n", "concatenated.precision@1", "concatenated.precision@1_ci",
                                   "separated.precision@1", "separated.precision@1_ci"]
    with pytest.raises(ValueError, match="concatenated.map@r"):
        results.reality_check_table(final.drop(columns=["concatenated.map@r"]))


def test_reality_check_plot_is_a_png(tmp_path: Path) -> None:
    table = results.reality_check_table(_final_table(np.random.default_rng(5)))
    path = results.plot_reality_check(table, tmp_path / "rc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="concatenated.nmi"):
        results.plot_reality_check(table, tmp_path / "x.png", metric="nmi")
