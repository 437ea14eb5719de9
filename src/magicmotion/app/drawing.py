"""From clicks on the first frame to a trajectory: the app's drawing logic, with no Gradio in it.

Coordinates are pixels of the first frame, x to the right and y down, as the image's select event
gives them. Per object:

- its frame-0 mask comes from a box (two corner clicks; OpenCV GrabCut inside the box, or the filled
  box when GrabCut finds nothing) or from point clicks (SAM 2, when its weights are given);
- its path starts at the centre of the mask's bounding box and goes through the clicked path points;
  a scale (size factor, 1 = as drawn) can be set at any clicked point.

`path_track` turns a path into a centre and a scale per frame, piecewise linear in one of two timings:
`arc` (constant speed: frame t is at arc length t / (T - 1) of the whole path) or `time` (each clicked
point is reached at an equal share of the video: point i of n at frame i (T - 1) / n). Scales are
linear in the same parameter between the points where they are set (1 at the start, held after the
last point that sets one).

`build_trajectory` makes a `Trajectory` of any kind from the drawing, with the trajectory layer's
functions: `mask` moves and scales the frame-0 mask along the path (`from_label_masks` of the moved
masks, clipped to the frame); `box` moves and scales the mask's bounding box (a box on every frame,
clipped to the frame, with the frame-0 mask); `sparse_box` keeps the boxes of `box` on key frames only
(frame 0 keeps its mask), like `sparsify`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import MediaError, TrajectoryError
from ..limits import MIN_IMAGE_SIDE
from ..perception.sam2_image import Sam2ImageSegmenter
from ..trajectory import (KINDS, MAX_SPARSE_KEYS, ObjectTrack, Trajectory, from_dict, from_label_masks, mask_box,
                          masks_to_boxes, to_dict)

MAX_IMAGE_SIDE = 4096  # larger uploads are refused: the drawing, GrabCut and the preview would crawl
MIN_BOX_SIDE = 4  # pixels: a smaller box is a slip of the mouse, not an object
MIN_SCALE, MAX_SCALE = 0.1, 10.0
TIMINGS = ("arc", "time")
DRAWING_KEY = "drawing"  # extra key of a spec the app writes; the trajectory layer ignores it


# ------------------------------------------------------------------------------------ the first frame


def check_image(image, where: str = "first frame") -> np.ndarray:
    """An uploaded first frame -> uint8 (H, W, 3) RGB; raises MediaError when there is none or it is
    too large (longer side over MAX_IMAGE_SIDE) or not an image."""
    if image is None:
        raise MediaError(f"no {where}: upload an image or pick an example first")
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
        raise MediaError(f"{where}: expected an RGB image, got an array of shape {image.shape}")
    h, w = image.shape[:2]
    if max(h, w) > MAX_IMAGE_SIDE:
        raise MediaError(
            f"{where}: {w}x{h} is too large (at most {MAX_IMAGE_SIDE} pixels a side); resize it first"
        )
    if image.dtype == np.uint16:  # 16-bit, as the image loader reads it: v / 257
        image = np.floor(image.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.shape[2] == 4:  # transparency over white, as for files (io.image_to_rgb)
        from PIL import Image

        from ..io import image_to_rgb

        return image_to_rgb(Image.fromarray(np.ascontiguousarray(image), "RGBA"), where)
    return np.ascontiguousarray(image)


def read_first_frame(image, min_side: int = MIN_IMAGE_SIDE) -> np.ndarray:
    """The first frame the page sent -> uint8 (H, W, 3): an uploaded file's path (its size read
    from the header and refused before any pixel is decoded, so a 20000x20000 PNG costs nothing) or
    an array. Not an image, larger than MAX_IMAGE_SIDE, or under `min_side` pixels a side (the
    generator's): MediaError naming the file by its name only (not the server path)."""
    if isinstance(image, (str, os.PathLike)):
        from ..io import image_to_rgb, opened_image

        name = Path(image).name
        try:
            with opened_image(image, what="first frame") as im:  # EXIF orientation, 16-bit, alpha...
                w, h = im.size
                if max(w, h) > MAX_IMAGE_SIDE:
                    raise MediaError(f"{name}: {w}x{h} is too large (at most {MAX_IMAGE_SIDE} pixels a side); "
                                     "resize it first")
                image = image_to_rgb(im, name)
        except MediaError as e:
            if "unreadable first frame" in str(e):
                raise MediaError(f"{name}: not an image the app can read (PNG, JPEG, WebP, GIF...)") from None
            raise MediaError(str(e).replace(str(image), name)) from None
        where = name
    else:
        where = "first frame"
    image = check_image(image, where)
    if min(image.shape[:2]) < min_side:
        raise MediaError(f"{where}: the first frame is {image.shape[1]}x{image.shape[0]}; at least {min_side} "
                         "pixels a side are needed")
    return image


def check_point(point, size: tuple[int, int], what: str) -> tuple[float, float]:
    """(x, y) as floats; raises TrajectoryError when it lies outside the `size` = (W, H) frame."""
    x, y = (float(v) for v in point)
    w, h = size
    if not (0 <= x <= w and 0 <= y <= h) or not (np.isfinite(x) and np.isfinite(y)):
        raise TrajectoryError(f"{what} ({x:g}, {y:g}) is outside the {w}x{h} frame")
    return x, y


# ------------------------------------------------------------------------------------------- masks


def box_from_clicks(first, second, size: tuple[int, int]) -> np.ndarray:
    """Two opposite corners (x, y), in either order -> box [x0, y0, x1, y1] (float64)."""
    x0, y0 = check_point(first, size, "box corner")
    x1, y1 = check_point(second, size, "box corner")
    box = np.array([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], dtype=np.float64)
    if box[2] - box[0] < MIN_BOX_SIDE or box[3] - box[1] < MIN_BOX_SIDE:
        raise TrajectoryError(
            f"box {box[2] - box[0]:g}x{box[3] - box[1]:g} is too small: drag a box at least "
            f"{MIN_BOX_SIDE} pixels wide and high around the object"
        )
    return box


def filled_box(box, size: tuple[int, int]) -> np.ndarray:
    """bool (H, W): the pixels whose centres lie inside `box`."""
    w, h = size
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    mask = np.zeros((h, w), dtype=bool)
    mask[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)] = True
    return mask


