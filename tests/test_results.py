"""results: loading study tables, best per loss, sensitivity, importance and the repeated-runs summary."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from results_fixtures import hand_ci, study_frames, temperature_trials, write_study

from results import (
    Mode,
    best_per_loss,
    importance,
    load_epochs,
    load_trials,
    sensitivity,
    status_counts,
    summary,
    trials_in_progress,
)

GRID = (0.005, 0.01, 0.03, 0.05, 0.1, 0.5, 1.0)
HPARAM_PREFIXES = ("loss.", "miner.", "train.")


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """alpha: normalized_softmax + triplet, repeats by seed, `train.lr` absent from its first part files;
    beta: contrastive, repeats by fold."""
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("studies")
    ea, ta = study_frames(rng, study="alpha", losses=["normalized_softmax", "triplet"], configs_per_loss=4,
                          repeats=3)
    eb, tb = study_frames(rng, study="beta", losses=["contrastive"], configs_per_loss=3, repeats=4,
                          repeat_by="fold")
    alpha = write_study(root, "alpha", ea, ta, drop_from_first_part=["train.lr"])
    beta = write_study(root, "beta", eb, tb, parts=2)
    return SimpleNamespace(alpha=alpha, beta=beta, ea=ea, ta=ta, eb=eb, tb=tb)


def _first_part_ids(table_dir: Path) -> set[str]:
    first = sorted(table_dir.glob("part-*.parquet"))[0]
    return set(pq.read_table(first, columns=["trial_id"])["trial_id"].to_pylist())


def _hparams(row: pd.Series) -> dict[str, object]:
    return {k: v for k, v in row.items() if (k == "miner" or k.startswith(HPARAM_PREFIXES))
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
    assert beta[["loss.temperature", "loss.margin", "miner.margin"]].isna().all().all()
    assert alpha["loss.neg_margin"].isna().all() and alpha["fold"].isna().all()
    merged = beta.merge(studies.tb, on="trial_id", suffixes=("", "_truth"))
    np.testing.assert_allclose(merged["loss.neg_margin"], merged["loss.neg_margin_truth"])
    np.testing.assert_allclose(merged["best_recall@1"].fillna(-1), merged["best_recall@1_truth"].fillna(-1))
    assert merged["fold"].tolist() == merged["fold_truth"].tolist()
    assert str(trials["seed"].dtype) == "Int64" and str(trials["best_epoch"].dtype) == "Int64"
    assert trials.attrs["metric"] == "recall@1" and trials.attrs["mode"] == "max"
    assert trials.attrs["log_scale"]["normalized_softmax"] == ["loss.temperature", "train.lr"]


def test_load_reads_only_the_requested_columns(studies: SimpleNamespace) -> None:
    epochs = load_epochs([studies.alpha, studies.beta], columns=["trial_id", "loss.*", "recall@1"])
    wanted = {c for c in (*studies.ea.columns, *studies.eb.columns) if c.startswith("loss.")}
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
                      study_json=False)
    loaded = load_trials(old)
    assert (loaded["study"] == "old_study").all() and len(loaded) == len(trials)
    assert "metric" not in loaded.attrs and loaded.attrs["log_scale"] == {}


def test_load_sees_parts_that_appear_between_calls(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    epochs, trials = study_frames(rng, study="live", losses=["triplet"], configs_per_loss=2, repeats=2)
    later_epochs, later_trials = study_frames(rng, study="live", losses=["contrastive"], configs_per_loss=1,
                                              repeats=2)
    later_trials["trial_id"] = later_trials["trial_id"] + "_late"
    study = write_study(tmp_path, "live", epochs, trials, parts=1)
    assert len(load_trials(study)) == len(trials)
    # A later part with other columns (another loss's), as the study appends it while running.
    pq.write_table(pa.Table.from_pandas(later_trials, preserve_index=False),
                   study / "results" / "trials.parquet" / "part-00009-late.parquet")
    reloaded = load_trials(study)
    assert len(reloaded) == len(trials) + len(later_trials)
    assert set(reloaded["loss"]) == {"triplet", "contrastive"}
    assert reloaded["loss.neg_margin"].notna().sum() == len(later_trials)


def test_running_study_has_empty_trials_and_rows_from_its_epochs(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    epochs, truth = study_frames(rng, study="run", losses=["triplet", "contrastive"], configs_per_loss=3)
    study = write_study(tmp_path, "run", epochs, None)
    finished = load_trials(study)
    assert finished.empty and {"status", "best_recall@1", "trial_id"} <= set(finished.columns)
    running = trials_in_progress(load_epochs(study), finished)
    expected = truth[truth["epochs"] > 0].set_index("trial_id")
    running = running.set_index("trial_id").loc[expected.index]
    assert (running["status"] == "running").all() and len(running) == len(expected)
    for column in ("best_recall@1", "last_recall@1", "best_map@r", "last_train_loss"):
        np.testing.assert_allclose(running[column], expected[column], err_msg=column)
    assert running["best_epoch"].tolist() == expected["best_epoch"].tolist()
    assert running["epochs"].tolist() == expected["epochs"].tolist()
    assert running["loss.margin"].fillna(-1).tolist() == expected["loss.margin"].fillna(-1).tolist()


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
        with pytest.raises(ValueError, match="not a study directory: expected results/epochs.parquet") as err:
            load_trials(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="no study directory given"):
        load_epochs([])


def test_a_broken_study_json_is_refused(studies: SimpleNamespace, tmp_path: Path) -> None:
    epochs, trials = study_frames(np.random.default_rng(0), study="j", losses=["triplet"], configs_per_loss=1)
    study = write_study(tmp_path, "j", epochs, trials, study_json={"name": "j", "mode": "upwards"})
    with pytest.raises(ValueError, match=r"study.json is not a valid study.json"):
        load_trials(study)


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
        counts = rows["status"].value_counts()
        for status in ("completed", "stopped", "error"):
            assert best.loc[loss, status] == counts.get(status, 0)
        assert best.loc[loss, "total"] == len(rows)
    assert best["recall@1"].is_monotonic_decreasing


def test_best_per_loss_minimises_when_asked_and_keeps_failed_losses() -> None:
    trials = pd.DataFrame({
        "study": "s", "trial_id": ["t1", "t2", "t3", "t4", "t5"], "config_id": ["a", "b", "c", "d", "e"],
        "loss": ["x", "x", "x", "y", "y"], "miner": "none", "loss.margin": [0.1, 0.2, 0.3, None, None],
        "loss.scale": [None, None, None, 4.0, 8.0], "status": ["completed", "stopped", "error", "error", "error"],
        "best_train_loss": [0.5, 0.2, 0.01, None, None]})
    best = best_per_loss(trials, "train_loss").set_index("loss")
    # minimised (inferred from the name); the errored trial's lower value does not count
    assert best.loc["x", "train_loss"] == 0.2 and best.loc["x", "trial_id"] == "t2"
    assert best.loc["x", "params"] == {"loss.margin": 0.2, "miner": "none"}
    assert math.isnan(best.loc["y", "train_loss"]) and best.loc["y", "error"] == 2
    assert best_per_loss(trials, "train_loss", mode="max").set_index("loss").loc["x", "trial_id"] == "t1"
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
        best_per_loss(trials, "recall@3")
    with pytest.raises(ValueError, match=r"loss 'arcface' is not in the table; available: normalized_softmax, "
                                         r"triplet"):
        sensitivity(trials, loss="arcface", param="loss.margin")
    with pytest.raises(ValueError, match=r"hyperparameter 'loss.margin' is not set .*available: loss.temperature"):
        sensitivity(trials, loss="normalized_softmax", param="loss.margin")
    with pytest.raises(ValueError, match=r"mode must be 'max' or 'min', got mode='up'"):
        best_per_loss(trials, mode="up")
    with pytest.raises(ValueError, match=r"unknown trial status status='done'"):
        best_per_loss(trials, statuses=["done"])
    with pytest.raises(ValueError, match=r"cannot tell whether 'best_epoch_time' is to be maxim"):
        best_per_loss(trials.assign(best_epoch_time=1.0), "best_epoch_time")


# --- sensitivity -------------------------------------------------------------------------------------------------

def test_sensitivity_finds_the_peak_on_a_grid() -> None:
    trials = temperature_trials(np.random.default_rng(3), 350, grid=GRID)
    curve = sensitivity(trials, loss="normalized_softmax", param="loss.temperature")
    assert curve["value"].tolist() == list(GRID) and not curve.attrs["binned"]
    assert curve.loc[curve["mean"].idxmax(), "value"] == 0.1
    assert curve["count"].sum() == 350
    at_peak = trials.loc[trials["loss.temperature"] == 0.1, "best_recall@1"].to_numpy()
    row = curve.set_index("value").loc[0.1]
    assert row["mean"] == pytest.approx(at_peak.sum() / len(at_peak))
    assert row["std"] == pytest.approx(math.sqrt(((at_peak - at_peak.mean()) ** 2).sum() / (len(at_peak) - 1)))
    assert row["count"] == len(at_peak)


def test_sensitivity_bins_continuous_values_log_spaced_and_finds_the_peak() -> None:
    trials = temperature_trials(np.random.default_rng(4), 400)  # no study.json: the scale is inferred
    curve = sensitivity(trials, loss="normalized_softmax", param="loss.temperature")
    assert curve.attrs["binned"] and curve.attrs["log"]
    ratios = (curve["high"] / curve["low"]).to_numpy()
    np.testing.assert_allclose(ratios, ratios[0])
    np.testing.assert_allclose(curve["value"], np.sqrt(curve["low"] * curve["high"]))
    peak = curve.loc[curve["mean"].idxmax()]
    assert peak["low"] <= 0.1 <= peak["high"]
    assert curve["count"].sum() == 400 and len(curve) == 10
    inside = trials[(trials["loss.temperature"] >= peak["low"]) & (trials["loss.temperature"] <= peak["high"])]
    assert peak["mean"] == pytest.approx(inside["best_recall@1"].mean())


def test_sensitivity_takes_the_scale_from_study_json_and_honours_bins() -> None:
    trials = temperature_trials(np.random.default_rng(5), 200)
    trials.attrs["log_scale"] = {"normalized_softmax": ["train.lr"]}  # temperature listed as linear
    linear = sensitivity(trials, loss="normalized_softmax", param="loss.temperature", bins=4)
    widths = (linear["high"] - linear["low"]).to_numpy()
    assert not linear.attrs["log"] and len(linear) == 4
    np.testing.assert_allclose(widths, widths[0])
    trials.attrs["log_scale"] = {"normalized_softmax": ["loss.temperature"]}
    assert sensitivity(trials, loss="normalized_softmax", param="loss.temperature").attrs["log"]
    edges = sensitivity(trials, loss="normalized_softmax", param="loss.temperature", bins=[0.001, 0.05, 2.0])
    assert edges["low"].tolist() == [0.001, 0.05] and edges["high"].tolist() == [0.05, 2.0]
    assert edges["count"].tolist() == [(trials["loss.temperature"] <= 0.05).sum(),
                                       (trials["loss.temperature"] > 0.05).sum()]
    assert not sensitivity(trials, loss="normalized_softmax", param="loss.temperature", log=False).attrs["log"]
    shifted = trials.assign(**{"loss.temperature": trials["loss.temperature"] - 0.5})
    with pytest.raises(ValueError, match=r"log=True needs positive numeric values of 'loss.temperature'"):
        sensitivity(shifted, loss="normalized_softmax", param="loss.temperature", log=True)
    for bad in (0, True, [0.1], [0.5, 0.1]):
        with pytest.raises(ValueError, match="bin"):
            sensitivity(trials, loss="normalized_softmax", param="loss.temperature", bins=bad)


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
    # miner and train.batch_size are constant: dropped
    assert set(scores.index) == {"loss.temperature", "train.weight_decay"}
    assert scores.index[0] == "loss.temperature" and scores["loss.temperature"] > 3 * scores["train.weight_decay"]
    assert scores.sum() == pytest.approx(1.0)


def _two_sided(rng: np.random.Generator, n: int = 300) -> pd.DataFrame:
    """High values need a > 0.8, low values come from b > 0.8: which one matters depends on the direction."""
    a, b = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    y = (a > 0.8).astype(float) - (b > 0.8).astype(float) + rng.normal(0, 0.01, n)
    return pd.DataFrame({"study": "s", "trial_id": [f"t{i}" for i in range(n)], "loss": "x", "miner": "none",
                         "loss.a": a, "loss.b": b, "status": "completed", "best_recall@1": y, "best_train_loss": y})


def test_importance_follows_the_direction_of_the_metric() -> None:
    trials = _two_sided(np.random.default_rng(7))
    maximised = importance(trials, loss="x", metric="recall@1")
    minimised = importance(trials, loss="x", metric="train_loss")  # a loss is minimised: inferred from the name
    assert maximised.index[0] == "loss.a" and maximised["loss.a"] > 2 * maximised["loss.b"]
    assert minimised.index[0] == "loss.b" and minimised["loss.b"] > 2 * minimised["loss.a"]
    explicit = importance(trials, loss="x", metric="recall@1", mode=Mode.MIN)
    assert explicit.index[0] == "loss.b"


def test_importance_handles_conditional_parameters_and_integer_columns() -> None:
    _, trials = study_frames(np.random.default_rng(8), study="c", losses=["triplet"], configs_per_loss=120,
                             repeats=1)
    trials["train.batch_size"] = pd.array(np.random.default_rng(9).choice([16, 32, 64], len(trials)), dtype="Int64")
    # Completed trials only: a stopped trial's value reflects its budget more than its hyperparameters.
    scores = importance(trials, loss="triplet", statuses=["completed"])
    assert {"loss.margin", "miner", "miner.margin", "miner.type_of_triplets", "train.batch_size"} <= set(scores.index)
    assert scores.index[0] == "loss.margin"  # the only parameter the synthetic recall depends on
    assert (scores >= 0).all() and scores.sum() == pytest.approx(1.0)


def test_importance_refuses_too_few_trials_and_constant_tables() -> None:
    trials = temperature_trials(np.random.default_rng(10), 12)
    with pytest.raises(ValueError, match=r"needs at least 20 scored trials with best_recall@1; it has 12"):
        importance(trials, loss="normalized_softmax")
    many = temperature_trials(np.random.default_rng(10), 40).assign(**{"train.weight_decay": 0.0})
    with pytest.raises(ValueError, match=r"no hyperparameter of loss 'normalized_softmax' takes more than one"):
        importance(many, loss="normalized_softmax", params=["train.weight_decay"])
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
    frame["loss.margin"] = frame["config_id"].map({"c1": 0.1, "c2": 0.2, "c3": 0.3, "d1": 1.0, "d2": 2.0})
    return frame


def test_summary_confidence_interval_matches_a_hand_computation() -> None:
    table = summary(_repeats(), ["recall@1", "map@r"]).set_index("loss")
    mean, half = hand_ci([0.50, 0.56, 0.61, 0.53], T_975_DF3)
    assert table.loc["p", "config_id"] == "c1" and table.loc["p", "n"] == 4
    assert table.loc["p", "recall@1"] == pytest.approx(mean) and table.loc["p", "recall@1_ci"] == pytest.approx(half)
    mean, half = hand_ci([0.30, 0.33, 0.31, 0.36], T_975_DF3)
    assert table.loc["p", "map@r"] == pytest.approx(mean) and table.loc["p", "map@r_ci"] == pytest.approx(half)
    assert table.loc["p", "params"] == {"loss.margin": 0.1}
    # q has no repeated configuration: its best single run, without an interval
    assert table.loc["q", "config_id"] == "d2" and table.loc["q", "n"] == 1
    assert math.isnan(table.loc["q", "recall@1_ci"])
    assert table.index.tolist() == ["p", "q"]
    ninety = summary(_repeats(), ["recall@1"], confidence=0.9).set_index("loss")
    assert ninety.loc["p", "recall@1_ci"] == pytest.approx(hand_ci([0.50, 0.56, 0.61, 0.53], T_95_DF3)[1])
    singles = summary(_repeats(), ["recall@1"], min_repeats=1).set_index("loss")
    assert singles.loc["p", "config_id"] == "c3"


def test_summary_of_a_study_repeated_over_folds(studies: SimpleNamespace) -> None:
    table = summary(load_trials(studies.beta))
    assert table["loss"].tolist() == ["contrastive"]
    done = studies.tb[studies.tb["status"] == "completed"]
    means = done.groupby("config_id")["best_recall@1"].agg(["mean", "count"])
    best = means[means["count"] >= 2]["mean"].idxmax()
    assert table.loc[0, "config_id"] == best and table.loc[0, "n"] == means.loc[best, "count"]
    assert list(table.columns[5:]) == [f"{m}{s}" for m in ("precision@1", "r_precision", "map@r", "recall@1",
                                                           "recall@2", "recall@4", "recall@8") for s in ("", "_ci")]
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got confidence=1.5"):
        summary(load_trials(studies.beta), confidence=1.5)
    with pytest.raises(ValueError, match=r"min_repeats must be a positive integer, got min_repeats=0"):
        summary(load_trials(studies.beta), min_repeats=0)


# --- packaging ---------------------------------------------------------------------------------------------------

def test_results_imports_neither_ray_nor_torch() -> None:
    code = "import sys, results; print('ray' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False"]
