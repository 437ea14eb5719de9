"""Perception: the models that look at videos, wrapped once for every part that needs them.

- open-vocabulary detection, Grounding DINO (`grounding.py`): `detect(frames, phrases)`;
- video segmentation and tracking, SAM 2 video (`sam2_video.py`): `track(frames, prompts)`, prompts
  being boxes, clicked points or masks on any frame;
- image segmentation from clicks, SAM 2 for images (`sam2_image.py`), for the drawing UI;
- the classic tracker, no weights (`classic.py`): colour model + mean shift from frame-0 masks;
- tiny random versions of the learnt models for tests (`tiny.py`).

Model loading and the device choice live in `loading.py`. MagicData curation, trajectories from a
reference video, the app and the benchmark's scorer call these; none of them wraps a model itself.
Point tracks from outside trackers (CoTracker and the like) are read by `magicmotion.trajectory.tracks`.
"""

from __future__ import annotations

import numpy as np

from .classic import ClassicTracker
from .grounding import (BOX_THRESHOLD, DEFAULT_GROUNDING, TEXT_THRESHOLD, Detection, GroundingDinoGrounder,
                        normalise_name)
from .loading import load_grounder, load_video_tracker, resolve_device
from .sam2_image import Sam2ImageSegmenter
from .sam2_video import DEFAULT_SAM2, Progress, Prompt, Sam2VideoTracker


def detect(frames: list[np.ndarray], phrases: list[list[str]], model=DEFAULT_GROUNDING,
           device: str = "auto") -> list[list[Detection]]:
    """Boxes of named objects: frames uint8 (H, W, 3) each, phrases the names to find in each frame.
    Returns, per frame, one Detection per name found, in the names' order. `model`: a loaded
    `GroundingDinoGrounder` or a folder / hub id."""
    grounder = model if callable(model) else load_grounder(str(model), device)
    return grounder(list(frames), [list(p) for p in phrases])


def track(frames: np.ndarray, prompts: list[Prompt], model=DEFAULT_SAM2, device: str = "auto",
          progress: Progress | None = None) -> np.ndarray:
    """Masks of prompted objects through a clip: frames uint8 (T, H, W, 3), one Prompt per object (a
    box, points or a mask on a frame). Returns bool (N, T, H, W). `model`: a loaded
    `Sam2VideoTracker` or a folder / hub id."""
    tracker = model if isinstance(model, Sam2VideoTracker) else load_video_tracker(str(model), device)
    return tracker.track(np.asarray(frames), list(prompts), progress=progress)


__all__ = ["BOX_THRESHOLD", "DEFAULT_GROUNDING", "DEFAULT_SAM2", "TEXT_THRESHOLD", "ClassicTracker", "Detection",
           "GroundingDinoGrounder", "Progress", "Prompt", "Sam2ImageSegmenter", "Sam2VideoTracker", "detect",
           "load_grounder", "load_video_tracker", "normalise_name", "resolve_device", "track"]
