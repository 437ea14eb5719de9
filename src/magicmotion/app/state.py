"""The app's settings, examples, models and drawing state (no Gradio layout here): what the handlers
(callbacks.py) and the page (ui.py) share."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import numpy as np

from ..errors import MagicMotionError, MediaError, TrajectoryError
from ..pipelines.loading import DEFAULT_GUIDANCE, TINY_GUIDANCE
from ..trajectory import resize_crop
from . import drawing as dr
from .canvas import canvas_zoom, scale_text

log = logging.getLogger(__name__)

MODES = ("Box", "Points (SAM 2)", "Path")
POINT_LABELS = ("On the object", "Background")
PREVIEW_SIDE = 512  # the preview GIF's and the shown result's longer side (small frames enlarged to about it)
NO_SAM2 = "Points (SAM 2) is off: start the app with --sam2 FOLDER (a transformers Sam2Model) to click on objects"
MAX_UPLOAD = "25mb"  # the server refuses larger uploads

# Sampling settings shown in the page (keys are those of `generate`'s settings). Width and height 0:
# the shipped tiny model makes about TINY_AREA pixels in the frame's shape (it was trained at 64x64);
# another model its own default size for the frame.
DEFAULT_SETTINGS = {
    "num_frames": 17, "num_inference_steps": 25, "seed": 0, "guidance_scale": TINY_GUIDANCE,
    "controlnet_conditioning_scale": 1.0, "trajectory_guidance_scale": 1.0, "width": 0, "height": 0, "fps": 8,
}
REAL_MODEL_SETTINGS = {"num_frames": 49, "num_inference_steps": 50, "guidance_scale": DEFAULT_GUIDANCE,
                       "fps": 16}
TINY_AREA = 64 * 64
# Settings a spec written by the app brings back, in the order of the page's fields after the prompt.
SPEC_SETTINGS = (("seed", int), ("num_inference_steps", int), ("guidance_scale", float),
                 ("controlnet_conditioning_scale", float), ("trajectory_guidance_scale", float), ("width", int),
                 ("height", int), ("fps", float))

# A generate function takes (image uint8 (H, W, 3), prompt, trajectory, kind, **settings) and
# returns (frames uint8 (T, h, w, 3), maps uint8 (T, h, w, 3)).
GenerateFn = Callable[..., tuple[np.ndarray, np.ndarray]]


# ------------------------------------------------------------------------------------------ helpers


def repo_examples_dirs() -> list[Path]:
    """Folders searched for bundled examples: ./examples and the source checkout's examples/."""
    here = Path(__file__).resolve()
    dirs = [Path.cwd() / "examples", here.parents[3] / "examples"]
    out = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def find_examples(dirs: list[Path] | None = None) -> dict[str, tuple[Path, Path | None]]:
    """{name: (image, spec or None)} for the example first frames under the example folders: images
    (png/jpg) named first_frame.*, or with a same-named .json spec beside them. The spec is that
    .json, or trajectory.json in the same folder. A prompt.txt beside the image gives the prompt."""
    found: dict[str, tuple[Path, Path | None]] = {}
    for root in dirs if dirs is not None else repo_examples_dirs():
        for image in sorted(root.rglob("*")):
            if image.suffix.lower() not in (".png", ".jpg", ".jpeg") or not image.is_file():
                continue
            own = image.with_suffix(".json")
            if image.stem != "first_frame" and not own.is_file():
                continue  # masks and other pictures
            spec = next((p for p in (own, image.parent / "trajectory.json") if p.is_file()), None)
            found.setdefault(str(image.relative_to(root)), (image, spec))
    return found


