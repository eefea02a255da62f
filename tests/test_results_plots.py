"""results plots: valid PNGs that matplotlib reads back, and what the figures draw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from results_fixtures import assert_valid_png, study_frames, temperature_trials

from results import importance, plot_importance, plot_learning_curves, plot_sensitivity, sensitivity
from results._plot_learning import learning_curves_figure
from results._plot_sensitivity import sensitivity_figure


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return study_frames(np.random.default_rng(21), study="p", losses=["normalized_softmax", "triplet"],
                        configs_per_loss=5, repeats=2)


def test_sensitivity_plot_is_a_png_with_the_band_and_the_points(tmp_path: Path) -> None:
    trials = temperature_trials(np.random.default_rng(1), 150, grid=(0.005, 0.05, 0.1, 0.5, 1.0))
    trials.loc[trials.index[::4], "status"] = "stopped"  # ASHA stopped a quarter early
    param = "normalized_softmax.temperature"
    path = plot_sensitivity(trials, tmp_path / "sens.png", loss="normalized_softmax", params=param)
    assert path == tmp_path / "sens.png"
    assert_valid_png(path)
    figure = sensitivity_figure(trials, loss="normalized_softmax", params=[param])
    (ax,) = figure.axes
    # Equal budget: the curve runs through the trials that ran every epoch; those stopped early are marked apart.
    assert set(trials["status"]) >= {"completed", "stopped"}
    curve = sensitivity(trials, loss="normalized_softmax", param=param, statuses=["completed"])
    mean_line = next(line for line in ax.get_lines() if line.get_label() == "mean")
    np.testing.assert_allclose(mean_line.get_xdata(), curve["value"])
    np.testing.assert_allclose(mean_line.get_ydata(), curve["mean"])
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # the mean +- std band
    full = next(c for c in ax.collections if c.get_label() == "trials (all epochs)")
    stopped = next(c for c in ax.collections if c.get_label() == "stopped early (fewer epochs)")
    assert len(full.get_offsets()) == (trials["status"] == "completed").sum()
    assert len(full.get_offsets()) + len(stopped.get_offsets()) == trials["status"].isin(["completed", "stopped"]).sum()
    assert ax.get_xscale() == "log"  # 0.005..1 spans over two decades: inferred log


def test_sensitivity_panels_do_not_mislead(tmp_path: Path) -> None:
    """Few trials: no curve, and the panel says so. Categories: points with their spread, not a line. A log axis
    within one decade: its ticks carry numbers."""
    param = "normalized_softmax.temperature"
    few = temperature_trials(np.random.default_rng(2), 4).assign(status="completed")
    (ax,) = sensitivity_figure(few, loss="normalized_softmax", params=[param]).axes
    assert not [line for line in ax.get_lines() if line.get_label() == "mean"]
    assert any("too few trials" in text.get_text() for text in ax.texts)

    # A designed sweep (the sensitivity preset): each grid value run with two seeds is a curve of means.
    sweep = temperature_trials(np.random.default_rng(5), 14, grid=(0.005, 0.01, 0.03, 0.05, 0.1, 0.5, 1.0))
    sweep = sweep.assign(status="completed")
    sweep[param] = np.repeat([0.005, 0.01, 0.03, 0.05, 0.1, 0.5, 1.0], 2)
    (ax,) = sensitivity_figure(sweep, loss="normalized_softmax", params=[param]).axes
    (mean_line,) = [line for line in ax.get_lines() if line.get_label() == "mean"]
    assert len(mean_line.get_xdata()) == 7
    assert any(c.get_label() == "mean ± std, n = 2 per value" for c in ax.collections)
    assert not any("too few trials" in text.get_text() for text in ax.texts)

    narrow = temperature_trials(np.random.default_rng(3), 60).assign(status="completed")
    narrow[param] = np.random.default_rng(3).uniform(0.02, 0.08, len(narrow))
    narrow.attrs["log_scale"] = {"normalized_softmax": [param]}
    figure = sensitivity_figure(narrow, loss="normalized_softmax", params=[param])
    (ax,) = figure.axes
    figure.canvas.draw()
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.xaxis.get_ticklabels(which="both") if t.get_text()]
    assert len(labels) >= 2, labels

    miners = temperature_trials(np.random.default_rng(4), 60).assign(status="completed")
    miners["miner"] = np.random.default_rng(4).choice(["none", "triplet_margin", "multi_similarity"], len(miners))
    (ax,) = sensitivity_figure(miners, loss="normalized_softmax", params=["miner"]).axes
    joined = [line for line in ax.get_lines() if len(line.get_xdata()) > 1 and line.get_linestyle() not in ("None", "")]
    assert not joined  # no line between categories
    assert [c for c in ax.containers if c.get_label() == "mean ± std"]  # an error bar per category


def test_sensitivity_plot_of_categorical_and_conditional_parameters(tmp_path: Path,
                                                                     frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, trials = frames
    figure = sensitivity_figure(trials, loss="triplet")
    labels = [ax.get_xlabel() for ax in figure.axes]
    # The loss's own first, then the miner and its hyperparameters, then the run's; never seed or fold.
    assert labels == ["triplet.margin", "miner", "miner.triplet_margin.margin",
                      "miner.triplet_margin.type_of_triplets", "train.lr", "train.weight_decay"]
    assert_valid_png(plot_sensitivity(trials, tmp_path / "triplet.png", loss="triplet"))
    constant = trials[trials["loss"] == "triplet"].assign(**{c: 0.1 for c in ("triplet.margin", "train.lr",
                                                                            "train.weight_decay")})
    constant = constant.assign(miner="none", **{"miner.triplet_margin.margin": np.nan,
                                                "miner.triplet_margin.type_of_triplets": None})
    with pytest.raises(ValueError, match="loss 'triplet' has no hyperparameter that varies"):
        plot_sensitivity(constant, tmp_path / "none.png", loss="triplet")


def test_importance_plot_has_a_bar_per_parameter(tmp_path: Path) -> None:
    trials = temperature_trials(np.random.default_rng(2), 60)
    scores = {"normalized_softmax": importance(trials, loss="normalized_softmax"),
              "other": pd.Series({"other.a": 0.7, "other.b": 0.2, "miner": 0.1})}
    path = plot_importance(scores, tmp_path / "imp.png")
    assert_valid_png(path)
    with pytest.raises(ValueError, match="no importances to plot"):
        plot_importance({}, tmp_path / "empty.png")


def test_learning_curves_draw_stopped_trials_dashed_with_end_markers(tmp_path: Path,
                                                                     frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    epochs, trials = frames
    unfinished = trials["trial_id"].iloc[:3]  # their trials rows not written yet: running
    finished = trials[~trials["trial_id"].isin(unfinished)]
    figure = learning_curves_figure(epochs, trials=finished)
    assert [ax.get_title() for ax in figure.axes] == ["normalized_softmax", "triplet"]
    for ax, loss in zip(figure.axes, ["normalized_softmax", "triplet"]):
        of_loss = trials[(trials["loss"] == loss) & (trials["epochs"] > 0)]
        expected = of_loss["status"].where(~of_loss["trial_id"].isin(unfinished), "running").value_counts()
        drawn = {c.get_label(): (len(c.get_segments()), c.get_linestyle()[0][1])
                 for c in ax.collections if isinstance(c, LineCollection)}
        assert {status: count for status, (count, _) in drawn.items()} == expected.to_dict()
        for status, (_, dashes) in drawn.items():
            # solid for completed and running; a dash pattern for stopped and error
            assert (dashes is None) == (status in ("completed", "running")), status
        legend = {t.get_text().split(" ")[0]: int(t.get_text().split("(")[1][:-1])
                  for t in ax.get_legend().get_texts()}
        assert legend == expected.to_dict()
    assert any("stopped" in [c.get_label() for c in ax.collections] for ax in figure.axes)
    assert_valid_png(plot_learning_curves(epochs, tmp_path / "curves.png", trials=finished))
    assert_valid_png(plot_learning_curves(epochs, tmp_path / "plain.png"))
    with pytest.raises(ValueError, match=r"loss\(es\) 'arcface'; available: normalized_softmax, triplet"):
        plot_learning_curves(epochs, tmp_path / "x.png", losses=["arcface"])


def test_learning_curves_of_a_sweep_are_coloured_by_the_swept_value() -> None:
    """One hyperparameter over a few values (a sensitivity sweep): a colour per value, named in the legend."""
    grid = [0.01, 0.1, 1.0]
    rows = [{"study": "s", "trial_id": f"t{i}", "loss": "normalized_softmax", "epoch": epoch,
             "normalized_softmax.temperature": grid[i % 3], "recall@1": 0.1 * epoch + 0.01 * i}
            for i in range(6) for epoch in (1, 2, 3)]
    epochs = pd.DataFrame(rows)
    trials = pd.DataFrame({"study": "s", "trial_id": [f"t{i}" for i in range(6)], "status": "completed"})
    (ax,) = learning_curves_figure(epochs, trials=trials, metric="recall@1").axes
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    colours = [tuple(c) for c in lines.get_colors()]
    assert len(set(colours)) == 3 and colours[0] == colours[3] and colours[0] != colours[1]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["completed (6)", "temperature = 0.01", "temperature = 0.1", "temperature = 1"]


def test_plots_default_to_the_studys_metric(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """metric=None is the metric the study optimised (attrs, from study.json), else recall@1."""
    epochs, trials = (frame.copy() for frame in frames)
    assert learning_curves_figure(epochs).axes[0].get_ylabel() == "recall@1"
    assert sensitivity_figure(trials, loss="triplet").axes[0].get_ylabel() == "best_recall@1"
    epochs.attrs.update(metric="map@r", mode="max")
    trials.attrs.update(metric="map@r", mode="max")
    figure = learning_curves_figure(epochs, trials=trials)
    assert figure.get_suptitle() == "Learning curves: map@r"
    assert {ax.get_ylabel() for ax in figure.axes} == {"map@r"}
    drawn = np.concatenate([np.concatenate(c.get_segments()) for ax in figure.axes for c in ax.collections
                            if isinstance(c, LineCollection)])
    np.testing.assert_allclose(np.sort(drawn[:, 1]), np.sort(epochs["map@r"].to_numpy(dtype=float)))
    sens = sensitivity_figure(trials, loss="triplet")
    assert {ax.get_ylabel() for ax in sens.axes} == {"best_map@r"}
    assert sens.get_suptitle() == "triplet\nmap@r against its hyperparameters"
