"""The generated glyphs dataset: fonts, class de-duplication, jitter, the split, and the on-disk cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dml_core.data.cache as cache
import dml_core.data.glyphs as glyphs
from dml_core.data import GlyphOptions, load_dataset
from dml_core.data.glyph_augment import Jitter, sample_warps, warp_glyphs
from dml_core.data.glyph_classes import (SAME_CANVAS, SAME_FACE_FRACTION, SAME_RADIUS, SAME_TOLERANCE,
                                         distinct_glyphs, same_pairs, split_order)
from dml_core.data.glyph_fonts import FONT_FILES, common_codepoints, open_faces, render_glyph

SMALL = {"image_size": 16, "samples_per_face": 1}  # the whole class set, cheaply


@pytest.fixture(scope="module")
def faces() -> list[Any]:
    return open_faces()


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("glyph-cache")


@pytest.fixture(scope="module")
def small_split(cache_root: Path) -> Any:
    """One full generation for the module (about 5 s): every later load of these options hits the cache."""
    return load_dataset("glyphs", cache_dir=str(cache_root), **SMALL)


def _renderings(faces: list[Any], codepoints: list[int]) -> np.ndarray:
    return np.stack([np.stack([render_glyph(face, c, SAME_CANVAS) for c in codepoints]) for face in faces])


# ---------------------------------------------------------------- fonts and canonical renderings
def test_sixteen_faces_in_four_families(faces: list[Any]) -> None:
    assert len(faces) == len(FONT_FILES) == 16
    families = {face.family_name for face in faces}
    assert families == {"DejaVu Sans", "DejaVu Sans Mono", "DejaVu Serif", "STIXGeneral"}
    assert len({(face.family_name, face.style_name) for face in faces}) == 16


def test_common_codepoints_are_visible_characters(faces: list[Any]) -> None:
    codepoints = common_codepoints(faces)
    assert ord("A") in codepoints and ord("Ж") in codepoints and ord("λ") in codepoints
    assert ord(" ") not in codepoints and 0x0301 not in codepoints  # separators and combining marks
    charmaps = [face.get_charmap() for face in faces]
    assert all(c in charmap for charmap in charmaps for c in codepoints)


def test_canonical_rendering_is_centred_and_unclipped(faces: list[Any]) -> None:
    for face in faces:
        for char in "AfgjQ|":
            image = render_glyph(face, ord(char), SAME_CANVAS)
            assert image.shape == (SAME_CANVAS, SAME_CANVAS) and image.dtype == np.uint8
            rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
            # Nothing touches the border (an italic's negative left bearing must not push ink off the canvas) ...
            assert rows[0] > 0 and cols[0] > 0 and rows[-1] < SAME_CANVAS - 1 and cols[-1] < SAME_CANVAS - 1
            # ... and the ink box is centred to within a pixel.
            assert abs(rows[0] + rows[-1] - (SAME_CANVAS - 1)) <= 1
            assert abs(cols[0] + cols[-1] - (SAME_CANVAS - 1)) <= 1


def test_natural_size_is_kept(faces: list[Any]) -> None:
    """'o' and 'O' differ in size, so they stay apart; only glyphs too large for the canvas shrink."""
    small, large = (render_glyph(faces[0], ord(c), SAME_CANVAS) for c in "oO")
    assert np.flatnonzero(small.any(1)).size < 0.85 * np.flatnonzero(large.any(1)).size


# ---------------------------------------------------------------- which characters are distinct classes
def test_lookalikes_collapse_and_diacritics_stay(faces: list[Any]) -> None:
    chars = "AOoΑΟАОоÖÕ0"  # Latin, Greek and Cyrillic A / O / o; two diacritics; zero
    codepoints = sorted(ord(c) for c in chars)
    kept = {chr(codepoints[k]) for k in distinct_glyphs(codepoints, _renderings(faces, codepoints))}
    assert kept == {"A", "O", "o", "Ö", "Õ", "0"}


def _brute_force_same(renderings: np.ndarray) -> set[tuple[int, int]]:
    """The documented rule, computed directly for every pair and face."""
    ink = torch.from_numpy(renderings).float() / 255
    dilated = F.max_pool2d(ink, 2 * SAME_RADIUS + 1, stride=1, padding=SAME_RADIUS)
    faces, n = renderings.shape[:2]
    same = set()
    for i in range(n):
        one = (ink[:, i:i + 1] - dilated).flatten(2).amax(2)  # (F, n): ink of i unmatched by each j
        other = (ink - dilated[:, i:i + 1]).flatten(2).amax(2)  # (F, n): ink of each j unmatched by i
        votes = (torch.maximum(one, other) < SAME_TOLERANCE).sum(0)  # (n,)
        same |= {(i, j) for j in range(i + 1, n) if votes[j] >= np.ceil(SAME_FACE_FRACTION * faces)}
    return same


def test_pruned_search_equals_the_brute_force_rule(faces: list[Any]) -> None:
    """The coarse-to-fine bounds only skip work: they never change which pairs are the same."""
    codepoints = common_codepoints(faces)
    # Letters with many lookalikes across scripts, plus some dashes and quotes, so both outcomes occur.
    chosen = [c for c in codepoints if chr(c) in "AaBEeHKMOoPpCcTXxyіiјj-‐‑‒–—'‘’,‚ÔŌÕÖ"]
    renderings = _renderings(faces, chosen)
    expected = _brute_force_same(renderings)
    assert expected and len(expected) < len(chosen) * (len(chosen) - 1) // 2
    assert same_pairs(renderings) == expected


def test_split_order_is_a_fixed_permutation() -> None:
    codepoints = list(range(0x41, 0x5B))
    order = split_order(codepoints)
    assert sorted(order) == codepoints and order != codepoints
    assert split_order(list(reversed(codepoints))) == order
    # A class's position relative to the others does not depend on which other classes exist.
    subset = [c for c in codepoints if c % 3]
    assert split_order(subset) == [c for c in order if c % 3]


# ---------------------------------------------------------------- jitter
def test_zero_jitter_is_the_identity_warp() -> None:
    affine, stroke = sample_warps(5, Jitter(0, 0, 0, 0, 0, 0), np.random.default_rng(0))
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(5, 2, 3)
    torch.testing.assert_close(affine, identity)
    assert torch.count_nonzero(stroke) == 0
    glyph = torch.zeros(1, 16, 16, dtype=torch.uint8)
    glyph[0, 4:12, 6:10] = 255
    out = warp_glyphs(glyph, torch.zeros(5, dtype=torch.int64), affine, stroke, 8)
    expected = F.avg_pool2d(glyph[None].float(), 2)[0].round().to(torch.uint8)
    assert all(torch.equal(o, expected[0]) for o in out)


def test_warps_are_seeded_and_within_range() -> None:
    jitter = Jitter()
    a = sample_warps(1000, jitter, np.random.default_rng(7))
    b = sample_warps(1000, jitter, np.random.default_rng(7))
    c = sample_warps(1000, jitter, np.random.default_rng(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert a[1].abs().max() <= jitter.stroke
    det = torch.linalg.det(a[0][:, :, :2].double())  # inverse warp: area scale between 1/1.17^2 and 1/0.85^2
    scale = np.exp(jitter.log_scale)
    assert det.min() >= 1 / scale**2 - 1e-6 and det.max() <= scale**2 + 1e-6


def test_stroke_change_thickens_and_thins() -> None:
    glyph = torch.zeros(1, 32, 32, dtype=torch.uint8)
    glyph[0, 8:24, 12:20] = 255  # a 4 px wide stroke at the output size ...
    glyph[0, 8:24, 11] = glyph[0, 8:24, 20] = 128  # ... with antialiased edges, which lighter strokes fade
    affine = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]).expand(3, 2, 3)
    out = warp_glyphs(glyph, torch.zeros(3, dtype=torch.int64), affine, torch.tensor([0.0, 1.0, -1.0]), 16).float()
    assert out[1].sum() > out[0].sum() > out[2].sum() > 0


@pytest.mark.parametrize("field", ["rotation_deg", "log_scale", "log_aspect", "shear", "shift", "stroke"])
@pytest.mark.parametrize("value", [-0.1, float("nan"), 1e9, True])
def test_jitter_validation(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{field}="):
        Jitter(**{field: value})


# ---------------------------------------------------------------- the dataset
def test_class_split_sizes_and_labels(small_split: Any) -> None:
    train, test = small_split.train, small_split.test
    total = train.num_classes + test.num_classes
    assert 600 <= total <= 700  # 643 with matplotlib 3.11's fonts; the range allows font updates
    assert train.num_classes == total // 2
    assert not set(train.classes) & set(test.classes)
    for part in (train, test):
        assert part.in_channels == 1
        assert torch.equal(part.labels.bincount(), torch.full((part.num_classes,), 16))  # 16 faces x 1 sample
    assert train.train and not test.train
    assert "A" in train.classes + test.classes
    assert not {"Α", "А"} & set(train.classes + test.classes)  # Greek and Cyrillic A are Latin A


def test_get_batch_serves_ink_in_unit_range(small_split: Any) -> None:
    images, labels = small_split.train.get_batch(torch.arange(0, 64, 4))
    assert images.shape == (16, 1, 16, 16) and images.dtype == torch.float32
    assert images.min() == 0 and 0.9 < images.max() <= 1
    assert torch.equal(labels, small_split.train.labels[:64:4])
    everything, _ = small_split.train.get_batch(torch.arange(len(small_split.train)))
    # Every sample keeps ink (none was warped off the canvas); tiny marks at 16 px peak around 0.2.
    assert (everything.flatten(1).amax(1) > 0.1).all()


def test_render_samples_is_deterministic_per_seed(faces: list[Any]) -> None:
    classes = [ord(c) for c in "AgЖ"]
    one = glyphs.render_samples(classes, faces, GlyphOptions(image_size=12, samples_per_face=2, seed=3))
    two = glyphs.render_samples(classes, faces, GlyphOptions(image_size=12, samples_per_face=2, seed=3))
    other = glyphs.render_samples(classes, faces, GlyphOptions(image_size=12, samples_per_face=2, seed=4))
    assert all(np.array_equal(one[k], two[k]) for k in one)
    assert not np.array_equal(one["images"], other["images"])
    assert np.array_equal(one["labels"], other["labels"]) and np.array_equal(one["faces"], other["faces"])
    assert one["images"].shape == (3 * 16 * 2, 12, 12)
    assert one["labels"].tolist() == [k // 32 for k in range(96)]
    assert one["faces"].tolist() == [(k // 2) % 16 for k in range(96)]


def test_num_classes_takes_the_first_classes_of_the_same_cache(small_split: Any, cache_root: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(glyphs, "generate_glyphs", _must_not_generate)
    split = load_dataset("glyphs", cache_dir=str(cache_root), num_classes=11, **SMALL)
    assert split.train.classes == small_split.train.classes[:5]
    assert split.test.classes == small_split.train.classes[5:11]
    assert torch.equal(split.train.images, small_split.train.images[:5 * 16])


def test_glyph_options_validation() -> None:
    for bad in ({"image_size": 4}, {"image_size": 32.0}, {"samples_per_face": 0}, {"seed": -1},
                {"num_classes": 3}, {"rotation_deg": 200}, {"cache_dir": 3}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GlyphOptions(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="generated, not read from disk.*cache_dir"):
        load_dataset("glyphs", root="/data/glyphs")


# ---------------------------------------------------------------- the cache
def _must_not_generate(options: GlyphOptions) -> dict[str, np.ndarray]:
    raise AssertionError("generated although the cache holds these options")


def test_cached_load_reads_the_file(small_split: Any, cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = glyphs.glyph_cache_path(GlyphOptions(cache_dir=str(cache_root), **SMALL))
    assert path.parent == cache_root / "glyphs" and path.is_file()
    monkeypatch.setattr(glyphs, "generate_glyphs", _must_not_generate)
    again = load_dataset("glyphs", cache_dir=str(cache_root), **SMALL)
    assert torch.equal(again.test.images, small_split.test.images)
    assert again.test.classes == small_split.test.classes


def test_cache_key_covers_the_pixels_only() -> None:
    base = glyphs.glyph_cache_path(GlyphOptions(cache_dir="/c"))
    for changed in ({"seed": 1}, {"image_size": 28}, {"samples_per_face": 2}, {"shear": 0.0}):
        assert glyphs.glyph_cache_path(GlyphOptions(cache_dir="/c", **changed)) != base  # type: ignore[arg-type]
    assert glyphs.glyph_cache_path(GlyphOptions(cache_dir="/c", num_classes=10)) == base
    assert glyphs.glyph_cache_path(GlyphOptions(cache_dir="/c", rotation_deg=16)) == base  # int == float


def test_cache_location_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    assert glyphs.glyph_cache_path(GlyphOptions()).is_relative_to(tmp_path / "home" / ".cache" / "dml-study")
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "env"))
    assert glyphs.glyph_cache_path(GlyphOptions()).is_relative_to(tmp_path / "env")
    assert glyphs.glyph_cache_path(GlyphOptions(cache_dir=str(tmp_path / "opt"))).is_relative_to(tmp_path / "opt")


def _tiny_arrays() -> dict[str, np.ndarray]:
    return {"images": np.full((8, 8, 8), 200, np.uint8), "labels": np.repeat(np.arange(4, dtype=np.int32), 2),
            "faces": np.zeros(8, np.uint8), "codepoints": np.array([65, 66, 67, 68], np.int32)}


def test_a_corrupt_cache_file_is_regenerated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = GlyphOptions(cache_dir=str(tmp_path))
    path = glyphs.glyph_cache_path(options)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 truncated")
    calls = []
    monkeypatch.setattr(glyphs, "generate_glyphs", lambda o: calls.append(o) or _tiny_arrays())
    split = load_dataset("glyphs", cache_dir=str(tmp_path))
    assert len(calls) == 1 and split.train.classes == ("A", "B") and split.test.classes == ("C", "D")
    assert cache.load_arrays(path, tuple(_tiny_arrays())) is not None  # replaced by a complete file


def test_an_interrupted_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "glyphs" / "x.npz"

    def crash(handle: Any, **arrays: Any) -> None:
        handle.write(b"PK\x03\x04 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.save_arrays(path, _tiny_arrays())
    assert os.listdir(path.parent) == []


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.npz"
    cache.save_arrays(path, _tiny_arrays())
    loaded = cache.load_arrays(path, tuple(_tiny_arrays()))
    assert loaded is not None and all(np.array_equal(loaded[k], v) for k, v in _tiny_arrays().items())
    assert path.stat().st_mode & 0o777 == 0o644 and os.listdir(path.parent) == ["b.npz"]
    assert cache.load_arrays(tmp_path / "missing.npz", ("images",)) is None
    assert cache.load_arrays(path, ("nope",)) is None
