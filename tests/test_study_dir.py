"""results.study_dir: the study directory's one owner. Its part tables, schemas, study.json, file permissions, and a
directory the study has only just started (study.json, no table yet)."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from dml_core.mode import Mode
from results import load_epochs, load_trials, metric_names
from results.study_dir import (
    FORMAT_VERSION,
    REPEAT_COLUMNS,
    PartTable,
    Status,
    StudyInfo,
    StudyPaths,
    epochs_schema,
    final_schema,
    new_study_info,
    read_study_info,
    trials_schema,
    write_study_info,
)

METRICS = ["recall@1", "recall@10", "precision@1", "r_precision", "map@r"]
PARAMS = {"loss": "str", "miner": "str", "triplet.margin": "float", "miner.triplet_margin.type_of_triplets": "str",
          "model.embedding_dim": "int", "train.seed": "int"}


def _row(trial: str, epoch: int, **values: object) -> dict[str, object]:
    return {"study": "s", "trial_id": trial, "config_id": f"c-{trial}", "loss": "triplet", "miner": "none",
            "triplet.margin": 0.1, "model.embedding_dim": 128, "train.seed": 0, "epoch": epoch,
            "recall@1": 0.1 * epoch, "recall@10": 0.2 * epoch, **values}


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode_bits(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- paths and schemas -------------------------------------------------------------------------------------------

def test_study_paths_of_a_local_directory_and_of_a_uri(tmp_path: Path) -> None:
    local = StudyPaths(tmp_path)
    assert local.study == tmp_path / "study.json" and local.config == tmp_path / "config.yaml"
    assert local.epochs == tmp_path / "results" / "epochs.parquet"
    assert local.trials == tmp_path / "results" / "trials.parquet" and local.tune == tmp_path / "tune"
    remote = StudyPaths("s3://bucket/studies/name/")
    assert remote.trials == "s3://bucket/studies/name/results/trials.parquet"
    assert remote.study == "s3://bucket/studies/name/study.json"


def test_schemas_put_the_trial_its_configuration_and_repeat_keys_first() -> None:
    epochs = epochs_schema(PARAMS, METRICS)
    assert epochs.names == ["study", "trial_id", "phase", "config_id", "loss", "miner", "triplet.margin",
                            "miner.triplet_margin.type_of_triplets", "model.embedding_dim", "train.seed",
                            "train.fold", "epoch", *METRICS, "train_loss", "train_time_s", "eval_time_s",
                            "epoch_time_s", "time_total_s", "timestamp", "node_id", "gpu_ids"]
    assert REPEAT_COLUMNS == ("train.seed", "train.fold")
    assert epochs.field("model.embedding_dim").type == pa.int64()
    assert epochs.field("train.fold").type == pa.int64() and epochs.field("triplet.margin").type == pa.float64()
    trials = trials_schema(PARAMS, METRICS)
    assert trials.names[:11] == epochs.names[:11]
    tail = trials.names[11:]
    assert tail[:5] == ["status", "error", "stop_reason", "epochs", "best_epoch"]
    reported = (*METRICS, "train_loss")
    assert tail[5:] == [f"best_{m}" for m in reported] + [f"last_{m}" for m in reported] + ["wall_time_s"]
    # Seed and fold are in every table, sampled or not.
    assert {"train.seed", "train.fold"} <= set(epochs_schema({}, METRICS).names)
    assert [s.value for s in Status] == ["completed", "stopped", "error", "running"]
    # The reality check's final runs: the same head, the run's number and its test scores both ways.
    final = final_schema(PARAMS, METRICS)
    assert final.names[:11] == epochs.names[:11]
    assert final.names[11:13] == ["final_run", "best_epochs"]
    assert final.names[13:] == ([f"concatenated.{m}" for m in METRICS] + [f"separated.{m}" for m in METRICS]
                                + ["wall_time_s"])


# --- PartTable ---------------------------------------------------------------------------------------------------

def test_part_table_round_trip(tmp_path: Path) -> None:
    location = tmp_path / "results" / "epochs.parquet"
    schema = epochs_schema(PARAMS, METRICS)
    table = PartTable(location, schema)
    assert table.part_files() == [] and table.read().num_rows == 0 and table.read().schema == schema
    assert table.append([]) is None and not location.exists()
    first = table.append([_row("t1", 1), _row("t1", 2)])
    second = table.append([_row("t2", 1, node_id="n0", **{"miner.triplet_margin.type_of_triplets": "hard"})])
    assert [Path(first).parent, Path(second).parent] == [location, location]
    assert table.part_files() == sorted(str(p) for p in location.glob("part-*.parquet"))
    read = table.read()
    assert read.schema == schema
    assert read.column("trial_id").to_pylist() == ["t1", "t1", "t2"]  # in write order
    assert read.column("recall@10").to_pylist() == pytest.approx([0.2, 0.4, 0.2])
    # A column a row does not give is null, not missing.
    assert read.column("map@r").null_count == 3 and read.column("train.fold").null_count == 3
    assert read.column("miner.triplet_margin.type_of_triplets").to_pylist() == [None, None, "hard"]
    assert table.read(columns=["trial_id", "epoch"]).column_names == ["trial_id", "epoch"]
    # pandas reads the directory in one call; a part being written (a hidden name) is skipped.
    (location / ".part-000009-x.parquet.tmp").write_bytes(b"PAR1 half")
    frame = pd.read_parquet(location)
    assert len(frame) == 3 and list(frame.columns) == schema.names
    assert len(table.part_files()) == 2


def test_a_reopened_part_table_continues_the_sequence(tmp_path: Path) -> None:
    location = tmp_path / "t.parquet"
    schema = trials_schema(PARAMS, METRICS)
    PartTable(location, schema).append([{"trial_id": "a", "status": "completed"}])
    PartTable(location, schema).append([{"trial_id": "b", "status": "error", "error": "boom"}])
    names = [Path(p).name for p in PartTable(location, schema).part_files()]
    assert [n.split("-")[1] for n in names] == ["000000", "000001"]
    rows = PartTable(location, schema).read().to_pylist()
    assert [(r["trial_id"], r["status"], r["error"]) for r in rows] == [("a", "completed", None),
                                                                          ("b", "error", "boom")]


def test_part_table_on_a_uri(tmp_path: Path) -> None:
    uri = (tmp_path / "epochs.parquet").as_uri()
    table = PartTable(uri, epochs_schema(PARAMS, METRICS))
    written = table.append([_row("t1", 1)])
    assert isinstance(written, str) and written.startswith(uri + "/part-")
    assert PartTable(uri, table.schema).read().column("trial_id").to_pylist() == ["t1"]
    assert len(list((tmp_path / "epochs.parquet").glob("part-*.parquet"))) == 1


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_files_get_the_permissions_of_an_ordinary_new_file(tmp_path: Path, mask: int) -> None:
    """0666 & ~umask, as `open` would give (0644 under the usual umask), not mkstemp's 0600: a study on shared
    storage must be readable by the rest of the team."""
    with _umask(mask):
        part = PartTable(tmp_path / "t.parquet", epochs_schema(PARAMS, METRICS)).append([_row("t1", 1)])
        write_study_info(new_study_info(tmp_path, name="p", metric="recall@1", mode=Mode.MAX, metrics=METRICS,
                                        log_scale={}))
    for path in (Path(part), tmp_path / "study.json"):
        assert _mode_bits(path) == 0o666 & ~mask, (oct(_mode_bits(path)), path)
    assert not [p.name for p in (tmp_path / "t.parquet").iterdir() if p.name.startswith(".")]  # no temp left


# --- study.json --------------------------------------------------------------------------------------------------

def test_study_info_round_trip(tmp_path: Path) -> None:
    info = new_study_info(tmp_path, name="rt", metric="map@r", mode=Mode.MIN, metrics=METRICS,
                          log_scale={"triplet": ["triplet.margin", "train.lr"]})
    assert info.uid and info.created and info.from_file and info.format == FORMAT_VERSION
    write_study_info(info)
    assert read_study_info(tmp_path) == info
    raw = json.loads((tmp_path / "study.json").read_text())
    assert raw == json.loads(info.to_json())
    assert raw["metrics"] == METRICS and raw["mode"] == "min" and raw["format"] == FORMAT_VERSION
    assert raw["log_scale"] == {"triplet": ["triplet.margin", "train.lr"]}
    other = new_study_info(tmp_path, name="rt", metric="map@r", mode=Mode.MIN, metrics=METRICS, log_scale={})
    assert other.uid != info.uid


def test_study_info_of_a_directory_without_study_json_and_of_an_old_one(tmp_path: Path) -> None:
    assert read_study_info(tmp_path / "named") == StudyInfo(path=tmp_path / "named", name="named")
    assert not read_study_info(tmp_path / "named").from_file
    on_uri = read_study_info((tmp_path / "remote").as_uri() + "/")
    assert on_uri.name == "remote" and not on_uri.from_file
    (tmp_path / "study.json").write_text(json.dumps({"name": "old", "metric": "recall@1", "mode": "max"}))
    old = read_study_info(tmp_path)
    assert old.from_file and old.format == 1 and old.metrics == () and old.log_scale == {}


@pytest.mark.parametrize("content", [
    "{", "[1, 2]", '{"mode": "upwards"}', '{"format": "two"}', '{"log_scale": 3}', '{"log_scale": [1]}', "",
])
def test_a_corrupt_study_json_is_a_one_line_error_naming_the_file(tmp_path: Path, content: str) -> None:
    (tmp_path / "study.json").write_text(content)
    with pytest.raises(ValueError, match="is not a valid study.json") as err:
        read_study_info(tmp_path)
    message = str(err.value)
    assert message.startswith(str(tmp_path / "study.json")) and "\n" not in message
    for load in (load_trials, load_epochs):
        with pytest.raises(ValueError, match=re.escape(str(tmp_path / "study.json"))):
            load(tmp_path)


@pytest.mark.parametrize("content", ['{"metrics": "recall@1"}', '{"log_scale": {"triplet": "train.lr"}}'])
def test_a_string_where_study_json_has_a_list_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / "study.json").write_text(content)
    with pytest.raises(ValueError, match="is not a valid study.json"):
        read_study_info(tmp_path)


# --- a study that has not flushed yet ----------------------------------------------------------------------------

def test_a_directory_holding_only_study_json_loads_as_empty_tables(tmp_path: Path) -> None:
    """The study writes study.json at its start, its tables at the first flush: in between, both tables are
    empty, with the fixed columns and the study's metrics."""
    write_study_info(new_study_info(tmp_path, name="fresh", metric="recall@10", mode=Mode.MAX, metrics=METRICS,
                                    log_scale={}))
    trials, epochs = load_trials(tmp_path), load_epochs(tmp_path)
    assert trials.empty and epochs.empty
    assert list(epochs.columns) == epochs_schema({}, METRICS).names
    assert list(trials.columns) == trials_schema({}, METRICS).names
    assert "best_recall@10" in trials.columns and "best_recall@2" not in trials.columns
    assert "recall@10" in epochs.columns and "recall@2" not in epochs.columns
    for table in (trials, epochs):
        assert table.attrs["metrics"] == METRICS and table.attrs["studies"] == ["fresh"]
        assert metric_names(table) == ["precision@1", "r_precision", "map@r", "recall@1", "recall@10"]
    assert list(load_epochs(tmp_path, columns=["trial_id", "recall@10"]).columns) == ["study", "trial_id",
                                                                                       "recall@10"]
    # Integer columns keep their (nullable) type, so concatenating with a later table changes nothing.
    assert str(trials["train.seed"].dtype) == "Int64" and str(epochs["epoch"].dtype) == "Int64"


def test_a_fresh_study_json_without_metrics_gets_the_default_ones(tmp_path: Path) -> None:
    (tmp_path / "study.json").write_text(json.dumps({"name": "old", "metric": "recall@1", "mode": "max"}))
    trials = load_trials(tmp_path)
    assert trials.empty and "metrics" not in trials.attrs
    # TrainConfig's default ks (1, 2, 4, 8).
    assert metric_names(trials) == ["precision@1", "r_precision", "map@r", "recall@1", "recall@2", "recall@4",
                                    "recall@8"]
