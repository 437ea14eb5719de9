"""The drawing app: make a trajectory by clicking on the first frame, preview it, generate, in the
browser. `drawing` holds the logic (no Gradio); `ui.build_app` the Gradio page; `magicmotion app`
starts it. Names are imported on first use, so `magicmotion --help` stays fast."""

from ..lazy import lazy_exports

_NAMES = {
    "build_app": "ui",
    "DrawnObject": "drawing", "Sam2Segmenter": "drawing", "box_from_clicks": "drawing",
    "build_trajectory": "drawing", "mask_from_box": "drawing", "objects_from_spec": "drawing",
    "path_track": "drawing", "spec_dict": "drawing",
}

__all__ = sorted(_NAMES)

__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
