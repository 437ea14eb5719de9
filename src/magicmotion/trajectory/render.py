"""Rendering trajectory maps: the RGB videos the VAE encodes into trajectory latents.

Black background; one colour per object id (`palette_color`). `mask`: filled silhouettes on every
frame. `box`: outlined rectangles of thickness max(1, min(H, W) // 100) on every frame (key boxes
linearly interpolated, boxes derived from masks where a frame has a mask but no box). `sparse_box`:
the same outlines on the frames that have a key box (or a mask) only, other frames black. Frame 0 of
`box` and `sparse_box` is the filled frame-0 mask (or the filled frame-0 box when an object has no
frame-0 mask). Objects are drawn in list order, later ones on top.

`palette` picks the colours and the outline style together: `voc` (ours) draws the outline as a band
`thickness` pixels wide inside the box; `release` draws it as the authors' release does,
`cv2.rectangle(img, (x0, y0), (x1, y1), colour, thickness)` with (x1, y1) the box's exclusive edge:
a band about thickness + 1 pixels wide (5 at thickness 4) centred on the box edge, reaching past the right and
bottom edge, with rounded outer corners.

Masks are painted straight from their run-length encoding: the runs of all objects on all frames
are merged into one label row (column-major frames, as COCO RLE stores them), expanded with one
`np.repeat`, transposed and coloured through the palette with a lookup table: a few passes over
the video whatever the number of objects.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..errors import TrajectoryError
from .ops import fill_boxes, key_boxes, rescale, resize_crop
from .palette import get_palette, palette_index
from .spec import Trajectory, rle_runs

KINDS = ("mask", "box", "sparse_box")

_LUTS = {name: np.ascontiguousarray(get_palette(name).reshape(256, 1, 3))  # index -> colour, for cv2
         for name in ("voc", "release")}
_LUT = _LUTS["voc"]
_CHUNK_PIXELS = 2_000_000  # frames painted at a time: about this many pixels


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


def draw_box(frame: np.ndarray, box, color, thickness: int, style: str = "voc") -> None:
    """Outline `box` in `frame` (H, W, 3) in place. `voc`: a band `thickness` pixels wide inside the
    box. `release`: `cv2.rectangle` from (x0, y0) to the exclusive edge (x1, y1), as the authors'
    release draws (a band about thickness + 1 wide centred on the edge, rounded outer corners)."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box_pixels(box, w, h)
    if style == "release":
        cv2.rectangle(frame, (x0, y0), (x1, y1), tuple(int(c) for c in color), int(thickness))
        return
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
#
# Filled shapes are painted from runs: [start, stop) ranges of flat pixel indices in column-major
# order within a frame (as COCO RLE stores masks), offset by t * W * H for frame t.


