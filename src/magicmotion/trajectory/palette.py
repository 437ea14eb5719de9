"""The fixed colour palettes: one colour per object id.

Two palettes, by name (`PALETTES`):

- `voc`: the PASCAL VOC colour map that DAVIS annotations use (id 1 (128, 0, 0), id 2 (0, 128, 0),
  ...). Our default; the shipped tiny model was trained on it.
- `release`: what the authors' release draws: supervision's default `ColorPalette` (0.23) indexed by
  object id (`by_idx(id)`: colour `id % 21`, so id 1 is "#FF4040"), drawn by `sv.MaskAnnotator` at
  opacity 0.5 over a black frame, i.e. `cv2.addWeighted(colour, 0.5, black, 0.5, 0)`. We compute the
  rows with that very call, so the rounding is OpenCV's (halves to even: 255 -> 128, 163 -> 82,
  51 -> 26): id 1 (128, 32, 32), id 2 (128, 80, 80), id 3 (128, 59, 26). The release's demo videos
  measure (127, 32, 32), (127, 80, 80), (127, 59, 25) after H.264.

Each palette is a (256, 3) uint8 table whose row 0 is black (the background) and whose row i colours
object ids i, i + 255, i + 510, ... (`palette_index`).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import TrajectoryError

PALETTES = ("voc", "release")

# supervision.draw.color.DEFAULT_COLOR_PALETTE (supervision 0.23, the release's version)
SUPERVISION_DEFAULT = (
    "A351FB", "FF4040", "FFA1A0", "FF7633", "FFB633", "D1D435", "4CFB12", "94CF1A", "40DE8A",
    "1B9640", "00D6C1", "2E9CAA", "00C4FF", "364797", "6675FF", "0019EF", "863AFF", "530087",
    "CD3AFF", "FF97CA", "FF39C9",
)
RELEASE_OPACITY = 0.5  # sv.MaskAnnotator's default


def _voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map that DAVIS annotations use: index i -> (r, g, b)."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def _release_palette(n: int = 256) -> np.ndarray:
    """supervision's default palette by index (i % 21), blended at 50% over black as the release's
    MaskAnnotator does (cv2.addWeighted); row 0 black."""
    colours = np.array([[int(h[k:k + 2], 16) for k in (0, 2, 4)] for h in SUPERVISION_DEFAULT], np.uint8)
    full = colours[np.arange(n) % len(colours)]
    palette = cv2.addWeighted(full, RELEASE_OPACITY, np.zeros_like(full), 1 - RELEASE_OPACITY, 0)
    palette[0] = 0
    return palette


PALETTE = _voc_palette()  # the default ("voc") palette, kept under its old name
_TABLES = {"voc": PALETTE, "release": _release_palette()}


def check_palette(name: str) -> str:
    """`name` if it is a known palette, else TrajectoryError."""
    if name not in _TABLES:
        raise TrajectoryError(f"unknown palette {name!r}: expected one of {', '.join(PALETTES)}")
    return name


def get_palette(name: str = "voc") -> np.ndarray:
    """The (256, 3) uint8 colour table of palette `name` ("voc" or "release"); row 0 is black."""
    return _TABLES[check_palette(name)]


def palette_index(object_id: int) -> int:
    """Row of a palette table that colours object `object_id`: the id itself for ids 1..255; larger
    ids wrap around, skipping 0 (black, the background)."""
    return (int(object_id) - 1) % 255 + 1


def palette_color(object_id: int, palette: str = "voc") -> tuple[int, int, int]:
    """Colour (r, g, b) of object `object_id` in `palette` (ids >= 1; ids past 255 wrap around,
    skipping black)."""
    return tuple(int(v) for v in get_palette(palette)[palette_index(object_id)])


def palette_ids(palette: str = "voc") -> dict[tuple[int, int, int], int]:
    """Each distinct object colour of `palette` -> the smallest object id drawn in it (ids 1..255):
    how a colour is read back into an id. The release palette repeats every 21 ids, so its colours
    read back as ids 1..21."""
    table = get_palette(palette)
    ids: dict[tuple[int, int, int], int] = {}
    for i in range(1, 256):
        ids.setdefault(tuple(int(v) for v in table[i]), i)
    return ids
