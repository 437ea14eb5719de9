"""Trajectories from a reference video, and motion transfer onto a new first frame.

`trajectory_from_video` is the authors' Grounded-SAM2 recipe on a user's own video: the objects are
found on a chosen frame, by phrase (Grounding DINO) or by clicked points / boxes, and SAM 2 video
propagates their masks forwards to the last frame and, when the chosen frame is not the first,
backwards to frame 0. The result is a mask trajectory (a mask on every frame, a box wherever the mask
is not empty), the dense motion of the real objects: wings that flap, legs that walk.

`fit_motion` places such a motion on another first frame: each object's trajectory is moved and
scaled (x and y apart) so that its frame-0 box lands on a box in the new frame, given by the user or
found there by the object's phrase (`find_fit_boxes`); masks are warped with the same map.

The models are perception's (`magicmotion.perception`: `GroundingDinoGrounder`, `Sam2VideoTracker`;
local folders or hub ids, `--device auto` = CUDA when present); the tiny random models of
`magicmotion.perception.tiny` run the same code in tests.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from ..errors import TrajectoryError
from ..perception import (BOX_THRESHOLD, DEFAULT_GROUNDING, DEFAULT_SAM2, TEXT_THRESHOLD, Progress, Prompt,
                          load_grounder, load_video_tracker, normalise_name)
from .spec import ObjectTrack, Trajectory, decode_mask, encode_mask, mask_box, rle_box


# ------------------------------------------------------------------------------------- prompts


def parse_phrases(text: str | list[str] | None) -> list[str]:
    """"horse. child." (or a list) -> ["horse", "child"]: split on '.' and ';', lower case, no
    leading article, duplicates dropped."""
    parts = text if isinstance(text, (list, tuple)) else re.split(r"[.;]", text or "")
    out = []
    for p in parts:
        name = normalise_name(str(p))
        if name and name not in out:
            out.append(name)
    return out


def _numbers(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(np.isfinite(values)):
        raise TrajectoryError(f"{what} {text!r}: expected numbers separated by commas")
    return values


def parse_point_prompt(text: str) -> Prompt:
    """"x,y[,frame]" (one point) or "x,y;x,y[,frame]..." (several points on one object) -> Prompt."""
    points, frames = [], set()
    for part in (p for p in text.split(";") if p.strip()):
        v = _numbers(part, "--points")
        if len(v) not in (2, 3):
            raise TrajectoryError(f"--points {text!r}: each point is x,y or x,y,frame")
        points.append(v[:2])
        if len(v) == 3:
            frames.add(v[2])
    if not points:
        raise TrajectoryError(f"--points {text!r}: no point")
    if len(frames) > 1:
        raise TrajectoryError(f"--points {text!r}: the points of one object must be on one frame")
    frame = frames.pop() if frames else 0
    if frame != int(frame):
        raise TrajectoryError(f"--points {text!r}: frame {frame:g} is not a whole number")
    return Prompt(frame=int(frame), points=np.array(points, dtype=np.float64))


def parse_box_prompt(text: str) -> Prompt:
    """"x0,y0,x1,y1[,frame]" -> Prompt."""
    v = _numbers(text, "--boxes")
    if len(v) not in (4, 5) or (len(v) == 5 and v[4] != int(v[4])):
        raise TrajectoryError(f"--boxes {text!r}: expected x0,y0,x1,y1 or x0,y0,x1,y1,frame")
    return Prompt(frame=int(v[4]) if len(v) == 5 else 0, box=np.array(v[:4], dtype=np.float64))


def check_prompt(p: Prompt, size: tuple[int, int], num_frames: int, where: str) -> None:
    w, h = size
    if not 0 <= p.frame < num_frames:
        raise TrajectoryError(f"{where}: object {p.describe()} is on frame {p.frame}, outside the "
                              f"clip's frames 0..{num_frames - 1}")
    if p.box is not None:
        x0, y0, x1, y1 = p.box
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise TrajectoryError(f"{where}: box {[float(v) for v in p.box]} must have 0 <= x0 < x1 <= {w} "
                                  f"and 0 <= y0 < y1 <= {h}")
    if p.points is not None:
        for x, y in p.points:
            if not (0 <= x < w and 0 <= y < h):
                raise TrajectoryError(f"{where}: point ({x:g}, {y:g}) is outside the {w}x{h} frame")


# ------------------------------------------------------------------------------------- reading


def read_reference(path, start: int = 0, num_frames: int | None = None, frame_step: int = 1) -> np.ndarray:
    """The clip of a reference video (a file or a folder of frames): frames start, start + step, ...,
    `num_frames` of them (all to the end when None). uint8 (T, H, W, 3). A reference too short for the
    clip asked for is a TrajectoryError naming what it has."""
    from ..io import read_video

    if start < 0 or frame_step < 1 or (num_frames is not None and num_frames < 1):
        raise TrajectoryError(f"{path}: bad clip: start {start} (>= 0), frame step {frame_step} (>= 1), "
                              f"frames {num_frames} (>= 1)")
    need = None if num_frames is None else start + (num_frames - 1) * frame_step + 1
    frames, _ = read_video(path, max_frames=need)
    clip = frames[start::frame_step]
    if num_frames is not None and len(clip) < num_frames:
        raise TrajectoryError(
            f"{path}: the reference has {len(frames)} frames, shorter than the {need} that {num_frames} "
            f"frames from frame {start} every {frame_step} need")
    if len(clip) == 0:
        raise TrajectoryError(f"{path}: the reference has {len(frames)} frames, none from frame {start}")
    return clip if num_frames is None else clip[:num_frames]


# ------------------------------------------------------------------------------------ grounding


def ground_phrases(grounder, image: np.ndarray, phrases: list[str], where: str) -> list:
    """One Detection per phrase on `image`, in the phrases' order; a phrase with no box is a
    TrajectoryError naming it (and the thresholds)."""
    found = grounder([image], [phrases])[0]
    by_label = {d.label: d for d in found}
    missing = [p for p in phrases if p not in by_label]
    if missing:
        names = ", ".join(repr(p) for p in missing)
        raise TrajectoryError(
            f"{where}: no object found for {names} (Grounding DINO, box threshold "
            f"{getattr(grounder, 'box_threshold', '?')}, text threshold "
            f"{getattr(grounder, 'text_threshold', '?')}): lower the thresholds, reword it, or click it "
            "with --points / --boxes")
    return [by_label[p] for p in phrases]


# ------------------------------------------------------------------------------------- tracking


def load_models(grounding: str | None = DEFAULT_GROUNDING, sam2: str = DEFAULT_SAM2, device: str = "auto",
                box_threshold: float = BOX_THRESHOLD, text_threshold: float = TEXT_THRESHOLD):
    """(grounder or None, Sam2VideoTracker), loaded by perception."""
    grounder = None if grounding is None else load_grounder(grounding, device, box_threshold, text_threshold)
    return grounder, load_video_tracker(sam2, device)


def masks_trajectory(masks: np.ndarray, prompts: list[Prompt], caption: str = "", source: str = "") -> Trajectory:
    """bool (N, T, H, W) -> Trajectory with objects 1..N named by their phrases: a mask on every frame,
    a box wherever it is not empty. An object with no mask on its own prompt frame is an error."""
    _, t, h, w = masks.shape
    traj = Trajectory(width=w, height=h, num_frames=t, caption=caption, source=source)
    for k, p in enumerate(prompts):
        if not masks[k, p.frame].any():
            raise TrajectoryError(f"{source or 'video'}: SAM 2 found no mask for object {k + 1} "
                                  f"({p.describe()}) on frame {p.frame}, where it was picked")
        traj.objects.append(ObjectTrack.from_masks(k + 1, p.label, masks[k]))
    return traj


def prepare(video, objects=None, points=None, boxes=None, frame: int = 0, start: int = 0,
            num_frames: int | None = None, frame_step: int = 1, frames: np.ndarray | None = None):
    """Check the objects asked for and read the clip, before any model loads: (frames, phrases,
    prompts of the clicked objects)."""
    where = str(video)
    phrases = parse_phrases(objects)
    prompts = [parse_point_prompt(p) for p in points or []] + [parse_box_prompt(b) for b in boxes or []]
    if not phrases and not prompts:
        raise TrajectoryError(f"{where}: no objects: name them (--objects \"horse. child.\") or click "
                              "them (--points x,y / --boxes x0,y0,x1,y1)")
    if frames is None:
        frames = read_reference(video, start, num_frames, frame_step)
    t, h, w = frames.shape[:3]
    if phrases and not 0 <= frame < t:
        raise TrajectoryError(f"{where}: frame {frame} to find the objects on is outside the clip's "
                              f"frames 0..{t - 1}")
    for p in prompts:
        check_prompt(p, (w, h), t, where)
    return frames, phrases, prompts


def trajectory_from_video(video, objects: str | list[str] | None = None, points: list[str] | None = None,
                          boxes: list[str] | None = None, frame: int = 0, start: int = 0,
                          num_frames: int | None = None, frame_step: int = 1, caption: str = "",
                          grounding: str = DEFAULT_GROUNDING, sam2: str = DEFAULT_SAM2, device: str = "auto",
                          box_threshold: float = BOX_THRESHOLD, text_threshold: float = TEXT_THRESHOLD,
                          grounder=None, tracker=None, frames: np.ndarray | None = None,
                          progress: Progress | None = None) -> Trajectory:
    """A mask trajectory of objects moving in a reference video.

    Args:
        video: the reference (a video file or a folder of frames; also names it in messages).
        objects: phrases ("horse. child." or a list) found by Grounding DINO on clip frame `frame`.
        points: "x,y[,frame]" or "x,y;x,y[,frame]" per object (clicked points, SAM 2 point prompts).
        boxes: "x0,y0,x1,y1[,frame]" per object. Objects come in this order: phrases, points, boxes.
            Coordinates are pixels of the reference; a prompt's frame defaults to 0.
        frame: the clip frame the phrases are found on.
        start, num_frames, frame_step: the clip (`read_reference`); num_frames None = to the end.
        grounding, sam2, device, box_threshold, text_threshold: the models (see the curation pipeline).
        grounder, tracker: already loaded models (callable grounder, `Sam2VideoTracker`), instead of names.
        frames: the clip itself (uint8 (T, H, W, 3)) instead of reading `video`.
        progress: called after each tracked frame.
    Returns:
        Trajectory at the reference's size: objects 1..N, labels = phrases, a mask on every frame.
    """
    where = str(video)
    frames, phrases, prompts = prepare(video, objects, points, boxes, frame, start, num_frames, frame_step,
                                       frames)
    if phrases and grounder is None:
        grounder = load_grounder(grounding, device, box_threshold, text_threshold)
    if tracker is None:
        tracker = load_models(None, sam2, device)[1]
    found = []
    if phrases:
        for d in ground_phrases(grounder, frames[frame], phrases, f"{where} frame {frame}"):
            found.append(Prompt(label=d.label, frame=frame, box=np.asarray(d.box, dtype=np.float64),
                                score=d.score))
    prompts = found + prompts
    masks = tracker.track(frames, prompts, progress=progress)
    return masks_trajectory(masks, prompts, caption=caption, source=where)


# ------------------------------------------------------------------------------- motion transfer


def parse_box(text: str, what: str = "--fit-box") -> np.ndarray:
    v = _numbers(text, what)
    if len(v) != 4:
        raise TrajectoryError(f"{what} {text!r}: expected x0,y0,x1,y1")
    return np.array(v, dtype=np.float64)


def find_fit_boxes(grounder, image: np.ndarray, traj: Trajectory, where: str = "first frame") -> list[np.ndarray]:
    """The box of each object of `traj` in a new first frame, found by its label (Grounding DINO)."""
    unnamed = [o.id for o in traj.objects if not o.label]
    if unnamed:
        raise TrajectoryError(f"{where}: object {unnamed[0]} has no name to find it by: give its box "
                              "in the new first frame (--fit-box x0,y0,x1,y1, one per object)")
    return [d.box for d in ground_phrases(grounder, image, [o.label for o in traj.objects], where)]


def fit_motion(traj: Trajectory, size: tuple[int, int], boxes, where: str = "first frame") -> Trajectory:
    """The motion of `traj` placed on a new first frame of `size` = (W, H): object k's trajectory is
    scaled and moved so that its frame-0 box lands on boxes[k] (x and y scaled apart); its masks are
    warped with the same map (nearest neighbour) and its boxes mapped and clipped to the new frame
    (a box pushed out of it entirely is dropped; the warped mask is then empty: the object is absent).

    Every object needs a box or non-empty mask on frame 0. Returns a new Trajectory of size `size`."""
    w, h = int(size[0]), int(size[1])
    boxes = [np.asarray(b, dtype=np.float64).reshape(4) for b in boxes]
    if len(boxes) != len(traj.objects):
        raise TrajectoryError(f"{where}: {len(traj.objects)} objects to place but {len(boxes)} boxes given "
                              "(one per object, in object order)")
    out = Trajectory(width=w, height=h, num_frames=traj.num_frames, caption=traj.caption, source=traj.source)
    for o, target in zip(traj.objects, boxes):
        x0, y0, x1, y1 = target
        if not (np.all(np.isfinite(target)) and 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise TrajectoryError(f"{where}: box {[float(v) for v in target]} for object {o.id} is outside "
                                  f"the {w}x{h} image (needs 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h})")
        src = rle_box(o.masks[0]) if 0 in o.masks else None
        src = o.boxes.get(0) if src is None else src
        if src is None:
            raise TrajectoryError(f"{traj.where()}: object {o.id}{f' ({o.label})' if o.label else ''} is not "
                                  "on frame 0 of the reference, so it cannot be placed on the new first frame")
        sx, sy = (x1 - x0) / (src[2] - src[0]), (y1 - y0) / (src[3] - src[1])
        warp = np.array([[sx, 0.0, x0 - src[0] * sx], [0.0, sy, y0 - src[1] * sy]])
        moved = ObjectTrack(id=o.id, label=o.label)
        for t, b in o.boxes.items():
            nb = np.array([b[0] * sx + warp[0, 2], b[1] * sy + warp[1, 2],
                           b[2] * sx + warp[0, 2], b[3] * sy + warp[1, 2]])
            nb = np.clip(nb, 0, [w, h, w, h])
            if nb[2] - nb[0] > 1e-6 and nb[3] - nb[1] > 1e-6:
                moved.boxes[t] = nb
        for t, rle in o.masks.items():
            m = cv2.warpAffine(decode_mask(rle).astype(np.uint8), warp, (w, h), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
            moved.masks[t] = encode_mask(m)
            box = mask_box(m)
            if box is None:
                moved.boxes.pop(t, None)
            else:
                moved.boxes[t] = box
        out.objects.append(moved)
    return out.validate()


def fit_to_image(traj: Trajectory, image: np.ndarray, fit_boxes=None, grounder=None,
                 where: str = "first frame") -> Trajectory:
    """`fit_motion` onto `image` (uint8 (H, W, 3)): to `fit_boxes` (one per object; "x0,y0,x1,y1"
    strings or arrays), or, without them, to the boxes `grounder` finds by the objects' labels."""
    h, w = image.shape[:2]
    if fit_boxes:
        boxes = [parse_box(b) if isinstance(b, str) else b for b in fit_boxes]
    elif grounder is not None:
        boxes = find_fit_boxes(grounder, image, traj, where)
    else:
        raise TrajectoryError(f"{where}: give a box per object (--fit-box) or a grounding model to find them")
    return fit_motion(traj, (w, h), boxes, where)


def describe(traj: Trajectory) -> str:
    """'2 objects (1 horse, 2 child), 49 frames, 720x480'."""
    names = ", ".join(f"{o.id}" + (f" {o.label}" if o.label else "") for o in traj.objects)
    return (f"{len(traj.objects)} object{'s' if len(traj.objects) != 1 else ''} ({names}), "
            f"{traj.num_frames} frames, {traj.width}x{traj.height}")


__all__ = ["Prompt", "describe", "find_fit_boxes", "fit_motion", "fit_to_image",
           "ground_phrases", "load_models", "masks_trajectory", "parse_box", "prepare", "parse_box_prompt",
           "parse_phrases", "parse_point_prompt", "read_reference", "trajectory_from_video"]
