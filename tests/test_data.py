"""Datasets read from disk (tiny trees of real JPEGs in each layout), the split and fold contract, the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from dml_core.data import (DATASETS, BatchSource, DatasetSplit, DecodedImageDataset, DMLDataset, ImageOptions,
                           InMemoryDataset, dataset_options, load_dataset)
from dml_core.data.base import class_groups
from dml_core.data.cache import CACHE_ENV

SIZE = 16  # small transforms keep the tests fast; layouts are what is under test
OPTIONS = {"image_size": SIZE, "resize_size": 20}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded caches of these throwaway trees go to a temporary directory, not the user's cache."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("decoded-cache")))


def _jpeg(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


# ---------------------------------------------------------------- layouts
def _cub(root: Path, classes: tuple[int, ...] = (1, 2, 101, 102), per_class: int = 2) -> Path:
    lines, labels, names = [], [], []
    image_id = 0
    for c in classes:
        names.append(f"{c} {c:03d}.Bird_{c}")
        for k in range(per_class):
            image_id += 1
            rel = f"{c:03d}.Bird_{c}/Bird_{c}_{k}.jpg"
            _jpeg(root / "images" / rel, image_id)
            lines.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
    (root / "images.txt").write_text("\n".join(lines) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    return root


def _cars(root: Path, classes: tuple[int, ...] = (1, 2, 99, 100), per_class: int = 2) -> Path:
    """cars_annos.mat in the real file's structure: a 1xN struct array `annotations`, a 1x196 cell `class_names`."""
    rows = []
    for c in classes:
        for k in range(per_class):
            rel = f"car_ims/{len(rows) + 1:06d}.jpg"
            _jpeg(root / rel, len(rows))
            rows.append((rel, 1, 2, 30, 25, c, k % 2))
    dtype = [("relative_im_path", "O"), ("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"),
             ("class", "O"), ("test", "O")]
    annotations = np.empty((1, len(rows)), dtype=dtype)
    for i, (rel, x1, y1, x2, y2, c, test) in enumerate(rows):
        # Field values as MATLAB stores them: a char array, and 1x1 numeric matrices.
        annotations[0, i] = (np.array([rel]), *(np.array([[v]], dtype=np.uint16) for v in (x1, y1, x2, y2)),
                             np.array([[c]], dtype=np.uint8), np.array([[test]], dtype=np.uint8))
    names = np.empty((1, 196), dtype=object)
    names[0, :] = [f"Car model {i}" for i in range(1, 197)]
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": annotations, "class_names": names})
    return root


def _sop(root: Path) -> Path:
    header = "image_id class_id super_class_id path"
    train = [(1, 1, "bicycle_final/1_0.JPG"), (2, 1, "bicycle_final/1_1.JPG"), (3, 2, "chair_final/2_0.JPG"),
             (4, 2, "chair_final/2_1.JPG"), (5, 5, "chair_final/5_0.JPG"), (6, 5, "chair_final/5_1.JPG")]
    test = [(7, 3, "kettle_final/3_0.JPG"), (8, 3, "kettle_final/3_1.JPG"), (9, 4, "mug_final/4_0.JPG"),
            (10, 4, "mug_final/4_1.JPG")]
    for rows, name in ((train, "Ebay_train.txt"), (test, "Ebay_test.txt")):
        for image_id, _, rel in rows:
            _jpeg(root / rel, image_id)
        (root / name).write_text("\n".join([header] + [f"{i} {c} 1 {p}" for i, c, p in rows]) + "\n")
    return root


def _folder(root: Path, classes: tuple[str, ...] = ("ant", "bee", "cat", "dog", "eel"), per_class: int = 2) -> Path:
    for i, name in enumerate(classes):
        for k in range(per_class):
            _jpeg(root / name / f"img{k}.JPG", 10 * i + k)
    (root / "empty_class").mkdir()
    (root / "notes.txt").write_text("not a class")
    return root


# ---------------------------------------------------------------- contract shared by every disk layout
LAYOUTS = {
    "cub200": (_cub, 2, 2, 4, 4),  # builder, train classes, test classes, train images, test images
    "cars196": (_cars, 2, 2, 4, 4),
    "sop": (_sop, 3, 2, 6, 4),
    "imagefolder": (_folder, 2, 3, 4, 6),
}


