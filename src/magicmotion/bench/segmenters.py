"""Segmenters for the trajectory metrics: given a video and each controlled object's frame-0 mask,
find the objects on every frame.

    seg.track(frames uint8 (T, H, W, 3), first_masks {id: bool (H, W)}) -> {id: bool (T, H, W)}

- `Sam2Segmenter`: SAM 2 video (transformers' `Sam2VideoModel`) prompted with the frame-0 masks, the
  segmenter the paper's curation uses. Weights from a local folder or a hub id.
- `ClassicSegmenter`: no weights: the classic tracker (colour model + mean shift,
  `magicmotion.perception.classic`), meant for the synthetic world and tests.

Both models are perception's (`magicmotion.perception`); this module only adapts them to the metrics.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import BenchError, ModelError
from ..perception.classic import ClassicTracker

SEGMENTERS = ("classic", "sam2")
DEFAULT_SAM2 = "facebook/sam2.1-hiera-tiny"


class Segmenter:
    """Interface: `track(frames, first_masks) -> {id: bool (T, H, W)}`; frame 0 of the result is the
    segmenter's reading of the prompt (for SAM 2, its own mask of it)."""

    name = "segmenter"

    def track(self, frames: np.ndarray, first_masks: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        raise NotImplementedError


def check_inputs(frames: np.ndarray, first_masks: dict) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise BenchError(f"segmenter: frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    h, w = frames.shape[1:3]
    masks = {}
    for oid, m in first_masks.items():
        m = np.asarray(m, dtype=bool)
        if m.shape != (h, w):
            raise BenchError(f"segmenter: object {oid}: frame-0 mask is {m.shape[::-1]} (W, H), the "
                             f"video {w}x{h}")
        masks[int(oid)] = m
    return frames, masks


def make_segmenter(name: str, sam2: str | os.PathLike | None = None, device: str = "cpu") -> Segmenter:
    """"classic" or "sam2" (with `sam2` = a folder or hub id, default facebook/sam2.1-hiera-tiny)."""
    if name == "classic":
        return ClassicSegmenter()
    if name == "sam2":
        return Sam2Segmenter(sam2 or DEFAULT_SAM2, device=device)
    raise BenchError(f"unknown segmenter {name!r} (one of {', '.join(SEGMENTERS)})")


class ClassicSegmenter(ClassicTracker, Segmenter):
    """The classic tracker (`magicmotion.perception.classic.ClassicTracker`) as a segmenter."""

    def track(self, frames, first_masks):
        frames, masks = check_inputs(frames, first_masks)
        return super().track(frames, masks)


class Sam2Segmenter(Segmenter):
    """SAM 2 video (`magicmotion.perception.Sam2VideoTracker`) prompted with the frame-0 masks and
    propagated forward through the video.

    model: a folder saved with `save_pretrained` (a download of e.g. facebook/sam2.1-hiera-tiny), a hub
    id (fetched by transformers at your site), or a `Sam2VideoModel`."""

    name = "sam2"

    def __init__(self, model=DEFAULT_SAM2, device: str = "cpu"):
        from transformers import Sam2VideoModel

        from ..perception import Sam2VideoTracker

        if isinstance(model, Sam2VideoModel):
            self.tracker = Sam2VideoTracker(model.to(device))
        else:
            try:
                self.tracker = Sam2VideoTracker.from_pretrained(str(model), device=device)
            except ModelError as e:  # a missing folder, a hub id out of reach, or weights it cannot read
                raise BenchError(f"cannot load SAM 2 from {e}. Pass --sam2 a local folder with a "
                                 f"Sam2VideoModel (e.g. a download of {DEFAULT_SAM2}) or a hub id reachable "
                                 "from here, or use --segmenter classic") from None
        self.model = self.tracker.model
        self.image_size = self.tracker.image_size

    def track(self, frames, first_masks):
        from ..perception import Prompt

        frames, masks = check_inputs(frames, first_masks)
        T, H, W = frames.shape[:3]
        out = {oid: np.zeros((T, H, W), dtype=bool) for oid in masks}
        prompted = [oid for oid, m in masks.items() if m.any()]
        if prompted:
            found = self.tracker.track(frames, [Prompt(mask=masks[oid]) for oid in prompted])
            for k, oid in enumerate(prompted):
                out[oid] = found[k]
        return out
