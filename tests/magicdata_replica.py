"""MagicData replicas drawn the way the authors' release draws, by the libraries it draws with (outside
truth for the map readers; importable by name: `tests/conftest.py` puts this folder on sys.path).

- mask maps: `sv.MaskAnnotator()` (default palette by class id = object id, opacity 0.5) over a black
  BGR frame, as the release's `trajectory_construction` scripts do; supervision paints larger masks
  first and smaller ones on top;
- box maps: per object, in id order, `cv2.rectangle(frame, (x, y), (x + w, y + h), colour,
  min(H, W) // 100)` with `(x, y, w, h) = cv2.boundingRect(mask)` and the colour the object has in the
  mask maps, as the release's `plan_box.py` draws boxes (frame 0 optionally the filled mask frame);
- frames written with `cv2.imwrite` (BGR -> a PNG in RGB order), videos with `cv2.VideoWriter`
  (mp4v) or PyAV (H.264 at a given CRF).

The truth comes from the same libraries: which object shows at a pixel is read from a second
`MaskAnnotator` pass with a palette of label colours at opacity 1 (supervision's own paint order), and
the drawn box is `cv2.boundingRect` of the object's whole mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import supervision as sv

# release palette ids whose colour lies near the blend of two others (issue 35) and the closest pair
HARD_IDS = (3, 9, 13, 16, 17, 21)


@dataclass
class ReplicaClip:
    """One drawn clip: RGB maps, and the truth."""

    masks: np.ndarray                 # uint8 (T, H, W, 3) RGB mask maps
    boxes: np.ndarray                 # uint8 (T, H, W, 3) RGB box maps
    visible: np.ndarray               # int32 (T, H, W): the object id shown at each pixel (0: none)
    full: dict                        # id -> bool (T, H, W): the object's whole mask
    drawn: dict = field(default_factory=dict)  # id -> {t: [x0, y0, x1, y1]} the box cv2 drew
    filled_first: bool = False        # frame 0 of the box maps is the mask frame

    @property
    def ids(self) -> list[int]:
        return sorted(self.full)


def _detections(full: dict, t: int, ids: list[int]):
    present = [i for i in ids if full[i][t].any()]
    if not present:
        return None
    masks = np.stack([full[i][t] for i in present])
    return sv.Detections(xyxy=sv.mask_to_xyxy(masks).astype(np.float64), mask=masks,
                         class_id=np.array(present, dtype=np.int32))


def draw_clip(full: dict, filled_first: bool = False, thickness: int | None = None) -> ReplicaClip:
    """Draw a clip's mask and box maps from whole masks `full` (id -> bool (T, H, W))."""
    ids = sorted(full)
    T, H, W = next(iter(full.values())).shape
    thickness = max(1, min(H, W) // 100) if thickness is None else thickness
    annotator = sv.MaskAnnotator()
    # label colours: class id k painted as BGR (k, 0, 0) at opacity 1, so the blue channel is the id
    labeller = sv.MaskAnnotator(color=sv.ColorPalette([sv.Color(r=0, g=0, b=k) for k in range(256)]),
                                opacity=1.0)
    masks = np.zeros((T, H, W, 3), np.uint8)
    boxes = np.zeros((T, H, W, 3), np.uint8)
    visible = np.zeros((T, H, W), np.int32)
    drawn: dict = {i: {} for i in ids}
    for t in range(T):
        det = _detections(full, t, ids)
        bgr = np.zeros((H, W, 3), np.uint8)
        if det is not None:
            bgr = annotator.annotate(scene=bgr, detections=det)
            visible[t] = labeller.annotate(scene=np.zeros((H, W, 3), np.uint8), detections=det)[..., 0]
        masks[t] = bgr[..., ::-1]
        box = bgr.copy() if (filled_first and t == 0) else np.zeros_like(bgr)
        for i in ids:
            m = full[i][t]
            if not m.any():
                continue
            x, y, w, h = cv2.boundingRect(m.astype(np.uint8))
            drawn[i][t] = [x, y, x + w, y + h]
            if filled_first and t == 0:
                continue
            colour = tuple(int(c) for c in sv.ColorPalette.DEFAULT.by_idx(i).as_bgr())
            colour = tuple(int(c) for c in cv2.addWeighted(np.array([colour], np.uint8), 0.5,
                                                           np.zeros((1, 3), np.uint8), 0.5, 0)[0])
            cv2.rectangle(box, (x, y), (x + w, y + h), colour, thickness=thickness)
        boxes[t] = box[..., ::-1]
    return ReplicaClip(masks, boxes, visible, full, drawn, filled_first)


# ------------------------------------------------------------------------------------ scenes


def _shape(kind: str, H: int, W: int, cx: float, cy: float, rx: float, ry: float, angle: float) -> np.ndarray:
    canvas = np.zeros((H, W), np.uint8)
    c = (int(round(cx)), int(round(cy)))
    if kind == "ellipse":
        cv2.ellipse(canvas, c, (max(1, int(rx)), max(1, int(ry))), angle, 0, 360, 1, -1)
    elif kind == "rect":
        pts = cv2.boxPoints(((cx, cy), (2 * rx, 2 * ry), angle))
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    else:  # triangle
        a = np.deg2rad(angle)
        pts = [(cx + rx * np.cos(a + k * 2.094), cy + ry * np.sin(a + k * 2.094)) for k in range(3)]
        cv2.fillPoly(canvas, [np.round(np.array(pts)).astype(np.int32)], 1)
    return canvas.astype(bool)


def random_scene(rng: np.random.Generator, size=(160, 120), frames: int = 9, n_objects: int = 3,
                 ids=None, small: int = 0, min_area: float = 0.002, max_area: float = 0.08) -> dict:
    """Whole masks id -> bool (T, H, W) of `n_objects` shapes moving (and turning, growing) across a
    `size` = (W, H) frame; `small` of them at min_area..4 x min_area of the frame. Objects may
    overlap, touch and leave the frame. ids: the object ids (default 1..n)."""
    W, H = size
    ids = list(range(1, n_objects + 1)) if ids is None else list(ids)
    full = {}
    for k, oid in enumerate(ids):
        lo, hi = (min_area, 4 * min_area) if k < small else (4 * min_area, max_area)
        area = rng.uniform(lo, hi) * W * H
        aspect = rng.uniform(0.5, 2.0)
        kind = rng.choice(["ellipse", "rect", "triangle"])
        scale = {"ellipse": np.pi, "rect": 4.0, "triangle": 1.3}[kind]
        rx = np.sqrt(area / scale * aspect)
        ry = area / scale / rx
        rx, ry = max(rx, 2.0), max(ry, 2.0)
        x0, y0 = rng.uniform(0.15, 0.85) * W, rng.uniform(0.15, 0.85) * H
        vx, vy = rng.normal(0, 0.02 * W), rng.normal(0, 0.02 * H)
        grow, turn, angle = rng.uniform(-0.02, 0.02), rng.uniform(-6, 6), rng.uniform(0, 180)
        full[oid] = np.stack([_shape(kind, H, W, x0 + vx * t, y0 + vy * t, rx * (1 + grow * t),
                                     ry * (1 + grow * t), angle + turn * t) for t in range(frames)])
    return full


def occlusion_scene(size=(160, 120), frames: int = 9, ids=(1, 2, 3)) -> dict:
    """Object ids[0] (a square) fully covered on the middle frames by two smaller halves (drawn on top
    by supervision's paint order), visible before and after."""
    W, H = size
    s = min(W, H) // 4
    full = {i: np.zeros((frames, H, W), bool) for i in ids}
    for t in range(frames):
        full[ids[0]][t, H // 3:H // 3 + s, W // 3:W // 3 + s] = True
        dx = max(0, abs(t - frames // 2) - 1) * (s // 2)  # the halves slide over it and away
        full[ids[1]][t, H // 3:H // 3 + s // 2, W // 3 - dx:W // 3 - dx + s] = True
        full[ids[2]][t, H // 3 + s // 2:H // 3 + s, W // 3 + dx:W // 3 + dx + s] = True
    return full


# ------------------------------------------------------------------------------------ writing


def write_png_folder(folder: Path, maps: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(maps):
        cv2.imwrite(str(folder / f"annotated_frame_{t:05d}.png"), np.ascontiguousarray(frame[..., ::-1]))


def write_mp4v(path: Path, frames: np.ndarray, fps: float = 8.0) -> None:
    """RGB frames through OpenCV's mp4v writer (as the release writes its map videos)."""
    T, H, W = frames.shape[:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    assert writer.isOpened(), path
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()


def write_h264(path: Path, frames: np.ndarray, crf: int, fps: int = 8) -> None:
    """RGB frames as H.264 (yuv420p) at `crf` through PyAV (libx264): 18 high quality, 30 low."""
    import av

    T, H, W = frames.shape[:3]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = W + W % 2, H + H % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for f in frames:
            if W % 2 or H % 2:
                f = np.pad(f, ((0, H % 2), (0, W % 2), (0, 0)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_release(root: Path, vid: str, clip: ReplicaClip, fps: float = 8.0) -> None:
    """One clip in MagicData's layout: videos/<vid>.mp4 (mp4v, grey frames showing the objects),
    masks/<vid>/ and boxs/<vid>/annotated_frame_00000.png ..."""
    (root / "videos").mkdir(parents=True, exist_ok=True)
    frames = np.full(clip.masks.shape, 96, np.uint8)
    frames = np.where(clip.masks.any(-1, keepdims=True), np.minimum(clip.masks.astype(int) * 2, 255), frames)
    write_mp4v(root / "videos" / f"{vid}.mp4", frames.astype(np.uint8), fps)
    write_png_folder(root / "masks" / vid, clip.masks)
    write_png_folder(root / "boxs" / vid, clip.boxes)


# ------------------------------------------------------------------------------------ scoring


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def outline_sides_shown(clip: ReplicaClip, oid: int, t: int) -> int:
    """How many sides of the object's drawn outline show (some pixel of each side's middle third in
    its colour on the box map, not drawn over by a later outline nor off the frame)."""
    x0, y0, x1, y1 = clip.drawn[oid][t]
    H, W = clip.boxes.shape[1:3]
    rgb = sv.ColorPalette.DEFAULT.by_idx(oid).as_rgb()
    colour = np.array(cv2.addWeighted(np.array([rgb], np.uint8), 0.5, np.zeros((1, 3), np.uint8), 0.5, 0)[0])
    lit = (clip.boxes[t] == colour).all(-1)
    th = max(1, min(H, W) // 100)
    n = 0
    xa, xb = x0 + (x1 - x0) // 3, x1 - (x1 - x0) // 3
    ya, yb = y0 + (y1 - y0) // 3, y1 - (y1 - y0) // 3
    for ys, xs in ((slice(max(y0 - th, 0), y0 + th + 1), slice(xa, xb + 1)),
                   (slice(max(y1 - th, 0), min(y1 + th + 1, H)), slice(xa, xb + 1)),
                   (slice(ya, yb + 1), slice(max(x0 - th, 0), x0 + th + 1)),
                   (slice(ya, yb + 1), slice(max(x1 - th, 0), min(x1 + th + 1, W)))):
        if lit[ys, xs].any():
            n += 1
    return n


def score_clip(clip: ReplicaClip, traj) -> dict:
    """Compare a decoded Trajectory with the truth: per object mask IoU (visible masks, over frames
    where either shows), box errors (max abs px) on (object, frame) pairs whose outline shows on at
    least two sides, lost/merged objects, and the frames where the object is fully covered."""
    from magicmotion.trajectory import decode_mask

    out = {"lost": [], "extra": [], "mask_iou": {}, "box_err": [], "covered": {}}
    got = {o.id: o for o in traj.objects}
    out["lost"] = [i for i in clip.ids if (clip.visible == i).any() and i not in got]
    out["extra"] = [i for i in got if i not in clip.ids]
    T = clip.masks.shape[0]
    for i in clip.ids:
        if i not in got:
            continue
        o = got[i]
        ious = []
        for t in range(T):
            truth = clip.visible[t] == i
            mine = decode_mask(o.masks[t]) if t in o.masks else np.zeros_like(truth)
            if truth.any() or mine.any():
                ious.append(iou(truth, mine))
            if clip.full[i][t].any() and not truth.any():
                out["covered"].setdefault(i, []).append(t)
        out["mask_iou"][i] = float(np.mean(ious)) if ious else 1.0
        for t, box in clip.drawn[i].items():
            if not (clip.filled_first and t == 0) and outline_sides_shown(clip, i, t) >= 2:
                mine = o.boxes.get(t)
                err = np.inf if mine is None else float(np.abs(np.asarray(mine) - np.asarray(box)).max())
                out["box_err"].append((i, t, err))
    return out


def compression_noise(maps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lossy-like damage to drawn maps: an offset per 8x8 block and channel (-3..3) plus per-pixel
    noise (sigma 2, clipped to 5): up to 8 per channel, enough to move a pixel of release id 16 past
    the midpoint to id 21 (18.7 apart)."""
    t, h, w, _ = maps.shape
    block = rng.integers(-3, 4, size=(t, (h + 7) // 8, (w + 7) // 8, 3))
    block = np.repeat(np.repeat(block, 8, axis=1), 8, axis=2)[:, :h, :w]
    noise = np.clip(np.round(rng.normal(0, 2.0, size=maps.shape)), -5, 5)
    return np.clip(maps.astype(int) + block + noise, 0, 255).astype(np.uint8)
