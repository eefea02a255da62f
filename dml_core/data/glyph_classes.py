"""Which characters are distinct classes of the glyphs dataset, and the fixed order that splits them.

Many code points share one shape (Latin A, Greek Alpha and Cyrillic A; hyphen and non-breaking hyphen; period and
middle dot once both are centred). Two characters are *the same* when their canonical renderings (48 px canvas)
match in at least half of the 16 faces, where "match" means that no pixel of ink in one lies farther than
SAME_RADIUS pixels from ink in the other by more than SAME_TOLERANCE of full intensity:

    d_f(a, b) = max over pixels of max(a - dilate(b), b - dilate(a)),   a, b in [0, 1],
    dilate = max-filter of radius SAME_RADIUS;   same  <=>  #{f : d_f(a, b) < SAME_TOLERANCE} >= 8.

The dilation forgives the one-pixel outline differences between scripts' designs of one letter, while a missing,
added or different diacritic (O / Ö / Ô) leaves a blob of unmatched ink. Half the faces, not all, because the STIX
and serif faces sometimes draw the Cyrillic or Greek twin of a Latin letter a little differently.
Characters are visited in code-point order and one is dropped when it is the same as an earlier kept one.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SAME_CANVAS", "SAME_RADIUS", "SAME_TOLERANCE", "SAME_FACE_FRACTION", "same_pairs", "distinct_glyphs",
           "split_order"]

SAME_CANVAS = 48  # fixed, so the class set never depends on the image_size option; 1.5x the default size
SAME_RADIUS = 1  # pixels on the 48 px canvas (2%): an outline drawn one pixel wider or shifted still matches
SAME_TOLERANCE = 0.3  # of full ink intensity: antialiased fringes below it are not "ink"
SAME_FACE_FRACTION = 0.5  # at least 8 of 16 faces: a few faces draw a script's twin letter differently

# Coarse-to-fine lower bounds rule most pairs out cheaply. With A = max-pool(a) and D = max-pool(dilate(b)) over
# the same blocks, A - D <= a - dilate(b) at the pixel where a peaks in the block, so max(A - D) never exceeds d_f.
# The first level compares every pair densely; the finer ones only the survivors. Blocks divide the 48 px canvas.
_DENSE_BLOCK = 16
_BOUND_BLOCKS = (8, 4, 2)
_CHUNK = 8192  # pairs per step: (F, chunk, pixels) temporaries of a few tens of MB at most


def _pair_maxdiff(ink: torch.Tensor, dilated: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """(F, N, Q) ink and dilated ink, (K,) pair indices -> (F, K) max over Q of the symmetric unmatched ink."""
    out = []
    for start in range(0, i.numel(), _CHUNK):
        a, b = i[start:start + _CHUNK], j[start:start + _CHUNK]
        one = (ink[:, a] - dilated[:, b]).amax(-1)  # (F, k)
        other = (ink[:, b] - dilated[:, a]).amax(-1)
        out.append(torch.maximum(one, other))
    return torch.cat(out, dim=1) if out else ink.new_empty(ink.shape[0], 0)


def _keep_same(ink: torch.Tensor, dilated: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
               needed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs among (i, j) whose (F, N, Q) values stay under the tolerance in at least `needed` faces."""
    close = (_pair_maxdiff(ink, dilated, i, j) < SAME_TOLERANCE).sum(0) >= needed
    return i[close], j[close]


def _dense_candidates(ink: torch.Tensor, dilated: torch.Tensor, needed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(F, N, Q) coarse values -> the pairs i < j whose bound stays under the tolerance in `needed` faces."""
    faces, n = ink.shape[:2]
    votes = torch.zeros(n, n, dtype=torch.int32)
    for f in range(faces):
        one_way = (ink[f][:, None, :] - dilated[f][None, :, :]).amax(-1)  # (N, N): a_i against dilate(a_j)
        votes += (torch.maximum(one_way, one_way.T) < SAME_TOLERANCE).int()
    i, j = torch.where(torch.triu(votes >= needed, diagonal=1))
    return i, j


def same_pairs(renderings: np.ndarray) -> set[tuple[int, int]]:
    """uint8 (F, N, S, S) canonical renderings -> the pairs (i, j), i < j, of characters that are the same."""
    faces, n, size = renderings.shape[:3]
    if size % _DENSE_BLOCK:
        raise ValueError(f"canonical renderings must be a multiple of {_DENSE_BLOCK} px, got {size=}")
    ink = torch.from_numpy(renderings).float().div_(255.0).flatten(0, 1)[:, None]  # (F*N, 1, S, S)
    dilated = F.max_pool2d(ink, 2 * SAME_RADIUS + 1, stride=1, padding=SAME_RADIUS)
    needed = int(np.ceil(SAME_FACE_FRACTION * faces))

    def pooled(block: int) -> tuple[torch.Tensor, torch.Tensor]:  # (F, N, Q) each
        return F.max_pool2d(ink, block).view(faces, n, -1), F.max_pool2d(dilated, block).view(faces, n, -1)

    i, j = _dense_candidates(*pooled(_DENSE_BLOCK), needed)
    for block in _BOUND_BLOCKS:
        i, j = _keep_same(*pooled(block), i, j, needed)
    i, j = _keep_same(ink.view(faces, n, -1), dilated.view(faces, n, -1), i, j, needed)
    return set(zip(i.tolist(), j.tolist()))


def distinct_glyphs(codepoints: list[int], renderings: np.ndarray) -> list[int]:
    """Indices into `codepoints` (sorted) of the characters kept: each is not the same as any earlier kept one."""
    same = same_pairs(renderings)
    kept: list[int] = []
    for j in range(len(codepoints)):
        if not any((i, j) in same for i in kept):
            kept.append(j)
    return kept


def split_order(codepoints: list[int]) -> list[int]:
    """A fixed shuffle of the classes: sorted by the BLAKE2b hash of the character's UTF-8 bytes.

    Independent of the generation seed and stable when the font set gains or loses a character, so the
    train/test class split of the glyphs dataset is the same for every seed and image size.
    """
    return sorted(codepoints, key=lambda c: hashlib.blake2b(chr(c).encode("utf-8"), digest_size=8).digest())
