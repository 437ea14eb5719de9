"""Sparse mask annotations (a DAVIS-style folder annotated every k frames, or objects introduced on
later frames) filled into a trajectory with every object on every frame.

Two ways of annotating are told apart from the files themselves:
- *complete*: each annotated frame shows every object there; an object missing from it is absent
  (occluded or out of view) on that frame. DAVIS's ground truth is such.
- *incremental*: after the first, each annotated frame only introduces objects not seen before (the
  way video object segmentation tools such as Cutie and XMem take prompts): an object is annotated
  once and is there before and after, not absent where another object's frame leaves it out.
A folder is incremental when every annotated frame after the first holds only new ids, else complete
(`annotation="auto"`); `annotation="complete"` or `"incremental"` says it instead.

Between two annotated frames where an object is present, `fill` says what it does:
- `shift` (default): the mask of the nearer annotated frame, moved and scaled with the box, which is
  linear between the two annotated boxes (position and size);
- `box`: boxes linear between the two (masks only on annotated frames and frame 0: for `box` and
  `sparse_box` maps; `mask` maps need a mask on every frame);
- `hold`: the mask of the last annotated frame until the next;
- `none`: masks on annotated frames only, as read (empty where an object is missing).
Before its first and after its last annotated frame, an object keeps its state there (its mask, or
absent); next to a frame where it is absent, it keeps the state of the frame before.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import TrajectoryError
from .spec import ObjectTrack, Trajectory, encode_mask, mask_box

FILLS = ("shift", "box", "hold", "none")
DEFAULT_FILL = "shift"
ANNOTATIONS = ("auto", "complete", "incremental")


def is_incremental(labels: list[np.ndarray]) -> bool:
    """Whether every label map after the first holds only ids that no earlier one holds."""
    seen: set[int] = set()
    for k, label in enumerate(labels):
        ids = {int(i) for i in np.unique(label) if i > 0}
        if k > 0 and ids & seen:
            return False
        seen |= ids
    return len(labels) > 1


def shift_mask(mask: np.ndarray, box_from, box_to) -> np.ndarray:
    """A bool (H, W) mask moved and scaled so that `box_from` lands on `box_to` (boxes [x0, y0, x1,
    y1) in pixel edges; nearest neighbour, pixel centres mapped to pixel centres; what leaves the
    frame is cut)."""
    (a0, b0, a1, b1), (c0, d0, c1, d1) = (np.asarray(box_from, float), np.asarray(box_to, float))
    sx, sy = (c1 - c0) / max(a1 - a0, 1e-9), (d1 - d0) / max(b1 - b0, 1e-9)
    # x' + 0.5 = sx (x + 0.5) + c0 - sx a0, for pixel indices x, x'
    m = np.array([[sx, 0, c0 - sx * a0 + 0.5 * (sx - 1)], [0, sy, d0 - sy * b0 + 0.5 * (sy - 1)]])
    h, w = mask.shape
    out = cv2.warpAffine(mask.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.astype(bool)


def _states(labels: list[np.ndarray], frames: list[int], oid: int, incremental: bool) -> dict[int, np.ndarray | None]:
    """An object's annotated states: frame -> bool mask where present, None where absent (complete
    annotations only; in incremental ones, a frame without the object says nothing about it)."""
    states: dict[int, np.ndarray | None] = {}
    for t, label in zip(frames, labels):
        m = label == oid
        if m.any():
            states[t] = m
        elif not incremental:
            states[t] = None
    return states


def fill_object(states: dict[int, np.ndarray | None], num_frames: int, fill: str,
                shape: tuple[int, int]) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """An object's annotated states -> (masks by frame, boxes by frame) on frames 0..num_frames-1."""
    keys = sorted(states)
    boxes_at = {t: mask_box(m) for t, m in states.items() if m is not None}
    empty = np.zeros(shape, bool)
    masks: dict[int, np.ndarray] = {}
    boxes: dict[int, np.ndarray] = {}
    for t in range(num_frames):
        i = int(np.searchsorted(keys, t, side="right"))  # keys[i - 1] <= t < keys[i]
        prev, nxt = (keys[i - 1] if i > 0 else None), (keys[i] if i < len(keys) else None)
        if prev == t or nxt is None or prev is None or states[prev] is None or states[nxt] is None:
            k = t if prev == t else (prev if prev is not None else nxt)  # the state held
            m = states[k]
            if m is None:
                masks[t] = empty
                continue
            if fill != "box" or t == k or t == 0:
                masks[t] = m
            boxes[t] = boxes_at[k]
            continue
        # present on both sides: between two annotated boxes
        w = (t - prev) / (nxt - prev)
        box = (1 - w) * boxes_at[prev] + w * boxes_at[nxt]
        near = prev if t - prev <= nxt - t else nxt
        if fill == "hold":
            masks[t], boxes[t] = states[prev], boxes_at[prev]
        elif fill == "box":
            boxes[t] = box
            if t == 0:
                masks[t] = states[near]
        else:  # shift
            m = shift_mask(states[near], boxes_at[near], box)
            masks[t] = m
            moved = mask_box(m)
            if moved is not None:
                boxes[t] = moved
    return masks, boxes


def fill_label_frames(labels: list[np.ndarray], frames: list[int], num_frames: int, fill: str = DEFAULT_FILL,
                      source: str = "", annotation: str = "auto") -> Trajectory:
    """Label maps (int (H, W), value = object id) on annotated `frames` -> a trajectory of `num_frames`
    frames, the frames between filled as `fill` says, the annotation read as `annotation` says (see
    the module's docstring)."""
    from .label_masks import from_label_masks

    if fill not in FILLS:
        raise TrajectoryError(f"{source or 'masks'}: unknown fill {fill!r}: expected one of {', '.join(FILLS)}")
    if annotation not in ANNOTATIONS:
        raise TrajectoryError(f"{source or 'masks'}: unknown annotation {annotation!r}: expected one of "
                              f"{', '.join(ANNOTATIONS)}")
    if fill == "none":
        return from_label_masks(np.stack(labels), frames=frames, num_frames=num_frames, source=source)
    incremental = is_incremental(labels) if annotation == "auto" else annotation == "incremental"
    ids = sorted({int(i) for label in labels for i in np.unique(label) if i > 0})
    traj = Trajectory(width=labels[0].shape[1], height=labels[0].shape[0], num_frames=num_frames, source=source)
    for oid in ids:
        masks, boxes = fill_object(_states(labels, frames, oid, incremental), num_frames, fill, labels[0].shape)
        obj = ObjectTrack(id=oid, boxes=boxes)
        obj.masks = {t: encode_mask(m) for t, m in masks.items()}
        traj.objects.append(obj)
    return traj