def mask_from_box(image: np.ndarray, box, iterations: int = 5) -> np.ndarray:
    """The object inside `box`: OpenCV GrabCut initialised with the box (foreground can only be inside
    it). Falls back to the filled box when GrabCut finds no foreground or cannot run (a box covering
    the whole image leaves it no background to learn from). Returns bool (H, W)."""
    image = check_image(image)
    h, w = image.shape[:2]
    box_mask = filled_box(box, (w, h))
    ys, xs = np.nonzero(box_mask)
    if len(xs) == 0:
        raise TrajectoryError(f"box {list(np.round(box, 1))} holds no pixel of the {w}x{h} frame")
    rect = (int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1))
    labels = np.zeros((h, w), dtype=np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means starts from random centres: make it repeatable
    try:
        cv2.grabCut(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), labels, rect, bgd, fgd, iterations,
                    cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        return box_mask
    mask = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)) & box_mask
    return mask if mask.any() else box_mask


class Sam2Segmenter(Sam2ImageSegmenter):
    """Point prompts on the uploaded first frame -> a mask (`magicmotion.perception.Sam2ImageSegmenter`
    with the app's image check)."""

    def __call__(self, image: np.ndarray, points, labels) -> np.ndarray:
        return super().__call__(check_image(image), points, labels)


# -------------------------------------------------------------------------------------------- paths


def path_track(start, path, num_frames: int, scales: dict[int, float] | None = None,
               timing: str = "arc") -> tuple[np.ndarray, np.ndarray]:
    """The centre and scale of an object on every frame.

    Args:
        start: (x, y) where the object is on frame 0 (its box centre).
        path: clicked points [(x, y), ...], in order; empty = the object stays where it is.
        num_frames: T.
        scales: {point number: scale} for points 1..len(path) (point 0, the start, has scale 1).
        timing: "arc" (constant speed along the path) or "time" (equal time between points).
    Returns:
        centres float64 (T, 2), scales float64 (T,).
    """
    if timing not in TIMINGS:
        raise TrajectoryError(f"unknown timing {timing!r}: expected one of {', '.join(TIMINGS)}")
    if num_frames < 1:
        raise TrajectoryError(f"num_frames must be positive, got {num_frames}")
    points = np.array([start, *path], dtype=np.float64).reshape(-1, 2)
    n = len(points) - 1
    scales = dict(scales or {})
    for i, s in scales.items():
        if not 1 <= int(i) <= n:
            raise TrajectoryError(f"scale set at path point {i}, but the path has points 1..{n}")
        if not MIN_SCALE <= float(s) <= MAX_SCALE:
            raise TrajectoryError(f"path point {i}: scale {s:g} outside {MIN_SCALE:g}..{MAX_SCALE:g}")
    u = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    if n == 0:
        return np.repeat(points, num_frames, axis=0), np.ones(num_frames)
    lengths = np.linalg.norm(np.diff(points, axis=0), axis=1)
    if timing == "arc" and lengths.sum() > 0:
        knots = np.concatenate([[0.0], np.cumsum(lengths)]) / lengths.sum()
    else:  # equal time per point (also for a path that does not move)
        knots = np.arange(n + 1) / n
    centres = np.stack([_interp(u, knots, points[:, j]) for j in range(2)], axis=1)
    set_at = [0] + sorted(int(i) for i in scales)
    values = [1.0] + [float(scales[i]) for i in sorted(scales, key=int)]
    size = _interp(u, knots[set_at], np.array(values))
    return centres, size


