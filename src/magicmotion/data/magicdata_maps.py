"""Decoding one MagicData clip's mask and box PNGs (drawn as the release draws them: supervision's
MaskAnnotator over black, cv2.rectangle outlines; see docs/dataset-format.md) into a trajectory: each
object's visible mask on every frame, its box fitted to its visible outline and checked against the
mask, and the frames where it is entirely covered."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import MagicMotionError

if TYPE_CHECKING:
    from ..trajectory import Trajectory

PALETTE = "release"
FOREIGN_MIN_PIXELS = 8   # this many pixels of a colour that is no palette colour (nor a blend): bad
FOREIGN_TOL = 30         # RGB distance from every palette colour and blend beyond which it is foreign
BOX_TOLERANCE = 1        # pixels a mask may reach past its box (resampled maps)
OUTLINE_MIN_IOU = 0.6    # = outlines.OUTLINE_IOU: a box grown to its mask must still explain the outline
BOX_GROW_LOSS = 0.1      # ... and no more than this much worse than the fitted box (a side is 1/4)
REASONS = ("missing_video", "unreadable_video", "missing_masks", "missing_boxes", "frame_count",
           "size", "unknown_colour", "box_mask", "bad_maps", "duplicate_id")


class ClipSkipped(MagicMotionError):
    """A clip that fails a check: `reason` is one of REASONS, the message says what and where."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _segments(colours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """End points (S, 3) of the blends a map can hold: black to each colour, colour to colour."""
    pts = np.concatenate([np.zeros((1, 3)), colours.astype(np.float64)])
    i, j = np.triu_indices(len(pts), k=1)
    return pts[i], pts[j]


def foreign_colours(maps: np.ndarray, colours: np.ndarray, where: str) -> None:
    """Raise ClipSkipped("unknown_colour") when some frame holds at least FOREIGN_MIN_PIXELS pixels
    whose colour is no palette colour and no blend of two (or of one and black)."""
    from ..trajectory.decode import DARK, _nearest

    a, b = _segments(colours)
    ab = b - a
    norm = np.maximum((ab * ab).sum(1), 1e-9)
    for t, frame in enumerate(maps):
        # = decode._bright, 20x faster than frame.max(axis=2) at 720x480
        bright = np.maximum(np.maximum(frame[..., 0], frame[..., 1]), frame[..., 2]) >= DARK
        if bright.sum() < FOREIGN_MIN_PIXELS:
            continue
        pixels = frame[bright]
        _, d2 = _nearest(pixels, colours)
        far = pixels[d2 > FOREIGN_TOL ** 2]
        if len(far) < FOREIGN_MIN_PIXELS:
            continue
        values, counts = np.unique(far, axis=0, return_counts=True)
        p = values.astype(np.float64)
        u = np.clip(((p[:, None] - a[None]) * ab[None]).sum(-1) / norm[None], 0, 1)
        dist = np.linalg.norm(p[:, None] - (a[None] + u[..., None] * ab[None]), axis=-1).min(1)
        foreign = dist > FOREIGN_TOL
        if counts[foreign].sum() >= FOREIGN_MIN_PIXELS:
            top = values[foreign][counts[foreign].argmax()]
            raise ClipSkipped(
                "unknown_colour",
                f"{where}: frame {t}: {int(counts[foreign].sum())} pixels of colours that are not in "
                f"the {PALETTE} palette (mostly {tuple(int(v) for v in top)})")


def decode_clip_maps(masks: np.ndarray, boxes: np.ndarray, where: str = "maps",
                     thickness: int | None = None) -> tuple["Trajectory", dict]:
    """Mask maps and box maps of one clip (uint8 (T, H, W, 3) each, the release's palette) -> a
    Trajectory with a mask of every object on every frame (the pixels where it shows) and its boxes,
    and what was inferred: {"boxes_from_masks": n, "occluded": {id: [frames]}} (frames where the
    object is there but entirely covered on the mask maps). ClipSkipped when the maps disagree or
    hold foreign colours."""
    from ..trajectory import ObjectTrack, Trajectory, box_thickness, encode_mask, mask_box
    from ..trajectory.decode import _distinct, _is_lossless, _label_frame, _present_colours, outline_pixels
    from ..trajectory.outlines import fit_box, outline_state
    from ..errors import TrajectoryError

    T, H, W = masks.shape[:3]
    colours, ids = _distinct(PALETTE)
    foreign_colours(masks, colours, f"{where} masks")
    foreign_colours(boxes, colours, f"{where} boxes")
    try:
        present = _present_colours(masks, colours, erode=True, where=f"{where} masks")
        in_boxes = _present_colours(boxes, colours, erode=False, where=f"{where} boxes")
    except TrajectoryError as e:
        raise ClipSkipped("unknown_colour", str(e)) from None
    # an object the box maps show and the mask maps never do is covered on every mask frame (smaller
    # masks are painted over larger ones): kept, with its boxes, if it shows as outlines
    covered_only = sorted(set(in_boxes.tolist()) - set(present.tolist()))
    if len(present) == 0 and not covered_only:
        raise ClipSkipped("bad_maps", f"{where}: no object in the mask maps (every frame black)")
    present = np.array(sorted(set(present.tolist()) | set(covered_only), key=lambda c: ids[c]), np.int64)
    object_ids = ids[present]
    own = colours[present]
    mask_labels = np.stack([_label_frame(f, own) for f in masks])
    box_labels = np.stack([_label_frame(f, own) for f in boxes])
    thickness = thickness or box_thickness(W, H)
    lossy_boxes = not _is_lossless(boxes, colours)

    traj = Trajectory(width=W, height=H, num_frames=T, source=where)
    inferred = 0
    occluded: dict[int, list[int]] = {}
    for k, oid in enumerate(object_ids):
        obj = ObjectTrack(id=int(oid))
        outlines = 0
        for t in range(T):
            m = mask_labels[t] == k + 1
            obj.masks[t] = encode_mask(m)
            tight = mask_box(m)
            b = box_labels[t] == k + 1
            if lossy_boxes:  # without the slivers other objects' blurred edges leave in this colour
                b = outline_pixels(b, thickness)
            box = None
            if b.any():
                cover = box_labels[t] > k + 1  # outlines drawn later (higher ids) lie on top
                fitted = fit_box(b, thickness, PALETTE, cover=cover)
                state = outline_state(b, fitted, thickness, PALETTE, cover)
                outlines += state != "filled"
                box = mask_box(b) if state == "filled" else fitted
                if tight is not None:
                    box = _box_with_mask(box, tight, b, cover, thickness, state, f"{where}: object "
                                         f"{int(oid)} frame {t}")
            elif tight is not None:
                box, inferred = tight, inferred + 1
            if box is not None:
                obj.boxes[t] = np.asarray(box, np.float64)
        if int(present[k]) in covered_only and not outlines:
            raise ClipSkipped("bad_maps", f"{where}: the box maps show object {int(oid)} as filled "
                                          "shapes only, and the mask maps never show it")
        hidden = _occluded_frames(obj, mask_labels, k + 1, T)
        if hidden:
            occluded[int(oid)] = hidden
        traj.objects.append(obj)
    return traj.validate(), {"boxes_from_masks": inferred, "occluded": occluded}


def _box_with_mask(box: np.ndarray, tight: np.ndarray, outline: np.ndarray, cover: np.ndarray,
                   thickness: int, state: str, where: str) -> np.ndarray:
    """The box from the box maps, checked against the mask's extent: a drawn box is the mask's
    bounding rectangle, so it contains every visible mask pixel. Where the outline's side is hidden
    (under a later outline, past the frame's edge) the fit can fall short of the mask: grown to the
    mask when that grown box's outline explains the visible outline pixels as well (OUTLINE_IOU, and
    no more than BOX_GROW_LOSS worse); ClipSkipped("box_mask") when the visible outline contradicts
    the mask."""
    from ..trajectory.outlines import outline_iou

    grown = np.concatenate([np.minimum(box[:2], tight[:2]), np.maximum(box[2:], tight[2:])])
    if (tight[:2] >= box[:2] - BOX_TOLERANCE).all() and (tight[2:] <= box[2:] + BOX_TOLERANCE).all():
        return grown
    if state != "filled":
        before = outline_iou(outline, box, thickness, PALETTE, cover)
        after = outline_iou(outline, grown, thickness, PALETTE, cover)
        if after >= OUTLINE_MIN_IOU and after >= before - BOX_GROW_LOSS:
            return grown
    raise ClipSkipped("box_mask", f"{where}: the mask spans {tight.astype(int).tolist()}, outside its "
                                  f"box {box.astype(int).tolist()} from the box maps")


def _occluded_frames(obj, labels: np.ndarray, label: int, T: int) -> list[int]:
    """Frames where the object is there but no pixel of it shows on the mask maps: its box shows on
    the box maps, or (no box either) it shows before and after and the box between (interpolated)
    lies inside the frame under other objects' masks."""
    from ..trajectory.render import box_pixels

    shown = [t for t in range(T) if obj.mask_area(t) > 0]
    out = []
    H, W = labels.shape[1:3]
    for t in range(T):
        if obj.mask_area(t) > 0:
            continue
        if t in obj.boxes:
            out.append(t)
            continue
        before = [s for s in shown if s < t and s in obj.boxes]
        after = [s for s in shown if s > t and s in obj.boxes]
        if not before or not after:
            continue
        a, b = before[-1], after[0]
        box = obj.boxes[a] + (obj.boxes[b] - obj.boxes[a]) * (t - a) / (b - a)
        x0, y0, x1, y1 = box_pixels(box, W, H)
        area = max(1.0, float((box[2] - box[0]) * (box[3] - box[1])))
        region = labels[t, y0:y1, x0:x1]
        if region.size >= 0.5 * area and ((region > 0) & (region != label)).mean() >= 0.5:
            out.append(t)
    return out
