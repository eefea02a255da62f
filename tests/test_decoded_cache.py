"""The decoded cache of disk data sets and the batch augmentation on the device: pixels equal the JPEG path's, crops
follow torchvision's algorithm, stale, cut-short and concurrent caches are handled, a cached load decodes nothing."""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

import dml_core.data.decoded_cache as decoded_cache
from dml_core.data import DecodedImageDataset, load_dataset
from dml_core.data.batch_augment import (
    ATTEMPTS,
    centre_boxes,
    crop_resize,
    random_resized_boxes,
)
from dml_core.data.transforms import CROP_RATIO, IMAGENET_MEAN, IMAGENET_STD

SIZE, RESIZE = 16, 20
OPTIONS = {"image_size": SIZE, "resize_size": RESIZE}
# Portrait, landscape, square, and extreme shapes whose crops fall back to the centre.
SHAPES = [(30, 40), (50, 24), (32, 32), (21, 90), (120, 22), (45, 45)]


def _tree(root: Path, classes: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        for i, (h, w) in enumerate(SHAPES):
            path = root / f"class{c}" / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
    return root


def _load(root: Path, cache: Path, **changes: object):
    return load_dataset("imagefolder", root=root, cache_dir=str(cache), **{**OPTIONS, **changes})


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    return _tree(tmp_path / "data")


def test_evaluation_pixels_equal_the_jpeg_path(tree: Path, tmp_path: Path) -> None:
    decoded = _load(tree, tmp_path / "cache").test
    jpeg = _load(tree, tmp_path / "cache", decoded_cache=False).test
    assert isinstance(decoded, DecodedImageDataset)
    images, labels = decoded.get_batch(torch.arange(len(decoded)))
    for i in range(len(jpeg)):
        image, label = jpeg[i]
        # The same uint8 pixels; the normalisation's rounding differs (one multiply-add against subtract, divide).
        torch.testing.assert_close(images[i], image.as_subclass(torch.Tensor), atol=2e-6, rtol=0, msg=f"item {i}")
        assert int(labels[i]) == label


def test_cached_images_are_the_resized_decodes(tree: Path, tmp_path: Path) -> None:
    split = _load(tree, tmp_path / "cache")
    store = split.train.images
    host = store.gather([0, 3])
    for b, index in enumerate([0, 3]):
        path = sorted(tree.glob("class0/*.jpg"))[index]
        expected = TF.resize(TF.pil_to_tensor(Image.open(path).convert("RGB")), [RESIZE], antialias=True)
        assert torch.equal(host.image(b), expected)
        assert min(host.image(b).shape[1:]) == RESIZE


def _reference_boxes(shapes: torch.Tensor, generator: torch.Generator, scale: tuple[float, float],
                     ratio: tuple[float, float]) -> list[list[int]]:
    """torchvision's RandomResizedCrop.get_params, a loop per image, fed the same uniform draws."""
    batch = shapes.shape[0]
    area_u, ratio_u, place_u = (torch.rand(batch, n, generator=generator, dtype=torch.float64)
                                for n in (ATTEMPTS, ATTEMPTS, 2))
    boxes = []
    for b, (height, width) in enumerate(shapes.tolist()):
        area = height * width
        log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        for attempt in range(ATTEMPTS):
            target_area = area * (scale[0] + (scale[1] - scale[0]) * float(area_u[b, attempt]))
            aspect_ratio = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * float(ratio_u[b, attempt]))
            w = int(round(math.sqrt(target_area * aspect_ratio)))
            h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                i = int(float(place_u[b, 0]) * (height - h + 1))
                j = int(float(place_u[b, 1]) * (width - w + 1))
                boxes.append([i, j, h, w])
                break
        else:
            in_ratio = float(width) / float(height)
            if in_ratio < min(ratio):
                w, h = width, int(round(width / min(ratio)))
            elif in_ratio > max(ratio):
                h, w = height, int(round(height * max(ratio)))
            else:
                w, h = width, height
            boxes.append([(height - h) // 2, (width - w) // 2, h, w])
    return boxes


@pytest.mark.parametrize("scale", [(0.16, 1.0), (0.9, 1.0), (0.01, 0.05)])
def test_crop_boxes_follow_torchvision_get_params(scale: tuple[float, float]) -> None:
    shapes = torch.tensor([[256, 341], [341, 256], [256, 256], [256, 4000], [4000, 256], [17, 300], [3, 3]] * 40)
    drawn = random_resized_boxes(shapes, torch.Generator().manual_seed(7), scale=scale, ratio=CROP_RATIO)
    reference = _reference_boxes(shapes, torch.Generator().manual_seed(7), scale, CROP_RATIO)
    assert drawn.tolist() == reference
    top, left, h, w = drawn.unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all() and (h > 0).all() and (w > 0).all())
    assert bool((top + h <= shapes[:, 0]).all() and (left + w <= shapes[:, 1]).all())


def test_crop_boxes_replay_from_a_seed_and_differ_across_seeds() -> None:
    shapes = torch.tensor([[256, 341]] * 64)
    first = random_resized_boxes(shapes, torch.Generator().manual_seed(1), scale=(0.16, 1.0), ratio=CROP_RATIO)
    again = random_resized_boxes(shapes, torch.Generator().manual_seed(1), scale=(0.16, 1.0), ratio=CROP_RATIO)
    other = random_resized_boxes(shapes, torch.Generator().manual_seed(2), scale=(0.16, 1.0), ratio=CROP_RATIO)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert len({tuple(b) for b in first.tolist()}) > 60  # not one crop repeated


def test_centre_boxes_place_as_center_crop() -> None:
    shapes = torch.tensor([[20, 27], [35, 20], [20, 20], [21, 22]])
    for (top, left, h, w), (height, width) in zip(centre_boxes(shapes, 16).tolist(), shapes.tolist()):
        image = torch.arange(height * width).view(1, height, width)
        assert torch.equal(image[:, top:top + h, left:left + w], TF.center_crop(image, [16, 16]))
    with pytest.raises(ValueError, match="at least 16 px"):
        centre_boxes(torch.tensor([[15, 40]]), 16)


def _per_image_reference(image: torch.Tensor, box: list[int], flip: bool, size: int,
                         as_uint8: bool) -> torch.Tensor:
    """The train transform's steps on one image with torchvision: resized crop, flip, to float, normalise."""
    source = image if as_uint8 else image.float()
    out = TF.resized_crop(source, *box, [size, size], antialias=True)
    if flip:
        out = TF.horizontal_flip(out)
    return TF.normalize(out.float() / 255.0, list(IMAGENET_MEAN), list(IMAGENET_STD))


def test_batch_augmentation_equals_the_per_image_transform(tree: Path, tmp_path: Path) -> None:
    """The same random draws give the same pixels as torchvision's per-image ops: to float precision on float
    images, and within one uint8 level of torchvision's uint8 resize (which rounds after resizing)."""
    train = _load(tree, tmp_path / "cache", min_crop_scale=0.05).train
    indices = torch.arange(len(train))
    host = train.host_batch(indices)
    batch, labels = train.device_batch(host, torch.device("cpu"), torch.Generator().manual_seed(3))
    draws = torch.Generator().manual_seed(3)
    boxes = random_resized_boxes(host.images.shapes, draws, scale=(0.05, 1.0), ratio=CROP_RATIO)
    flips = torch.rand(len(indices), generator=draws, dtype=torch.float64) < 0.5
    assert 0 < int(flips.sum()) < len(indices)
    images = [host.images.image(b) for b in range(len(indices))]
    in_float = crop_resize(images, boxes, SIZE, in_uint8=False)  # the GPU's way
    one_level = 1.0 / 255.0 / min(IMAGENET_STD) + 1e-5
    for b in range(len(indices)):
        # On the CPU: torchvision's uint8 resize, exactly (up to the normalisation's rounding).
        rounded = _per_image_reference(images[b], boxes[b].tolist(), bool(flips[b]), SIZE, as_uint8=True)
        torch.testing.assert_close(batch[b], rounded, atol=2e-6, rtol=0)
        # In float: torchvision's float resize, and within one grey level of the uint8 one.
        exact = _per_image_reference(images[b], boxes[b].tolist(), False, SIZE, as_uint8=False)
        torch.testing.assert_close(TF.normalize(in_float[b] / 255.0, list(IMAGENET_MEAN), list(IMAGENET_STD)),
                                   exact, atol=1e-5, rtol=1e-5)
        unflipped = _per_image_reference(images[b], boxes[b].tolist(), False, SIZE, as_uint8=True)
        assert float((exact - unflipped).abs().max()) <= one_level
    assert torch.equal(labels, train.labels)


def test_crop_resize_of_a_full_size_crop_is_a_copy() -> None:
    image = torch.randint(0, 256, (3, 16, 20), dtype=torch.uint8)
    out = crop_resize([image], torch.tensor([[0, 2, 16, 16]]), 16)
    assert torch.equal(out[0], image[:, :, 2:18].float())


def test_a_cached_load_decodes_nothing(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _load(tree, tmp_path / "cache")

    def refuse(path: str, resize: int) -> np.ndarray:
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(decoded_cache, "decode_resized", refuse)
    again = _load(tree, tmp_path / "cache")
    assert torch.equal(again.test.get_batch(torch.arange(4))[0], first.test.get_batch(torch.arange(4))[0])
    # Another resize is another cache: it has to decode.
    with pytest.raises(AssertionError, match="decoded"):
        _load(tree, tmp_path / "cache", resize_size=24)


def test_a_changed_image_rebuilds_the_cache_naming_it(tree: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    before = _load(tree, tmp_path / "cache").test
    changed = sorted(tree.glob("class3/*.jpg"))[0]  # a test class: the last two of four
    Image.fromarray(np.full((30, 40, 3), 200, dtype=np.uint8)).save(changed, quality=90)
    stat = os.stat(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a clock's worth later
    with caplog.at_level(logging.WARNING, logger=decoded_cache.__name__):
        after = _load(tree, tmp_path / "cache").test
    assert str(changed) in caplog.text and "changed" in caplog.text
    jpeg = _load(tree, tmp_path / "cache", decoded_cache=False).test
    index = [i for i in range(len(jpeg)) if not torch.equal(before[i][0], after[i][0])]
    assert len(index) == 1
    torch.testing.assert_close(after[index[0]][0], jpeg[index[0]][0].as_subclass(torch.Tensor), atol=2e-6, rtol=0)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_cache_file_is_detected_and_rebuilt(tree: Path, tmp_path: Path, damage: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    good = _load(tree, tmp_path / "cache").test.get_batch(torch.arange(6))[0]
    (path,) = (tmp_path / "cache").rglob("*.bin")
    if damage == "truncate":
        with open(path, "r+b") as file:
            file.truncate(path.stat().st_size - 100)
    else:
        path.write_bytes(b"\0" * 5000)
    with caplog.at_level(logging.WARNING, logger=decoded_cache.__name__):
        again = _load(tree, tmp_path / "cache").test.get_batch(torch.arange(6))[0]
    assert str(path) in caplog.text and ("cut short" in caplog.text or "holds" in caplog.text)
    assert torch.equal(again, good)


def test_a_header_that_disagrees_with_the_length_is_detected(tree: Path, tmp_path: Path) -> None:
    _load(tree, tmp_path / "cache")
    (path,) = (tmp_path / "cache").rglob("*.bin")
    data = path.read_bytes()
    path.write_bytes(data[:1000] + data[1500:])  # pixels lost in the middle: the footer is whole
    with pytest.raises(decoded_cache.CacheDamaged, match="holds"):
        decoded_cache.open_decoded(path)


def _load_in_process(root: str, cache: str, queue: multiprocessing.Queue) -> None:
    split = load_dataset("imagefolder", root=root, cache_dir=cache, **OPTIONS)
    queue.put(split.test.get_batch(torch.arange(len(split.test)))[0].numpy())


def test_concurrent_trials_share_one_cache(tree: Path, tmp_path: Path) -> None:
    """Processes that start at once on a node: one builds while the others wait, all read the same images."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_load_in_process, args=(str(tree), str(tmp_path / "cache"), queue))
                 for _ in range(3)]
    for process in processes:
        process.start()
    results = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert all(np.array_equal(results[0], r) for r in results[1:])
    files = [p.name for p in (tmp_path / "cache" / "decoded").iterdir()]
    assert len([f for f in files if f.endswith(".bin")]) == 1
    assert not [f for f in files if f.endswith(".tmp")], files


def test_pickled_images_reopen_the_file(tree: Path, tmp_path: Path) -> None:
    train = _load(tree, tmp_path / "cache").train
    blob = pickle.dumps(train)
    assert len(blob) < 20_000, "the pixels are not pickled"
    copy = pickle.loads(blob)
    assert torch.equal(copy.host_batch(torch.arange(5)).images.pixels, train.host_batch(torch.arange(5)).images.pixels)