def shown_size(frames: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames and maps (T, H, W, 3) brought to about PREVIEW_SIDE on the longer side: small ones
    enlarged a whole number of times (nearest: each pixel a block), large ones reduced."""
    h, w = frames.shape[1:3]
    if max(h, w) <= PREVIEW_SIDE:
        k = max(1, PREVIEW_SIDE // max(h, w))
        return (frames.repeat(k, axis=1).repeat(k, axis=2), maps.repeat(k, axis=1).repeat(k, axis=2))
    scale = PREVIEW_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return resize_crop(frames, size), resize_crop(maps, size, nearest=True)


def fit_area(size: tuple[int, int], area: int, multiple: int = 8) -> tuple[int, int]:
    """An output (W, H) within `area` pixels in the shape of `size`, at multiples of `multiple`: the
    same size `magicmotion generate` picks (`magicmotion.pipelines.settings.default_size`)."""
    from ..pipelines.settings import ModelSettings, default_size

    return default_size(ModelSettings({"area": int(area)}), multiple, size)


def pipeline_generate_fn(base=None, controlnet=None, load_options: dict | None = None) -> GenerateFn:
    """Generation through `magicmotion.pipelines`, the pipeline loaded on first use and kept. The
    shipped tiny model (`base` None) has a ControlNet per kind: switching kinds loads that one; a
    model of your own serves every kind. load_options: more `load_pipeline` arguments (offload, cache, ...),
    and `lora_scale` (the calls' `attention_kwargs`)."""
    cache: dict[str, Any] = {}
    load_options = dict(load_options or {})
    lora_scale = load_options.pop("lora_scale", 1.0)
    call = {"attention_kwargs": {"scale": lora_scale}} if load_options.get("lora") else {}

    def generate_fn(image, prompt, trajectory, kind, **settings):
        from ..pipelines.generate import generate
        from ..pipelines.loading import load_pipeline

        key = kind if base is None else "any"
        if key not in cache:
            cache.clear()  # one model in memory at a time
            cache[key] = load_pipeline(base=base, controlnet=controlnet, kind=kind, **load_options)
        return generate(cache[key], image, prompt, trajectory, kind, **settings, **call)

    return generate_fn


def model_defaults(base=None, controlnet=None) -> dict:
    """The settings fields a model recommends (its magicmotion.json, `magicmotion.pipelines.settings`):
    frames, steps, guidance and fps, and the trajectory palette its previews are drawn in;
    REAL_MODEL_SETTINGS for a base whose configs cannot be read now."""
    from ..errors import MagicMotionError
    from ..pipelines.loading import model_settings

    try:
        _, s, _ = model_settings(base, controlnet, "box")
    except MagicMotionError:
        return REAL_MODEL_SETTINGS if base is not None else {}
    return {"num_frames": s["num_frames"], "num_inference_steps": s["num_inference_steps"],
            "guidance_scale": s["guidance_scale"], "fps": s["fps"], "trajectory_palette": s["trajectory_palette"]}


def as_segmenter(sam2) -> dr.Sam2Segmenter | None:
    if sam2 is None or isinstance(sam2, dr.Sam2Segmenter):
        return sam2
    return dr.Sam2Segmenter.from_pretrained(str(sam2))


def without_upload_folder(message: str) -> str:
    """An uploaded file named by its name alone: the server's upload folder (`/tmp/gradio/<hash>/`)
    is no business of the page."""
    import re

    from gradio.utils import get_upload_folder

    return re.sub(re.escape(get_upload_folder().rstrip("/")) + r"/[^/\s'\"]+/", "", message)


def shows_errors(fn):
    """Turn the errors of an event handler into a message in the page: the user's (MagicMotionError)
    as they are, anything else as one line (the traceback goes to the server log only)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except MagicMotionError as e:
            raise gr.Error(without_upload_folder(str(e)), print_exception=False) from None
        except Exception as e:  # noqa: BLE001 - a bug must not show a stack trace in the page
            log.exception("app: %s failed", fn.__name__)
            raise gr.Error(f"internal error ({type(e).__name__}: {e}); see the server log",
                           print_exception=False) from None

    return wrapper


def first_frame_path(self, payload) -> str | None:
    """The first-frame gr.Image's preprocess: the uploaded file's path, not opened. gr.Image's own
    would open it first, so a 20000x20000 PNG or a file that is not an image gets Gradio's generic
    error; `dr.read_first_frame` reads the size from the header, refuses what is too large, and
    decodes only then. (Set on the instance: a gr.Image subclass would make Gradio write a .pyi
    stub beside this module.)"""
    if payload is None:
        return None
    if payload.url and payload.url.startswith("data:"):  # sent inline rather than uploaded
        from gradio.processing_utils import save_base64_to_cache

        return save_base64_to_cache(payload.url, self.GRADIO_CACHE)
    if payload.path is None:
        raise gr.Error("no first frame was received", print_exception=False)
    return str(payload.path)


# --------------------------------------------------------------------------------------- the state


def new_state() -> dict:
    """What one browser session holds: the first frame, the objects, the selected one."""
    return {"image": None, "objects": [], "current": None, "next_id": 1}


def current_object(state: dict) -> dr.DrawnObject:
    if state["image"] is None:
        raise MediaError("no first frame: upload an image or pick an example first")
    for o in state["objects"]:
        if o.id == state["current"]:
            return o
    raise TrajectoryError("no object selected: press 'Add object' first")


def object_choices(state: dict) -> list[str]:
    return [f"{o.id}: {o.label}" if o.label else f"{o.id}" for o in state["objects"]]


def choice_id(choice) -> int | None:
    if choice in (None, ""):
        return None
    return int(str(choice).split(":")[0])


def add_object(state: dict, label: str = "") -> dr.DrawnObject:
    o = dr.DrawnObject(id=state["next_id"], label=label.strip())
    state["next_id"] += 1
    state["objects"].append(o)
    state["current"] = o.id
    return o


def zoom(state: dict) -> int:
    h, w = state["image"].shape[:2]
    return canvas_zoom((w, h))


def describe(state: dict) -> str:
    """A short Markdown summary of the drawing, shown under the canvas."""
    if state["image"] is None:
        return "No first frame yet: upload an image or pick an example."
    h, w = state["image"].shape[:2]
    lines = [f"First frame {w}x{h}."]
    if not state["objects"]:
        lines.append("No objects: press **Add object**.")
    for o in state["objects"]:
        mark = "**>**" if o.id == state["current"] else "-"
        mask = "no mask" if o.mask is None else f"mask {int(o.mask.sum())} px"
        path = ", ".join(
            f"{i}: ({x:.0f}, {y:.0f})" + (f" {scale_text(o.scales[i])}" if i in o.scales else "")
            for i, (x, y) in enumerate(o.path, start=1)
        ) or "none (it stays still)"
        pending = " - waiting for the second box corner" if o.corner is not None else ""
        lines.append(f"{mark} {o.name()}: {mask}; path {path}{pending}")
    return "\n\n".join(lines)