def mask_runs(rles: list[dict], frames: list[int], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The runs of ones of RLE masks, mask i on frame `frames[i]`: (starts, stops) int64."""
    if not rles:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    runs, per_mask = rle_runs(rles)
    first = np.concatenate(([0], np.cumsum(per_mask)[:-1]))
    total = np.concatenate(([0], np.cumsum(runs)))
    # end of each run within its frame, plus the frame's offset
    offset = np.asarray(frames, dtype=np.int64) * (width * height) - total[first]
    ends = total[1:] + np.repeat(offset, per_mask)
    ones = np.flatnonzero((np.arange(len(runs)) - np.repeat(first, per_mask)) % 2 == 1)
    starts, stops = ends[ones - 1], ends[ones]
    keep = stops > starts
    return starts[keep], stops[keep]


def box_runs(box, frame: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A filled box as runs (one per column)."""
    x0, y0, x1, y1 = box_pixels(box, width, height)
    columns = np.arange(x0, x1, dtype=np.int64) * height + frame * width * height
    return columns + y0, columns + y1


def paint_filled(maps: np.ndarray, shapes: list[tuple[np.ndarray, np.ndarray, int]],
                 palette: str = "voc") -> None:
    """Paint filled shapes into `maps` (T, H, W, 3) uint8 in place; black where none is drawn.

    shapes: (starts, stops, palette index) per object in drawing order, the runs sorted; later
    shapes cover earlier ones. Works through a few frames at a time so the buffers stay small."""
    lut = _LUTS[palette]
    T, H, W = maps.shape[:3]
    shapes = [s for s in shapes if len(s[0])]
    step = max(1, _CHUNK_PIXELS // (W * H))
    rows = np.empty((min(step, T), H, W), dtype=np.uint8)
    for t0 in range(0, T, step):
        t1 = min(t0 + step, T)
        lo, hi = t0 * W * H, t1 * W * H
        parts = []
        for starts, stops, index in shapes:
            a, b = np.searchsorted(starts, [lo, hi])
            if b > a:
                parts.append((starts[a:b], stops[a:b], index))
        if not parts:
            maps[t0:t1] = 0
            continue
        # cut the pixel row at every run boundary: each segment then has one label, the last shape's
        bounds = np.sort(np.concatenate([np.array([lo, hi], np.int64)] + [a for p in parts for a in p[:2]]))
        bounds = bounds[np.concatenate(([True], bounds[1:] != bounds[:-1]))]
        seg_start = bounds[:-1]
        label = np.zeros(len(seg_start), dtype=np.uint8)
        for starts, stops, index in parts:
            j = np.searchsorted(starts, seg_start, side="right") - 1
            label[(j >= 0) & (seg_start < stops[np.maximum(j, 0)])] = index
        labels = np.repeat(label, np.diff(bounds)).reshape(t1 - t0, W, H)  # column-major frames
        for t in range(t1 - t0):
            cv2.transpose(labels[t], dst=rows[t])
        cv2.applyColorMap(rows[:t1 - t0].reshape(-1, W), lut, dst=maps[t0:t1].reshape(-1, W, 3))


def _first_frame(traj: Trajectory, frame: np.ndarray, palette: str) -> None:
    W, H = traj.width, traj.height
    shapes = []
    for o in traj.objects:
        if 0 in o.masks:
            shapes.append((*mask_runs([o.masks[0]], [0], W, H), palette_index(o.id)))
        elif 0 in o.boxes:
            shapes.append((*box_runs(o.boxes[0], 0, W, H), palette_index(o.id)))
    if shapes:
        paint_filled(frame[None], shapes, palette)


# ---------------------------------------------------------------------------------------- render


def check_colours(traj: Trajectory, palette: str) -> None:
    """Every object gets a colour of its own in `palette` (the release palette repeats every 21 ids):
    two objects drawn alike would read back as one."""
    table, seen = get_palette(palette), {}
    for o in traj.objects:
        colour = tuple(int(v) for v in table[palette_index(o.id)])
        if colour in seen:
            raise TrajectoryError(f"{traj.where()}: objects {seen[colour]} and {o.id} have the same colour {colour} "
                                  f"in the {palette} palette; give them ids that differ modulo "
                                  f"{len(set(map(tuple, table[1:].tolist())))}")
        seen[colour] = o.id


def render(traj: Trajectory, kind: str, size: tuple[int, int] | None = None,
           palette: str = "voc") -> np.ndarray:
    """Trajectory maps of `kind` ("mask", "box" or "sparse_box") as uint8 (T, H, W, 3).

    `size` = (W, H) first rescales the trajectory (resize to cover, centre crop: `rescale`). The
    `mask` kind needs a mask of every object on every frame (an empty mask: absent there).
    `palette`: "voc" (our colours and outlines) or "release" (the authors' release's)."""
    if kind not in KINDS:
        raise TrajectoryError(f"{traj.where()}: unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    table = get_palette(palette)
    traj.validate()
    check_colours(traj, palette)
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
        shapes = []
        for o in traj.objects:
            frames = sorted(o.masks)
            runs = mask_runs([o.masks[t] for t in frames], frames, W, H)
            shapes.append((*runs, palette_index(o.id)))
        paint_filled(maps, shapes, palette)
        return maps

    _first_frame(traj, maps[0], palette)
    thickness = box_thickness(W, H)
    for o in traj.objects:
        boxes = key_boxes(o)
        if kind == "box":
            absent = {t for t in o.masks if t not in boxes}  # an empty mask: not there
            boxes = fill_boxes(boxes, T, absent)
        color = table[palette_index(o.id)]
        for t, box in boxes.items():
            if t > 0:
                draw_box(maps[t], box, color, thickness, style=palette)
    return maps


def write_maps_video(path, maps: np.ndarray, fps: float = 8.0):
    """Trajectory maps, uint8 (T, H, W, 3), -> a lossless mp4 (H.264 in RGB, libx264rgb at qp 0):
    every pixel reads back exactly, so outlines of any width and objects of any size survive (a
    yuv420p H.264 video halves the colour resolution and blurs 1-3 px outlines into their
    neighbours; docs/trajectory-format.md, "What map videos keep"). Odd sizes are kept as they are.
    Browsers may not play it: `trajectory preview` writes a video to look at."""
    from fractions import Fraction
    from pathlib import Path

    import av

    from ..errors import MediaError
    from ..io import _check_frames, atomic_path

    path = Path(path)
    maps = _check_frames(path, maps)
    if not 0 < fps <= 1000:
        raise MediaError(f"{path}: fps must be positive (at most 1000), got {fps}")
    _, h, w, _ = maps.shape
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264rgb", rate=Fraction(fps).limit_denominator(1000))
            stream.width, stream.height = w, h
            stream.pix_fmt = "rgb24"
            stream.options = {"qp": "0", "preset": "veryfast"}
            for f in maps:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
            container.mux(stream.encode())
    return path


def preview_frames(traj: Trajectory, image: np.ndarray, kind: str = "box",
                   size: tuple[int, int] | None = None,
                   palette: str = "voc") -> tuple[np.ndarray, np.ndarray]:
    """The first frame repeated on every frame, and the trajectory maps, both at `size` (default:
    the trajectory's size): image and trajectory go through the same resize + centre crop.

    image: uint8 (H, W, 3) or a video (T', H, W, 3) (its first T frames; the last one repeated when
    it is shorter). Returns (frames, maps), both uint8 (T, H, W, 3); `magicmotion.io.write_preview`
    draws one over the other."""
    size = traj.size if size is None else (int(size[0]), int(size[1]))
    maps = render(traj, kind, size=size, palette=palette)
    image = np.asarray(image)
    if image.ndim == 3:
        frames = np.broadcast_to(resize_crop(image, size)[None], maps.shape)
    else:
        idx = np.minimum(np.arange(traj.num_frames), len(image) - 1)
        frames = resize_crop(image[idx], size)
    return np.ascontiguousarray(frames), maps