PIPELINES = {"decoded": True, "jpeg": False}  # decoded_cache: decoded once and augmented batch-wise, or per JPEG


@pytest.fixture(params=[(layout, pipeline) for layout in sorted(LAYOUTS) for pipeline in PIPELINES],
                ids=lambda p: "-".join(p))
def disk_split(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, DatasetSplit]:
    layout, pipeline = request.param
    build, *_ = LAYOUTS[layout]
    root = build(tmp_path / "data")
    return layout, load_dataset(layout, root=root, decoded_cache=PIPELINES[pipeline],
                                cache_dir=str(tmp_path / "cache"), **OPTIONS)


def test_disk_split_sizes_and_contiguous_labels(disk_split: tuple[str, DatasetSplit]) -> None:
    name, split = disk_split
    _, n_train_classes, n_test_classes, n_train, n_test = LAYOUTS[name]
    assert (split.train.num_classes, split.test.num_classes) == (n_train_classes, n_test_classes)
    assert (len(split.train), len(split.test)) == (n_train, n_test)
    for part in (split.train, split.test):
        assert part.labels.dtype == torch.int64
        assert sorted(set(part.labels.tolist())) == list(range(part.num_classes))
        assert part.in_channels == 3
    assert not set(split.train.classes) & set(split.test.classes)
    assert split.train.train and not split.test.train


def test_disk_items_are_normalised_float_images(disk_split: tuple[str, DatasetSplit]) -> None:
    _, split = disk_split
    image, label = split.test[0]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert label == int(split.test.labels[0])
    assert image.min() < 0 < image.max()  # ImageNet-normalised, not [0, 1]


def test_disk_datasets_serve_batches_only_through_the_decoded_cache(disk_split: tuple[str, DatasetSplit]) -> None:
    """The trainer serves a BatchSource batch-wise and reads anything else through a DataLoader; both kinds of
    disk data also work item by item in a DataLoader."""
    _, split = disk_split
    assert isinstance(split.train, BatchSource) == isinstance(split.train, DecodedImageDataset)
    batch, labels = next(iter(torch.utils.data.DataLoader(split.train, batch_size=3)))
    assert batch.shape == (3, 3, SIZE, SIZE) and labels.shape == (3,)


def test_eval_transform_is_deterministic_and_train_transform_random(disk_split: tuple[str, DatasetSplit]) -> None:
    _, split = disk_split
    assert torch.equal(split.test[1][0], split.test[1][0])
    train = split.train
    torch.manual_seed(0)
    draws = [train[0][0] for _ in range(6)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    assert torch.equal(train.with_train(False)[0][0], train.with_train(False)[0][0])


def test_cub_classes_follow_the_official_ids(tmp_path: Path) -> None:
    split = load_dataset("cub200", root=_cub(tmp_path), **OPTIONS)
    assert split.train.classes == ("001.Bird_1", "002.Bird_2")
    assert split.test.classes == ("101.Bird_101", "102.Bird_102")
    assert split.train.paths[0].endswith("001.Bird_1/Bird_1_0.jpg")


def test_cub_root_may_be_the_archive_parent(tmp_path: Path) -> None:
    _cub(tmp_path / "CUB_200_2011")
    assert len(load_dataset("cub200", root=tmp_path, **OPTIONS).train) == 4


def test_cars_split_ignores_the_classification_test_flag(tmp_path: Path) -> None:
    split = load_dataset("cars196", root=_cars(tmp_path), **OPTIONS)
    assert split.train.classes == ("Car model 1", "Car model 2")
    assert split.test.classes == ("Car model 99", "Car model 100")


def test_cars_single_annotation_file(tmp_path: Path) -> None:
    """squeeze_me turns a one-element struct array into a scalar: still one image."""
    _cars(tmp_path, classes=(1,), per_class=1)
    with pytest.raises(ValueError, match="both the train and test"):
        load_dataset("cars196", root=tmp_path, **OPTIONS)


def test_sop_uses_the_official_files(tmp_path: Path) -> None:
    split = load_dataset("sop", root=_sop(tmp_path), **OPTIONS)
    assert split.train.classes == ("1", "2", "5") and split.test.classes == ("3", "4")


def test_imagefolder_halves_sorted_class_names(tmp_path: Path) -> None:
    split = load_dataset("imagefolder", root=_folder(tmp_path), **OPTIONS)
    assert split.train.classes == ("ant", "bee") and split.test.classes == ("cat", "dog", "eel")


# ---------------------------------------------------------------- bad input: one-line errors naming the path
@pytest.mark.parametrize("name", ["cub200", "cars196", "sop", "imagefolder"])
def test_missing_root(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"dataset '{name}' needs root"):
        load_dataset(name)
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)) as info:
        load_dataset(name, root=missing)
    assert "\n" not in str(info.value) and "expected" in str(info.value)


