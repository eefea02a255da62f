"""The 16 font faces behind the glyphs dataset, and the canonical rendering of one character in one face.

The fonts are the TrueType files matplotlib ships in its package data (DejaVu Sans, Sans Mono, Serif and STIX
General, each regular / bold / italic-or-oblique / bold-italic), rendered with `matplotlib.ft2font` (FreeType)
directly: no pyplot, no figure, no download.

A canonical rendering is the character at a fixed em size, unhinted (hinting snaps strokes to the pixel grid
differently per size, which would make the canonical shapes depend on the canvas), with its ink bounding box
centred on a square canvas. Glyphs keep their natural size relative to the em (so `o` and `O` stay different),
except that a glyph too large for the canvas is shrunk to fit.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import ft2font

__all__ = ["FONT_FILES", "EM_FRACTION", "FIT_FRACTION", "font_paths", "open_faces", "common_codepoints",
           "render_glyph"]

FONT_FILES: tuple[str, ...] = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
)

# The em square spans 70% of the canvas: capitals (about 0.73 em) then fill half of it, which leaves room for
# rotation and scaling without cutting strokes off.
EM_FRACTION = 0.7
# A glyph whose ink is larger than 85% of the canvas (wide symbols, box drawings) is shrunk to that size.
FIT_FRACTION = 0.85

# Unicode general categories without a visible shape of their own: separators (Z*), controls and format
# characters (C*), and combining marks (M*), which render as a floating accent over nothing.
_INVISIBLE_CATEGORIES = ("Z", "C", "M")


def font_paths() -> list[Path]:
    """The 16 font files, in FONT_FILES order; FileNotFoundError if matplotlib's data lacks one."""
    directory = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    paths = [directory / name for name in FONT_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"matplotlib's font data lacks {', '.join(missing)} (expected the DejaVu and "
                                f"STIX General TrueType files under {directory})")
    return paths


def open_faces() -> list[ft2font.FT2Font]:
    return [ft2font.FT2Font(str(p)) for p in font_paths()]


def common_codepoints(faces: list[ft2font.FT2Font]) -> list[int]:
    """Sorted code points that every face maps to a glyph and that have a visible shape of their own."""
    covered = set.intersection(*(set(face.get_charmap()) for face in faces))
    return sorted(c for c in covered if not unicodedata.category(chr(c)).startswith(_INVISIBLE_CATEGORIES))


def _draw(face: ft2font.FT2Font, codepoint: int, size_px: float) -> np.ndarray:
    """The glyph's ink, cropped to its bounding box: uint8 (h, w); (0, 0) when the glyph has no ink."""
    face.set_size(size_px, 72)  # 72 dpi: one point is one pixel
    glyph = face.load_char(codepoint, ft2font.LoadFlags.NO_HINTING)
    # draw_glyph_to_bitmap shifts the bitmap right by the glyph's left bearing (negative for many italics), so
    # the pen starts `pad - left` pixels in; the padding absorbs antialiasing beyond the 26.6 metrics.
    pad = 4
    left, right = glyph.bbox[0] // 64, glyph.bbox[2] // 64
    buffer = np.zeros((glyph.height // 64 + 2 * pad, right - left + 2 * pad + 1), np.uint8)
    face.draw_glyph_to_bitmap(buffer, pad - left, pad, glyph)
    rows = np.flatnonzero(buffer.any(axis=1))
    cols = np.flatnonzero(buffer.any(axis=0))
    if rows.size == 0:
        return np.zeros((0, 0), np.uint8)
    return buffer[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def render_glyph(face: ft2font.FT2Font, codepoint: int, canvas: int) -> np.ndarray:
    """Canonical rendering: uint8 (canvas, canvas), ink 255 on 0, ink box centred; all zero for an inkless glyph."""
    size = EM_FRACTION * canvas
    ink = _draw(face, codepoint, size)
    limit = FIT_FRACTION * canvas
    for _ in range(4):  # rasterisation rounding can leave a shrunk glyph a pixel too large: retry a little smaller
        if max(ink.shape) <= limit:
            break
        size *= 0.98 * limit / max(ink.shape)
        ink = _draw(face, codepoint, size)
    out = np.zeros((canvas, canvas), np.uint8)
    h, w = min(ink.shape[0], canvas), min(ink.shape[1], canvas)
    top, left = (canvas - h) // 2, (canvas - w) // 2
    out[top:top + h, left:left + w] = ink[:h, :w]
    return out