def _interp(u: np.ndarray, knots: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Piecewise linear through (knots, values); knots non-decreasing, repeated knots allowed (the
    later value wins after a repeat)."""
    out = np.empty_like(u)
    for k, x in enumerate(u):
        i = int(np.searchsorted(knots, x, side="right")) - 1
        i = min(max(i, 0), len(knots) - 1)
        if i == len(knots) - 1 or knots[i + 1] == knots[i]:
            out[k] = values[i]
        else:
            a = (x - knots[i]) / (knots[i + 1] - knots[i])
            out[k] = values[i] + a * (values[i + 1] - values[i])
    return out


def moved_box(box, centre, scale: float, size: tuple[int, int]) -> np.ndarray | None:
    """`box` scaled by `scale` about its centre and moved so its centre is `centre`, clipped to the
    `size` = (W, H) frame; None when nothing of it is left in the frame."""
    x0, y0, x1, y1 = (float(v) for v in box)
    hw, hh = (x1 - x0) * scale / 2.0, (y1 - y0) * scale / 2.0
    cx, cy = (float(v) for v in centre)
    out = np.clip([cx - hw, cy - hh, cx + hw, cy + hh], 0, [size[0], size[1], size[0], size[1]])
    if out[2] - out[0] <= 1e-6 or out[3] - out[1] <= 1e-6:
        return None
    return out.astype(np.float64)


def moved_mask(mask: np.ndarray, origin, centre, scale: float) -> np.ndarray:
    """bool (H, W) `mask` scaled by `scale` about `origin` and moved so `origin` lands on `centre`
    (nearest neighbour; what leaves the frame is cut off)."""
    h, w = mask.shape
    ox, oy = (float(v) for v in origin)
    cx, cy = (float(v) for v in centre)
    # pixel i covers [i, i + 1): its centre i + 0.5 maps to scale (i + 0.5 - origin) + centre
    tx = scale * (0.5 - ox) + cx - 0.5
    ty = scale * (0.5 - oy) + cy - 0.5
    m = np.array([[scale, 0.0, tx], [0.0, scale, ty]], dtype=np.float64)
    out = cv2.warpAffine(mask.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.astype(bool)


# ---------------------------------------------------------------------------------------- objects


@dataclass
class DrawnObject:
    """One object as drawn: its frame-0 mask and its path.

    `box` is the dragged box the mask came from (or None); `points` / `point_labels` the SAM 2 clicks
    (label 1 on the object, 0 off it); `corner` a first box corner waiting for the second click.
    `path` holds the clicked path points (the start, the mask's box centre, is not among them);
    `scales` maps point numbers 1..len(path) to a size factor.
    """

    id: int
    label: str = ""
    mask: np.ndarray | None = None
    box: np.ndarray | None = None
    points: list[tuple[float, float]] = field(default_factory=list)
    point_labels: list[int] = field(default_factory=list)
    corner: tuple[float, float] | None = None
    path: list[tuple[float, float]] = field(default_factory=list)
    scales: dict[int, float] = field(default_factory=dict)

    def name(self) -> str:
        return f"object {self.id}" + (f" ({self.label})" if self.label else "")

    def start(self) -> np.ndarray:
        """Centre of the frame-0 mask's bounding box."""
        box = self.bounding_box()
        return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])

    def bounding_box(self) -> np.ndarray:
        box = None if self.mask is None else mask_box(self.mask)
        if box is None:
            raise TrajectoryError(
                f"{self.name()} has no mask: drag a box around it (two clicks) or click points on it"
            )
        return box


