"""Rendering trajectory maps: the RGB videos the VAE encodes into trajectory latents.

Black background; one colour per object id (`palette_color`). `mask`: filled silhouettes on every
frame. `box`: outlined rectangles of thickness max(1, min(H, W) // 100) on every frame (key boxes
linearly interpolated, boxes derived from masks where a frame has a mask but no box). `sparse_box`:
the same outlines on the frames that have a key box (or a mask) only, other frames black. Frame 0 of
`box` and `sparse_box` is the filled frame-0 mask (or the filled frame-0 box when an object has no
frame-0 mask). Objects are drawn in list order, later ones on top.

Masks are painted straight from their run-length encoding: the runs of all objects on a frame are
merged into one label row (column-major, as COCO RLE stores it), expanded with one `np.repeat` and
coloured through the palette with a lookup table, so the cost is one pass over each frame.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..errors import TrajectoryError
from .ops import interpolate_boxes, masks_to_boxes, rescale, resize_crop
from .palette import PALETTE, palette_index
from .spec import Trajectory, rle_counts

KINDS = ("mask", "box", "sparse_box")

_LUT = np.ascontiguousarray(PALETTE.reshape(256, 1, 3))  # palette index -> colour, for cv2


def box_thickness(width: int, height: int) -> int:
    """Outline thickness in pixels for a `width` x `height` frame: max(1, min(H, W) // 100)."""
    return max(1, min(width, height) // 100)


def box_pixels(box, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel bounds [x0, x1) x [y0, y1) of a float box (coordinates rounded half up, clipped
    to the frame), at least one pixel wide and high."""
    x0, y0, x1, y1 = (int(math.floor(float(v) + 0.5)) for v in box)
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
    """Fill `box` in `frame` (H, W, 3) in place."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box_pixels(box, w, h)
    frame[y0:y1, x0:x1] = color


# ------------------------------------------------------------------------------ filled silhouettes


def _mask_runs(rle: dict) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends of the runs of ones of an RLE mask, as column-major flat pixel indices."""
    ends = np.cumsum(rle_counts(rle))
    starts, stops = ends[0:-1:2], ends[1::2]
    keep = stops > starts
    return starts[keep], stops[keep]


def _box_runs(box, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A filled box as runs of column-major flat pixel indices (one run per column)."""
    x0, y0, x1, y1 = box_pixels(box, width, height)
    columns = np.arange(x0, x1, dtype=np.int64) * height
    return columns + y0, columns + y1


def paint_filled(frame: np.ndarray, shapes: list[tuple[np.ndarray, np.ndarray, int]]) -> None:
    """Paint filled shapes into `frame` (H, W, 3) uint8, black where none is drawn.

    shapes: (starts, stops, palette index) per object in drawing order, the runs as column-major flat
    pixel indices (as in COCO RLE); later shapes cover earlier ones."""
    h, w = frame.shape[:2]
    shapes = [s for s in shapes if len(s[0])]
    if not shapes:
        frame[:] = 0
        return
    # cut the column-major pixel row at every run boundary; each segment then has one label
    bounds = np.unique(np.concatenate([np.array([0, h * w], np.int64)]
                                      + [a for s in shapes for a in s[:2]]))
    seg_start, seg_len = bounds[:-1], np.diff(bounds)
    label = np.zeros(len(seg_start), dtype=np.uint8)
    for starts, stops, index in shapes:
        j = np.searchsorted(starts, seg_start, side="right") - 1
        covered = (j >= 0) & (seg_start < stops[np.maximum(j, 0)])
        label[covered] = index
    labels = np.repeat(label, seg_len).reshape(w, h)  # column-major: one row per image column
    cv2.applyColorMap(cv2.transpose(labels), _LUT, dst=frame)


def _first_frame(traj: Trajectory, frame: np.ndarray) -> None:
    W, H = traj.width, traj.height
    shapes = []
    for o in traj.objects:
        if 0 in o.masks:
            shapes.append((*_mask_runs(o.masks[0]), palette_index(o.id)))
        elif 0 in o.boxes:
            shapes.append((*_box_runs(o.boxes[0], W, H), palette_index(o.id)))
    if shapes:
        paint_filled(frame, shapes)


# ---------------------------------------------------------------------------------------- render


def render(traj: Trajectory, kind: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Trajectory maps of `kind` ("mask", "box" or "sparse_box") as uint8 (T, H, W, 3).

    `size` = (W, H) first rescales the trajectory (resize to cover, centre crop: `rescale`). The
    `mask` kind needs a mask of every object on every frame (an empty mask: absent there)."""
    if kind not in KINDS:
        raise TrajectoryError(f"{traj.where()}: unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    traj.validate()
    if kind == "mask":
        for o in traj.objects:
            missing = [t for t in range(traj.num_frames) if t not in o.masks]
            if missing:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise TrajectoryError(
                    f"{traj.where()}: kind 'mask' needs a mask on every frame; object {o.id} has "
                    f"none on frame {missing[0]}{more}"
                )
    if size is not None and tuple(size) != traj.size:
        traj = rescale(traj, size)
    T, H, W = traj.num_frames, traj.height, traj.width
    maps = np.zeros((T, H, W, 3), dtype=np.uint8)
    if kind == "mask":
        runs = [{t: _mask_runs(rle) for t, rle in o.masks.items()} for o in traj.objects]
        indices = [palette_index(o.id) for o in traj.objects]
        for t in range(T):
            paint_filled(maps[t], [(*r[t], i) for r, i in zip(runs, indices)])
        return maps

    _first_frame(traj, maps[0])
    thickness = box_thickness(W, H)
    traj = _boxes_where_missing(traj)
    if kind == "box":
        traj = interpolate_boxes(traj)
    for o in traj.objects:
        color = PALETTE[palette_index(o.id)]
        for t, box in o.boxes.items():
            if t > 0:
                draw_box(maps[t], box, color, thickness)
    return maps


def _boxes_where_missing(traj: Trajectory) -> Trajectory:
    """Boxes from masks on frames that have a non-empty mask but no box (given boxes win)."""
    from_masks = masks_to_boxes(traj)
    out = traj.copy()
    for o, m in zip(out.objects, from_masks.objects):
        for t in o.masks:
            if t not in o.boxes and t in m.boxes:
                o.boxes[t] = m.boxes[t]
    return out


def preview_frames(traj: Trajectory, image: np.ndarray, kind: str = "box",
                   size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first frame repeated on every frame, and the trajectory maps, both at `size` (default:
    the trajectory's size): image and trajectory go through the same resize + centre crop.

    image: uint8 (H, W, 3) or a video (T', H, W, 3) (its first T frames; the last one repeated when
    it is shorter). Returns (frames, maps), both uint8 (T, H, W, 3); `magicmotion.io.write_preview`
    draws one over the other."""
    size = traj.size if size is None else (int(size[0]), int(size[1]))
    maps = render(traj, kind, size=size)
    image = np.asarray(image)
    if image.ndim == 3:
        frames = np.broadcast_to(resize_crop(image, size)[None], maps.shape)
    else:
        idx = np.minimum(np.arange(traj.num_frames), len(image) - 1)
        frames = resize_crop(image[idx], size)
    return np.ascontiguousarray(frames), maps
