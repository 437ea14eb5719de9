"""Motion for the app from elsewhere (no Gradio here): "take the motion from a video" (the objects named
in a reference video, tracked by SAM 2 and placed on the app's first frame) and "load point tracks".
Both give a dense trajectory the app then renders and generates with as it is, instead of the drawing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..perception import BOX_THRESHOLD, DEFAULT_GROUNDING, DEFAULT_SAM2, TEXT_THRESHOLD
from ..errors import TrajectoryError
from ..trajectory import MAX_SPARSE_KEYS, Trajectory, interpolate_boxes, masks_to_boxes, rescale


@dataclass
class MotionModels:
    """The models "take the motion from a video" uses, loaded on first use (as the curation pipeline
    loads them: local folders or hub ids)."""

    grounding: str = DEFAULT_GROUNDING
    sam2: str = DEFAULT_SAM2
    device: str = "auto"
    box_threshold: float = BOX_THRESHOLD
    text_threshold: float = TEXT_THRESHOLD
    _loaded: dict = field(default_factory=dict, repr=False)

    def grounder(self):
        if "grounder" not in self._loaded:
            from ..perception import load_grounder

            self._loaded["grounder"] = load_grounder(self.grounding, self.device, self.box_threshold,
                                                     self.text_threshold)
        return self._loaded["grounder"]

    def tracker(self):
        if "tracker" not in self._loaded:
            from ..perception import load_video_tracker

            self._loaded["tracker"] = load_video_tracker(self.sam2, self.device)
        return self._loaded["tracker"]


def motion_from_video(video, objects: str, image: np.ndarray, models: MotionModels,
                      fit_boxes: list | None = None, num_frames: int | None = None, max_frames: int = 81,
                      progress=None) -> Trajectory:
    """The motion of the objects named in `objects` ("horse. child.") in the reference `video` (its
    first `num_frames` frames; without it, up to `max_frames`), placed on the first frame `image`: each
    object's frame-0 box onto fit_boxes[k] (one per object), or, without them, onto the box found by
    its name in `image`."""
    from ..io import read_video
    from ..trajectory.from_video import fit_to_image, parse_phrases, trajectory_from_video

    if video is None:
        raise TrajectoryError("no reference video: upload one first")
    if not parse_phrases(objects):
        raise TrajectoryError("name the objects whose motion to take, e.g. \"horse. child.\"")
    frames = None if num_frames is not None else read_video(video, max_frames=max_frames)[0]
    traj = trajectory_from_video(video, objects=objects, num_frames=num_frames, frames=frames,
                                 grounder=models.grounder(), tracker=models.tracker(), progress=progress)
    if fit_boxes is not None and len(fit_boxes) != len(traj.objects):
        fit_boxes = None  # the drawing does not say where each object goes: find them by name
    return fit_to_image(traj, image, fit_boxes, None if fit_boxes else models.grounder(),
                        where=f"{Path(str(video)).name} onto the first frame")


def motion_from_tracks(path, image: np.ndarray) -> Trajectory:
    """Point tracks (JSON, .npy or .npz) as a trajectory on the first frame `image`: arrays are taken
    to be in its pixels; a JSON of another size is resized to cover it and centre-cropped."""
    from ..trajectory import trajectory_from_tracks

    h, w = image.shape[:2]
    traj = trajectory_from_tracks(path, (w, h))
    return traj if traj.size == (w, h) else rescale(traj, (w, h))


def motion_trajectory(motion: Trajectory, num_frames: int, kind: str, key_frames=None,
                      caption: str = "") -> Trajectory:
    """The first `num_frames` frames of a motion, ready for `kind`: sparse_box keeps the key frames
    (`key_frames`, or evenly spaced) and frame 0's mask."""
    from ..trajectory import sparsify

    if motion.num_frames < num_frames:
        raise TrajectoryError(f"the motion has {motion.num_frames} frames, fewer than the {num_frames} asked "
                              "for: lower Frames")
    out = motion.copy()
    out.num_frames = int(num_frames)
    out.caption = caption or motion.caption
    for o in out.objects:
        o.boxes = {t: b for t, b in o.boxes.items() if t < num_frames}
        o.masks = {t: m for t, m in o.masks.items() if t < num_frames}
    if kind == "mask" and any(len(o.masks) < num_frames for o in out.objects):
        raise TrajectoryError("this motion has no mask on every frame (point tracks without a frame-0 mask): "
                              "use kind box or sparse_box")
    if kind != "sparse_box":
        return out
    if key_frames:
        dense = interpolate_boxes(masks_to_boxes(out))
        keys = sorted({0, *(int(k) for k in key_frames if 0 < int(k) < num_frames)})[:MAX_SPARSE_KEYS + 1]
        for o in dense.objects:
            o.boxes = {t: b for t, b in o.boxes.items() if t in keys}
            o.masks = {t: m for t, m in o.masks.items() if t == 0}
        return dense
    return sparsify(out, num_keys=min(4, num_frames - 1), mode="even")


__all__ = ["MotionModels", "motion_from_tracks", "motion_from_video", "motion_trajectory"]