def check_objects(objects: list[DrawnObject], size: tuple[int, int]) -> None:
    """Raise TrajectoryError when there is no object, an object has no mask, a mask does not fit the
    frame, a path point lies outside the frame or ids repeat."""
    if not objects:
        raise TrajectoryError("no objects: add an object, then drag a box around it on the first frame")
    seen = set()
    for o in objects:
        if o.id in seen:
            raise TrajectoryError(f"two objects have id {o.id}")
        seen.add(o.id)
        o.bounding_box()
        if o.mask.shape != (size[1], size[0]):
            raise TrajectoryError(
                f"{o.name()}: mask is {o.mask.shape[1]}x{o.mask.shape[0]}, the frame is {size[0]}x{size[1]}"
            )
        for i, p in enumerate(o.path, start=1):
            check_point(p, size, f"{o.name()}: path point {i}")


def object_tracks(objects: list[DrawnObject], size: tuple[int, int], num_frames: int,
                  timing: str = "arc") -> list[tuple[np.ndarray, np.ndarray]]:
    """(centres (T, 2), scales (T,)) of each object, after checking the drawing."""
    check_objects(objects, size)
    return [path_track(o.start(), o.path, num_frames, o.scales, timing) for o in objects]


def default_key_frames(objects: list[DrawnObject], num_frames: int, timing: str = "arc") -> list[int]:
    """Key frames for `sparse_box` when none are picked: the frames where the objects reach their
    clicked path points (rounded), at most MAX_SPARSE_KEYS of them (evenly chosen, the last always
    kept); the last frame when no object moves."""
    keys = set()
    for o in objects:
        if not o.path:
            continue
        points = np.array([o.start(), *o.path], dtype=np.float64)
        n = len(points) - 1
        lengths = np.linalg.norm(np.diff(points, axis=0), axis=1)
        if timing == "arc" and lengths.sum() > 0:
            knots = np.cumsum(lengths) / lengths.sum()
        else:
            knots = np.arange(1, n + 1) / n
        keys.update(int(round(k * (num_frames - 1))) for k in knots)
    keys = sorted(k for k in keys if 1 <= k < num_frames) or [num_frames - 1]
    if len(keys) > MAX_SPARSE_KEYS:
        idx = np.round(np.linspace(0, len(keys) - 1, MAX_SPARSE_KEYS)).astype(int)
        keys = [keys[i] for i in idx]
    return keys


def check_key_frames(key_frames, num_frames: int) -> list[int]:
    keys = sorted({int(k) for k in key_frames})
    if not keys:
        raise TrajectoryError("sparse_box needs at least one key frame besides frame 0")
    bad = [k for k in keys if not 1 <= k < num_frames]
    if bad:
        raise TrajectoryError(f"key frame {bad[0]} outside 1..{num_frames - 1}")
    if len(keys) > MAX_SPARSE_KEYS:
        raise TrajectoryError(f"{len(keys)} key frames picked: sparse_box takes at most {MAX_SPARSE_KEYS}")
    return keys


def build_trajectory(objects: list[DrawnObject], size: tuple[int, int], num_frames: int, kind: str,
                     key_frames=None, timing: str = "arc", caption: str = "") -> Trajectory:
    """The drawing as a Trajectory of `kind` (see the module docstring); `size` = (W, H) of the first
    frame; `key_frames` (sparse_box only): frames 1..T-1, default `default_key_frames`."""
    if kind not in KINDS:
        raise TrajectoryError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    w, h = size
    tracks = object_tracks(objects, size, num_frames, timing)
    traj = Trajectory(width=w, height=h, num_frames=num_frames, caption=caption)
    for o, (centres, scales) in zip(objects, tracks):
        start = o.start()
        if kind == "mask":
            moved = np.stack([moved_mask(o.mask, start, c, s) for c, s in zip(centres, scales)])
            one = from_label_masks(np.where(moved, o.id, 0), labels_by_id={o.id: o.label},
                                   num_frames=num_frames)
            traj.objects.extend(one.objects)
            continue
        track = ObjectTrack(id=o.id, label=o.label)
        track.set_mask(0, o.mask)
        box0 = o.bounding_box()
        for t, (c, s) in enumerate(zip(centres, scales)):
            box = box0 if t == 0 else moved_box(box0, c, s, size)
            if box is not None:
                track.boxes[t] = box
        traj.objects.append(track)
    if kind == "sparse_box":
        keys = set(check_key_frames(key_frames, num_frames) if key_frames
                   else default_key_frames(objects, num_frames, timing))
        for o in traj.objects:
            o.boxes = {t: b for t, b in o.boxes.items() if t == 0 or t in keys}
    return traj.validate()


# ------------------------------------------------------------------------------------------- specs


