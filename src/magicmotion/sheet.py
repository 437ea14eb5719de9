"""One labelled picture of generated videos: a row per video with its first frame, its trajectory drawn
over that frame, and evenly spaced generated frames, each column and row named, frames enlarged to a
size one can judge. `magicmotion demo` writes one per run (outputs/demo/demo.png); docs/generate.md's
`--fit` picture is one too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TILE = 192  # a frame's longer side in the sheet (small frames enlarged a whole number of times)
GAP = 6
LABEL_HEIGHT = 22
ROW_LABEL_WIDTH = 120
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


@dataclass
class SheetRow:
    """label: what the row shows; image: the first frame (H, W, 3) uint8 at the output size; maps: the
    trajectory maps (T, H, W, 3) uint8; frames: the generated frames (T, H, W, 3) uint8."""

    label: str
    image: np.ndarray
    maps: np.ndarray
    frames: np.ndarray


def _tile(frame: np.ndarray, side: int) -> np.ndarray:
    """A frame scaled so its longer side is about `side`: small frames enlarged a whole number of times
    (nearest neighbour, each pixel a block), large ones reduced (area averaging)."""
    import cv2

    h, w = frame.shape[:2]
    if max(h, w) <= side:
        k = max(1, side // max(h, w))
        return frame.repeat(k, axis=0).repeat(k, axis=1)
    s = side / max(h, w)
    return cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def trajectory_overlay(image: np.ndarray, maps: np.ndarray, count: int = 5) -> np.ndarray:
    """The first frame with the maps of `count` evenly spaced frames drawn over it, later ones on top
    and stronger, so the path reads from faint (start) to solid (end)."""
    from .io import overlay

    out = np.asarray(image, dtype=np.uint8)
    times = np.unique(np.linspace(0, len(maps) - 1, min(count, len(maps))).round().astype(int))
    for i, t in enumerate(times):
        out = overlay(out, maps[t], alpha=0.3 + 0.5 * (i + 1) / len(times))
    return out


def results_sheet(rows: list[SheetRow], columns: int = 6) -> np.ndarray:
    """The sheet as uint8 (H, W, 3): per row its label, first frame, trajectory overlay and `columns`
    evenly spaced generated frames, under a header naming each column ("frame t")."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=14)
    built, headers = [], None
    for row in rows:
        t = len(row.frames)
        times = np.unique(np.linspace(0, t - 1, min(columns, t)).round().astype(int))
        tiles = [row.image, trajectory_overlay(row.image, row.maps)] + [row.frames[i] for i in times]
        built.append((row.label, [_tile(np.asarray(x, dtype=np.uint8), TILE) for x in tiles]))
        headers = headers or ["first frame", "trajectory"] + [f"frame {int(i)}" for i in times]
    tile_h = max(tile.shape[0] for _, tiles in built for tile in tiles)
    ncols = max(len(tiles) for _, tiles in built)
    tile_w = max(tile.shape[1] for _, tiles in built for tile in tiles)
    width = ROW_LABEL_WIDTH + ncols * (tile_w + GAP) + GAP
    height = LABEL_HEIGHT + len(built) * (tile_h + GAP) + GAP
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for c, text in enumerate(headers or []):
        draw.text((ROW_LABEL_WIDTH + c * (tile_w + GAP) + GAP, 4), text, fill=INK, font=font)
    for r, (label, tiles) in enumerate(built):
        y = LABEL_HEIGHT + r * (tile_h + GAP) + GAP
        draw.multiline_text((GAP, y + 4), _wrap(label, 14), fill=INK, font=font)
        for c, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile), (ROW_LABEL_WIDTH + c * (tile_w + GAP) + GAP, y))
    return np.asarray(sheet)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def write_results_sheet(path: str | os.PathLike, rows: list[SheetRow], columns: int = 6) -> Path:
    """`results_sheet` written to `path` (.png; written to a temporary file, then renamed)."""
    from .io import write_image

    return write_image(Path(path), results_sheet(rows, columns))


__all__ = ["SheetRow", "results_sheet", "trajectory_overlay", "write_results_sheet"]
