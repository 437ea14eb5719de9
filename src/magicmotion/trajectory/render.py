"""Rendering trajectory maps: the RGB videos the VAE encodes into trajectory latents.

Black background; one colour per object id (`palette_color`). `mask`: filled silhouettes on every
frame. `box`: outlined rectangles of thickness max(1, min(H, W) // 100) on every frame. `sparse_box`:
the same outlines on key frames only, other frames black. Frame 0 of `box` and `sparse_box` is the
filled frame-0 mask (or the filled frame-0 box when an object has no frame-0 mask). Objects are drawn
in list order, later ones on top.
"""

from __future__ import annotations

import numpy as np

from ..errors import TrajectoryError
from .ops import interpolate_boxes, masks_to_boxes, rescale
from .palette import palette_color
from .spec import Trajectory, decode_mask

KINDS = ("mask", "box", "sparse_box")


def box_thickness(width: int, height: int) -> int:
    return max(1, min(width, height) // 100)


def box_pixels(box, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel bounds [x0, x1) x [y0, y1) of a float box, at least one pixel wide."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, y0 = min(max(x0, 0), width - 1), min(max(y0, 0), height - 1)
    x1, y1 = min(max(x1, x0 + 1), width), min(max(y1, y0 + 1), height)
    return x0, y0, x1, y1


def draw_box(frame: np.ndarray, box, color, thickness: int) -> None:
    """Outline `box` in `frame` (H, W, 3) in place: a band `thickness` pixels wide inside the box."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box_pixels(box, w, h)
    frame[y0:min(y0 + thickness, y1), x0:x1] = color
    frame[max(y1 - thickness, y0):y1, x0:x1] = color
    frame[y0:y1, x0:min(x0 + thickness, x1)] = color
    frame[y0:y1, max(x1 - thickness, x0):x1] = color


def fill_box(frame: np.ndarray, box, color) -> None:
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box_pixels(box, w, h)
    frame[y0:y1, x0:x1] = color


def _first_frame(traj: Trajectory, frame: np.ndarray) -> None:
    for o in traj.objects:
        color = palette_color(o.id)
        if 0 in o.masks:
            frame[decode_mask(o.masks[0])] = color
        elif 0 in o.boxes:
            fill_box(frame, o.boxes[0], color)


def render(traj: Trajectory, kind: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Trajectory maps of `kind` as uint8 (T, H, W, 3); `size` = (W, H) rescales first."""
    if kind not in KINDS:
        raise TrajectoryError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    if size is not None and tuple(size) != traj.size:
        traj = rescale(traj, size)
    T, H, W = traj.num_frames, traj.height, traj.width
    maps = np.zeros((T, H, W, 3), dtype=np.uint8)
    if kind == "mask":
        for o in traj.objects:
            missing = [t for t in range(T) if t not in o.masks]
            if missing:
                raise TrajectoryError(
                    f"{traj.where()}: kind 'mask' needs a mask on every frame; object {o.id} has "
                    f"none on frame {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                )
            color = palette_color(o.id)
            for t in range(T):
                maps[t][decode_mask(o.masks[t])] = color
        return maps

    _first_frame(traj, maps[0])
    thickness = box_thickness(W, H)
    if kind == "box":
        traj = interpolate_boxes(_boxes_where_missing(traj))
    for o in traj.objects:
        color = palette_color(o.id)
        for t, box in o.boxes.items():
            if t > 0:
                draw_box(maps[t], box, color, thickness)
    return maps


def _boxes_where_missing(traj: Trajectory) -> Trajectory:
    """Boxes from masks on frames that have a mask but no box (given boxes win)."""
    from_masks = masks_to_boxes(traj)
    out = traj.copy()
    for o, m in zip(out.objects, from_masks.objects):
        for t in o.masks:
            if t not in o.boxes and t in m.boxes:
                o.boxes[t] = m.boxes[t]
    return out