def spec_dict(objects: list[DrawnObject], traj: Trajectory, kind: str, timing: str = "arc",
              key_frames=None, settings: dict | None = None) -> dict:
    """The JSON spec of `traj` (what `magicmotion generate` reads) plus a "drawing" entry with the
    clicks, so the app can load the spec back for editing exactly as drawn."""
    data = to_dict(traj)
    data[DRAWING_KEY] = {
        "kind": kind,
        "timing": timing,
        "key_frames": sorted(int(k) for k in key_frames) if key_frames else None,
        "settings": dict(settings or {}),
        "objects": [
            {
                "id": int(o.id),
                "label": o.label,
                "box": None if o.box is None else [float(v) for v in o.box],
                "points": [[float(x), float(y), int(lbl)] for (x, y), lbl in zip(o.points, o.point_labels)],
                "path": [[float(x), float(y)] for x, y in o.path],
                "scales": {str(i): float(s) for i, s in sorted(o.scales.items())},
            }
            for o in objects
        ],
    }
    return data


def objects_from_spec(data: dict, source: str = "spec", base_dir: str | Path = ".",
                      ) -> tuple[Trajectory, list[DrawnObject], dict]:
    """A spec (parsed JSON) -> (trajectory, objects to edit, drawing options {kind, timing, key_frames,
    settings}). Mask paths in the spec are relative to `base_dir`.

    A spec written by the app carries its clicks and gives them back exactly. Any other spec is turned
    into a drawing: the frame-0 mask (or the filled frame-0 box), and as the path the box centres on
    the frames that have boxes (boxes from masks where there are none), with the scale at each point
    from the box size, under `time` timing."""
    traj = from_dict(data, base_dir=base_dir, source=source)
    drawing = data.get(DRAWING_KEY) if isinstance(data.get(DRAWING_KEY), dict) else None
    options = {"kind": "box", "timing": "time", "key_frames": None, "settings": {}}
    by_id = {}
    if drawing:
        options.update({k: drawing[k] for k in ("kind", "timing", "key_frames", "settings") if k in drawing})
        by_id = {int(d["id"]): d for d in drawing.get("objects", []) if isinstance(d, dict) and "id" in d}
    dense = masks_to_boxes(traj)
    objects = []
    for track in dense.objects:
        mask = track.mask(0)
        if mask is None and 0 in track.boxes:
            mask = filled_box(track.boxes[0], traj.size)
        if mask is None or not mask.any():
            raise TrajectoryError(f"{source}: object {track.id} has no mask or box on frame 0")
        o = DrawnObject(id=int(track.id), label=track.label, mask=mask)
        d = by_id.get(o.id)
        try:
            if d is not None:
                o.box = None if d.get("box") is None else np.asarray(d["box"], dtype=np.float64)
                o.points = [(float(p[0]), float(p[1])) for p in d.get("points", [])]
                o.point_labels = [int(p[2]) for p in d.get("points", [])]
                o.path = [(float(x), float(y)) for x, y in d.get("path", [])]
                o.scales = {int(i): float(s) for i, s in (d.get("scales") or {}).items()}
            else:
                box0 = mask_box(mask)
                for t in sorted(k for k in track.boxes if k > 0):
                    b = track.boxes[t]
                    o.path.append(((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0))
                    ratio = np.sqrt((b[2] - b[0]) * (b[3] - b[1]) / ((box0[2] - box0[0]) * (box0[3] - box0[1])))
                    if abs(ratio - 1.0) > 1e-3:
                        o.scales[len(o.path)] = float(np.clip(ratio, MIN_SCALE, MAX_SCALE))
        except (TypeError, ValueError, IndexError, KeyError) as e:
            raise TrajectoryError(f"{source}: object {o.id}: malformed drawing entry ({e})") from None
        objects.append(o)
    if not drawing:
        options["key_frames"] = sorted({t for o in traj.objects for t in o.boxes if t > 0}) or None
    if options["kind"] not in KINDS:
        raise TrajectoryError(f"{source}: unknown kind {options['kind']!r}")
    if options["timing"] not in TIMINGS:
        raise TrajectoryError(f"{source}: unknown timing {options['timing']!r}")
    check_objects(objects, traj.size)
    return traj, objects, options

__all__ = [
    "DRAWING_KEY", "DrawnObject", "MAX_IMAGE_SIDE", "Sam2Segmenter", "TIMINGS", "box_from_clicks",
    "build_trajectory", "check_image", "check_key_frames", "check_objects", "check_point",
    "default_key_frames", "filled_box", "mask_from_box", "moved_box", "moved_mask", "object_tracks",
    "objects_from_spec", "path_track", "spec_dict",
]