@pytest.mark.parametrize(("name", "build", "remove"), [
    ("cub200", _cub, "image_class_labels.txt"), ("cub200", _cub, "images.txt"),
    ("cars196", _cars, "cars_annos.mat"), ("sop", _sop, "Ebay_test.txt")])
def test_missing_metadata_file(name: str, build: object, remove: str, tmp_path: Path) -> None:
    build(tmp_path)  # type: ignore[operator]
    (tmp_path / remove).unlink()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / remove)) as info:
        load_dataset(name, root=tmp_path)
    assert "layout" in str(info.value)


def test_missing_listed_image(tmp_path: Path) -> None:
    _cub(tmp_path)
    gone = tmp_path / "images" / "101.Bird_101" / "Bird_101_1.jpg"
    gone.unlink()
    with pytest.raises(FileNotFoundError, match="1 listed image file"):
        load_dataset("cub200", root=tmp_path, cache_dir=str(tmp_path / "cache"))


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    """The JPEG path finds it when the item is read; the decoded cache when it is built, and builds nothing."""
    _folder(tmp_path / "data")
    bad = tmp_path / "data" / "ant" / "img0.JPG"
    bad.write_bytes(b"not a jpeg at all")
    split = load_dataset("imagefolder", root=tmp_path / "data", decoded_cache=False, **OPTIONS)
    index = split.train.paths.index(str(bad))
    with pytest.raises(ValueError, match=f"cannot read image file {bad}"):
        split.train[index]
    with pytest.raises(ValueError, match=f"cannot read image file {bad}"):
        load_dataset("imagefolder", root=tmp_path / "data", cache_dir=str(tmp_path / "cache"), **OPTIONS)
    assert not list((tmp_path / "cache").rglob("*.bin")), "nothing half-written is left behind"


def test_malformed_lines_are_reported(tmp_path: Path) -> None:
    _cub(tmp_path)
    (tmp_path / "image_class_labels.txt").write_text("1\n")
    with pytest.raises(ValueError, match="image_class_labels.txt:1"):
        load_dataset("cub200", root=tmp_path)
    _sop(tmp_path / "sop")
    (tmp_path / "sop" / "Ebay_train.txt").write_text("header\n1 x 1 a.jpg\n")
    with pytest.raises(ValueError, match="Ebay_train.txt:2"):
        load_dataset("sop", root=tmp_path / "sop")


def test_bad_cars_annotations(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "cars_annos.mat", {"something": np.zeros(3)})
    with pytest.raises(ValueError, match="cars_annos.mat is not a cars_annos.mat"):
        load_dataset("cars196", root=tmp_path)


def test_sop_split_must_be_class_disjoint(tmp_path: Path) -> None:
    _sop(tmp_path)
    with (tmp_path / "Ebay_test.txt").open("a") as handle:
        handle.write("11 1 1 bicycle_final/1_0.JPG\n")
    with pytest.raises(ValueError, match="share 1 class id"):
        load_dataset("sop", root=tmp_path)


def test_imagefolder_needs_two_classes(tmp_path: Path) -> None:
    _folder(tmp_path, classes=("only",))
    with pytest.raises(ValueError, match="1 class folder"):
        load_dataset("imagefolder", root=tmp_path)


