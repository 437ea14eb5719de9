"""The fixed colour palette: one colour per object id (the DAVIS / PASCAL VOC palette)."""

from __future__ import annotations

import numpy as np


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


PALETTE = _voc_palette()


def palette_index(object_id: int) -> int:
    """Row of `PALETTE` that colours object `object_id`: the id itself for ids 1..255; larger ids
    wrap around, skipping 0 (black, the background)."""
    return (int(object_id) - 1) % 255 + 1


def palette_color(object_id: int) -> tuple[int, int, int]:
    """Colour (r, g, b) of object `object_id` (ids >= 1; ids past 255 wrap around, skipping black)."""
    return tuple(int(v) for v in PALETTE[palette_index(object_id)])