# ---------------------------------------------------------------- registry and options
def test_registry_and_unknown_names() -> None:
    assert set(DATASETS) == {"glyphs", "cub200", "cars196", "sop", "imagefolder"}
    with pytest.raises(ValueError, match="unknown dataset 'cub'.*glyphs, cub200, cars196, sop, imagefolder"):
        load_dataset("cub")
    with pytest.raises(ValueError, match="unknown option.*img_size.*expected: image_size"):
        load_dataset("imagefolder", root=".", img_size=3)
    assert dataset_options("sop")["image_size"] == 224


@pytest.mark.parametrize("bad", [{"image_size": 0}, {"image_size": 2.5}, {"image_size": True},
                                 {"image_size": 64, "resize_size": 32}, {"min_crop_scale": 0.0},
                                 {"decoded_cache": "yes"}, {"cache_dir": 3}])
def test_image_options_validation(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        ImageOptions(**bad)  # type: ignore[arg-type]


def test_default_eval_resize_keeps_the_imagenet_ratio() -> None:
    assert ImageOptions().eval_resize == 256 and ImageOptions(image_size=112).eval_resize == 128


# ---------------------------------------------------------------- in-memory data, splits and folds
def _memory(num_classes: int = 10, per_class: int = 3, channels: int = 1) -> InMemoryDataset:
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    images = torch.randint(0, 256, (len(labels), channels, 4, 4), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    return InMemoryDataset(images, labels, [f"c{i}" for i in range(num_classes)], mean=(0.5,) * channels,
                           std=(0.25,) * channels)


def test_get_batch_converts_and_normalises() -> None:
    data = _memory(channels=2)
    indices = torch.tensor([4, 0, 29])
    images, labels = data.get_batch(indices)
    expected = (data.images[indices].float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(images, expected)
    assert images.dtype == torch.float32 and labels.tolist() == [1, 0, 9]
    image, label = data[29]
    torch.testing.assert_close(image, expected[2])
    assert label == 9


def test_select_relabels_contiguously_and_keeps_names() -> None:
    data = _memory()
    part = data.select_classes([7, 2, 9], train=False)
    assert part.classes == ("c2", "c7", "c9") and part.num_classes == 3
    assert part.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert torch.equal(part.images, torch.cat([data.images[6:9], data.images[21:24], data.images[27:30]]))
    assert not part.train


def test_in_memory_validation() -> None:
    with pytest.raises(ValueError, match="uint8"):
        InMemoryDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), ["a"], mean=(0.0,), std=(1.0,))
    with pytest.raises(ValueError, match="index the 1 classes"):
        InMemoryDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), ["a"], mean=(0.0,),
                        std=(1.0,))
    with pytest.raises(ValueError, match="std"):
        InMemoryDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 0]), ["a"], mean=(0.0,),
                        std=(0.0,))


def test_folds_partition_the_training_classes() -> None:
    split = DatasetSplit("toy", _memory(num_classes=10), _memory(num_classes=4).with_train(False))
    folds = split.folds(4)
    assert len(folds) == 4
    val_names = [val.classes for _, val in folds]
    assert [len(v) for v in val_names] == [3, 3, 2, 2]  # contiguous groups of near-equal size
    assert sorted(n for v in val_names for n in v) == sorted(split.train.classes)  # each class validates once
    for train, val in folds:
        assert not set(train.classes) & set(val.classes)
        assert set(train.classes) | set(val.classes) == set(split.train.classes)
        assert train.train and not val.train
        assert sorted(set(train.labels.tolist())) == list(range(train.num_classes))
        assert len(train) + len(val) == len(split.train)
    again = split.folds(4)
    assert all(a[1].classes == b[1].classes and torch.equal(a[1].images, b[1].images) for a, b in zip(folds, again))


@pytest.mark.parametrize("k", [1, 0, 11, 2.0, True])
def test_bad_fold_counts(k: object) -> None:
    split = DatasetSplit("toy", _memory(num_classes=10), _memory(num_classes=4))
    with pytest.raises(ValueError, match="k"):
        split.folds(k)  # type: ignore[arg-type]


def test_class_groups_are_contiguous() -> None:
    assert [g.tolist() for g in class_groups(5, 2)] == [[0, 1, 2], [3, 4]]


def test_dml_dataset_is_a_torch_dataset() -> None:
    assert issubclass(InMemoryDataset, DMLDataset) and issubclass(DMLDataset, torch.utils.data.Dataset)
