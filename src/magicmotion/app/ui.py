"""The drawing app (Gradio): draw objects and paths on a first frame, preview the trajectory, generate.

`build_app(...)` returns the `gr.Blocks`; `magicmotion app` launches it (see `cli.py`). The page:

1. First frame: upload an image or pick a bundled example (an image under `examples/`, with its
   trajectory spec when one lies beside it).
2. Objects: add, remove, name; the selected one is what clicks on the drawing act on.
3. Clicks on the drawing, by mode: `Box` (two opposite corners; GrabCut finds the object inside),
   `Points` (SAM 2, when started with --sam2; on-object or background points), `Path` (the object's
   path, point after point; a scale can be set at any point).
4. Trajectory kind, timing, key frames (sparse_box), prompt and sampling settings.
5. `Preview trajectory`: the rendered maps over the frame as a GIF; `Generate`: the video, with
   progress; downloads: the mp4, the preview and the spec JSON (`magicmotion generate --trajectory`
   makes the same video from it). `Load spec JSON` reads a spec back for editing.

Every error the user can cause is shown in the page as a message (gr.Error / gr.Warning), never as a
stack trace. The drawing logic lives in `drawing.py`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import types
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import numpy as np

from ..errors import MagicMotionError, MediaError, TrajectoryError
from ..pipelines.loading import DEFAULT_GUIDANCE, TINY_GUIDANCE
from ..trajectory import KINDS, MAX_SPARSE_KEYS, render, resize_crop
from . import drawing as dr
from . import motion as mo

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
    return dr.canvas_zoom((w, h))


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
            f"{i}: ({x:.0f}, {y:.0f})" + (f" {dr.scale_text(o.scales[i])}" if i in o.scales else "")
            for i, (x, y) in enumerate(o.path, start=1)
        ) or "none (it stays still)"
        pending = " - waiting for the second box corner" if o.corner is not None else ""
        lines.append(f"{mark} {o.name()}: {mask}; path {path}{pending}")
    return "\n\n".join(lines)


# ------------------------------------------------------------------------------------------ the app


def build_app(base=None, controlnet=None, sam2=None, generate_fn: GenerateFn | None = None,
              settings: dict | None = None, output_dir: str | os.PathLike | None = None,
              examples_dirs: list[Path] | None = None, motion_models: mo.MotionModels | None = None,
              load_options: dict | None = None):
    """The Gradio app (load_options: more `load_pipeline` arguments, see `pipeline_generate_fn`).

    Args:
        base, controlnet: the model (a diffusers folder or hub id, a ControlNet folder or released
            checkpoint); None = the shipped tiny model. Loaded on the first Generate.
        sam2: a SAM 2 model folder (transformers `Sam2Model`) or a `Sam2Segmenter`, for point clicks;
            None = boxes only.
        generate_fn: replaces the pipelines (tests): `fn(image, prompt, trajectory, kind, **settings)
            -> (frames, maps)`, both uint8 (T, h, w, 3).
        settings: defaults for the settings fields (keys of DEFAULT_SETTINGS).
        output_dir: where results are written (default: a new temporary folder).
        examples_dirs: folders with example first frames (default `repo_examples_dirs()`).
        motion_models: Grounding DINO and SAM 2 video for "take the motion from a video" (default: the
            curation pipeline's, loaded on first use).
    Returns:
        gr.Blocks (call `.launch()`).
    """

    segmenter = as_segmenter(sam2)
    given_fn = generate_fn
    generate_fn = generate_fn or pipeline_generate_fn(base, controlnet, load_options)
    defaults = dict(DEFAULT_SETTINGS)
    defaults.update(model_defaults(base, controlnet) if given_fn is None else
                    (REAL_MODEL_SETTINGS if base is not None else {}))
    defaults.update(settings or {})
    out_root = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="magicmotion-app-"))
    out_root.mkdir(parents=True, exist_ok=True)
    examples = find_examples(examples_dirs)
    motion_models = motion_models or mo.MotionModels()
    runs = {"n": 0}

    def run_dir() -> Path:
        runs["n"] += 1
        d = Path(tempfile.mkdtemp(prefix=f"run-{runs['n']:04d}-", dir=out_root))
        return d

    # ------------------------------------------------------------------ handlers (state in, views out)

    def views(state: dict):
        """canvas image, object dropdown, summary."""
        canvas = None
        if state["image"] is not None:
            canvas = dr.draw_canvas(state["image"], state["objects"], state["current"], zoom(state))
        current = next((c for c in object_choices(state) if choice_id(c) == state["current"]), None)
        return (canvas, gr.update(choices=object_choices(state), value=current), describe(state))

    @shows_errors
    def on_upload(image, state):
        state = new_state()
        if image is not None:  # None: the upload was cleared
            state["image"] = dr.read_first_frame(image)
            add_object(state)
        return (state, *views(state))

    @shows_errors
    def on_example(name, state):
        if not name:  # nothing picked: say so, change nothing (an error would mark every output red)
            gr.Info("Pick an example under Example first, then press Use example."
                    if examples else "There are no examples here: upload a first frame instead.")
            return (state, *[gr.skip()] * (4 + 5 + len(SPEC_SETTINGS)))
        if name not in examples:
            raise MediaError(f"unknown example {name!r}")
        from ..io import read_image

        image_path, spec_path = examples[name]
        state = new_state()
        state["image"] = dr.check_image(read_image(image_path), where=str(image_path))
        updates = [gr.update()] * (5 + len(SPEC_SETTINGS))
        if spec_path is not None:
            state, updates = load_spec_into(state, spec_path)
        else:
            add_object(state)
        prompt_file = image_path.parent / "prompt.txt"
        if prompt_file.is_file():  # the example's prompt (the spec's caption otherwise)
            updates[4] = gr.update(value=prompt_file.read_text().strip())
        return (state, state["image"], *views(state), *updates)

    def load_spec_into(state: dict, path, uploaded: bool = False) -> tuple[dict, list]:
        """A spec into the drawing. An uploaded one may not name files on the server: its masks must
        be inline RLE (an example's masks are read beside it)."""
        from ..limits import MAX_JSON_DEPTH, json_depth

        path = Path(path)
        try:
            text = path.read_text()
            if json_depth(text) > MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            data = json.loads(text)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise TrajectoryError(f"{path.name}: not a JSON spec ({e})") from None
        traj, objects, options = dr.objects_from_spec(data, source=path.name,
                                                      base_dir=None if uploaded else path.parent)
        h, w = state["image"].shape[:2]
        if traj.size != (w, h):
            raise TrajectoryError(
                f"{path.name}: the spec is {traj.width}x{traj.height} but the first frame is {w}x{h}; "
                "load the first frame it was drawn on"
            )
        state = {"image": state["image"], "objects": objects, "current": objects[0].id,
                 "next_id": max(o.id for o in objects) + 1}
        s = options.get("settings") or {}
        keys = options.get("key_frames") or []
        updates = [
            gr.update(value=options["kind"]),
            gr.update(value=options["timing"]),
            gr.update(value=traj.num_frames),
            gr.update(choices=list(range(1, traj.num_frames)), value=[int(k) for k in keys if 0 < k < traj.num_frames]),
            gr.update(value=traj.caption or s.get("prompt", "")) if traj.caption or s.get("prompt") else gr.update(),
        ]
        for key, cast in SPEC_SETTINGS:  # the sampling settings the spec was made with
            updates.append(gr.update(value=cast(s[key])) if s.get(key) is not None else gr.update())
        return state, updates

    @shows_errors
    def on_load_spec(file, state):
        if file is None:
            raise TrajectoryError("no spec file")
        if state["image"] is None:
            raise MediaError("upload the first frame the spec was drawn on before loading the spec")
        state, updates = load_spec_into(state, file if isinstance(file, str) else file.name, uploaded=True)
        gr.Info(f"loaded {len(state['objects'])} object(s) from the spec")
        return (state, *views(state), *updates)

    def use_motion(state: dict, traj, what: str):
        """A motion from elsewhere replaces the drawing (shown as its frame-0 masks and box paths) until
        a new first frame, example or spec is loaded."""
        _, objects, _ = dr.objects_from_spec(dr.to_dict(traj), source=what)
        state = {"image": state["image"], "objects": objects, "current": objects[0].id,
                 "next_id": max(o.id for o in objects) + 1, "motion": traj}
        frames = max(5, min(81, (traj.num_frames - 1) // 4 * 4 + 1))
        gr.Info(f"{what}: the motion of {len(objects)} object(s), {traj.num_frames} frames; Preview and "
                "Generate use it (kind mask keeps the whole motion)")
        return (state, *views(state), gr.update(value="mask" if all(
            len(o.masks) == traj.num_frames for o in traj.objects) else "box"), gr.update(value=frames))

    @shows_errors
    def on_take_motion(video, objects_text, state, progress=gr.Progress()):
        if state["image"] is None:
            raise MediaError("upload the first frame to put the motion on first")
        drawn = [o.bounding_box() for o in state["objects"] if o.mask is not None and o.mask.any()]
        traj = mo.motion_from_video(video if isinstance(video, (str, type(None))) else video.name,
                                    objects_text, state["image"], motion_models, fit_boxes=drawn or None,
                                    progress=lambda f, done, total: progress(done / total, desc="SAM 2"))
        return use_motion(state, traj, "reference video")

    @shows_errors
    def on_load_tracks(file, state):
        if state["image"] is None:
            raise MediaError("upload the first frame the tracks belong to first")
        if file is None:
            raise TrajectoryError("no tracks file")
        traj = mo.motion_from_tracks(file if isinstance(file, str) else file.name, state["image"])
        return use_motion(state, traj, "point tracks")

    @shows_errors
    def on_click(mode, point_label, state, evt: gr.SelectData):
        o = current_object(state)
        h, w = state["image"].shape[:2]
        k = zoom(state)  # the drawing shows the frame enlarged k times
        x, y = (round(float(v) / k, 2) for v in evt.index[:2])
        if mode == "Box":
            if o.corner is None:
                o.corner = dr.check_point((x, y), (w, h), "box corner")
            else:
                first, o.corner = o.corner, None
                box = dr.box_from_clicks(first, (x, y), (w, h))
                o.mask, o.box = dr.mask_from_box(state["image"], box), box
                o.points, o.point_labels = [], []
        elif mode == "Points (SAM 2)":
            if segmenter is None:
                raise MagicMotionError(
                    "point clicks need SAM 2: start the app with --sam2 FOLDER (a transformers Sam2Model), "
                    "or use Box mode"
                )
            o.corner = None
            o.points.append(dr.check_point((x, y), (w, h), "point"))
            o.point_labels.append(1 if point_label == POINT_LABELS[0] else 0)
            o.mask, o.box = segmenter(state["image"], o.points, o.point_labels), None
            if not o.mask.any():
                gr.Warning("SAM 2 found no object at these points: click more points on it")
                o.mask = None
        else:
            if o.mask is None:
                raise TrajectoryError(f"{o.name()} has no mask yet: drag a box around it (Box mode) first")
            o.path.append(dr.check_point((x, y), (w, h), f"{o.name()}: path point {len(o.path) + 1}"))
        return (state, *views(state))

    @shows_errors
    def on_add(name, state):
        if state["image"] is None:
            raise MediaError("no first frame: upload an image or pick an example first")
        add_object(state, name or "")
        return (state, *views(state), "")

    @shows_errors
    def on_remove(state):
        o = current_object(state)
        state["objects"] = [p for p in state["objects"] if p.id != o.id]
        state["current"] = state["objects"][-1].id if state["objects"] else None
        return (state, *views(state))

    @shows_errors
    def on_rename(name, state):
        o = current_object(state)
        o.label = (name or "").strip()
        return (state, *views(state))

    @shows_errors
    def on_select_object(choice, state):
        oid = choice_id(choice)
        if oid is not None and oid != state["current"]:
            state["current"] = oid
            return (state, *views(state))
        return (state, gr.update(), gr.update(), gr.update())

    @shows_errors
    def on_clear_mask(state):
        o = current_object(state)
        o.mask = o.box = o.corner = None
        o.points, o.point_labels = [], []
        return (state, *views(state))

    @shows_errors
    def on_undo_path(state):
        o = current_object(state)
        if o.path:
            o.scales.pop(len(o.path), None)
            o.path.pop()
        return (state, *views(state))

    @shows_errors
    def on_clear_path(state):
        o = current_object(state)
        o.path, o.scales = [], {}
        return (state, *views(state))

    @shows_errors
    def on_set_scale(point, scale, state):
        o = current_object(state)
        if not o.path:
            raise TrajectoryError(f"{o.name()} has no path points yet: click some in Path mode")
        i = len(o.path) if point in (None, 0) else int(point)
        if not 1 <= i <= len(o.path):
            raise TrajectoryError(f"{o.name()}: no path point {i} (it has 1..{len(o.path)})")
        if scale is None or not dr.MIN_SCALE <= float(scale) <= dr.MAX_SCALE:
            raise TrajectoryError(f"scale must be {dr.MIN_SCALE:g}..{dr.MAX_SCALE:g}, got {scale}")
        if float(scale) == 1.0:
            o.scales.pop(i, None)
        else:
            o.scales[i] = float(scale)
        return (state, *views(state))

    def on_frames(num_frames, keys):
        num_frames = int(num_frames)
        keys = [int(k) for k in (keys or []) if 0 < int(k) < num_frames]
        return gr.update(choices=list(range(1, num_frames)), value=keys)

    def make_trajectory(state, kind, timing, keys, num_frames, prompt):
        if state["image"] is None:
            raise MediaError("no first frame: upload an image or pick an example first")
        num_frames = int(num_frames)
        if num_frames < 2 or (num_frames - 1) % 4:
            raise TrajectoryError(f"frames must be 4k + 1 (5, 9, 13, ...), got {num_frames}")
        if state.get("motion") is not None:  # taken from a video or point tracks
            return mo.motion_trajectory(state["motion"], num_frames, kind, keys, caption=(prompt or "").strip())
        h, w = state["image"].shape[:2]
        keys = [int(k) for k in keys or []] if kind == "sparse_box" else None
        if keys and len(keys) > MAX_SPARSE_KEYS:
            raise TrajectoryError(f"{len(keys)} key frames picked: sparse_box takes at most {MAX_SPARSE_KEYS}")
        return dr.build_trajectory(state["objects"], (w, h), num_frames, kind, key_frames=keys or None,
                                   timing=timing, caption=(prompt or "").strip())

    def write_preview(path: Path, image: np.ndarray, maps: np.ndarray, fps: float):
        from ..io import write_preview as write

        t = maps.shape[0]
        frames, maps = shown_size(np.repeat(image[None], t, axis=0), maps)
        return write(path, frames, maps, fps=fps)

    def write_side_by_side(path: Path, frames: np.ndarray, maps: np.ndarray, fps: float) -> Path:
        """The generated video next to the same video with its trajectory drawn over it, at a size one
        can judge (small frames enlarged whole times)."""
        from ..io import overlay, write_video

        frames, maps = shown_size(frames, maps)
        gap = np.full((*frames.shape[:2], 8, 3), 255, np.uint8)
        both = np.concatenate([frames, gap, overlay(frames, maps)], axis=2)
        both = both[:, : both.shape[1] // 2 * 2, : both.shape[2] // 2 * 2]  # H.264 wants even sides
        return write_video(path, both, fps=fps)

    def write_spec(path: Path, state, traj, kind, timing, keys, settings):
        keys_used = sorted({t for o in traj.objects for t in o.boxes if t > 0}) if kind == "sparse_box" else None
        data = dr.spec_dict(state["objects"], traj, kind, timing, keys_used or keys, settings)
        from ..io import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=1))
        return path

    def collect_settings(prompt, num_frames, steps, seed, guidance, control, trajectory_guidance, width, height,
                         fps):
        return {"prompt": (prompt or "").strip(), "num_frames": int(num_frames),
                "num_inference_steps": int(steps), "seed": int(seed or 0), "guidance_scale": float(guidance),
                "controlnet_conditioning_scale": float(control),
                "trajectory_guidance_scale": float(trajectory_guidance), "width": int(width or 0),
                "height": int(height or 0), "fps": float(fps)}

    @shows_errors
    def on_preview(state, kind, timing, keys, prompt, num_frames, steps, seed, guidance, control,
                   trajectory_guidance, width, height, fps):
        traj = make_trajectory(state, kind, timing, keys, num_frames, prompt)
        settings = collect_settings(prompt, num_frames, steps, seed, guidance, control, trajectory_guidance,
                                    width, height, fps)
        d = run_dir()
        maps = render(traj, kind, palette=defaults.get("trajectory_palette", "voc"))
        gif = write_preview(d / "trajectory_preview.gif", state["image"], maps, settings["fps"])
        spec = write_spec(d / "trajectory.json", state, traj, kind, timing, keys, settings)
        return str(gif), [str(spec), str(gif)]

    @shows_errors
    def on_generate(state, kind, timing, keys, prompt, num_frames, steps, seed, guidance, control,
                    trajectory_guidance, width, height, fps, progress=gr.Progress(track_tqdm=True)):
        traj = make_trajectory(state, kind, timing, keys, num_frames, prompt)
        settings = collect_settings(prompt, num_frames, steps, seed, guidance, control, trajectory_guidance,
                                    width, height, fps)
        if not settings["prompt"]:
            gr.Warning("no prompt given: generating with an empty prompt")
        if not (settings["width"] and settings["height"]):
            settings["width"] = settings["height"] = 0  # the model's default size
            if base is None:  # the tiny model: its training area, in the frame's shape
                h, w = state["image"].shape[:2]
                settings["width"], settings["height"] = fit_area((w, h), TINY_AREA)
        gen = {k: settings[k] for k in ("num_inference_steps", "seed", "guidance_scale",
                                        "controlnet_conditioning_scale", "trajectory_guidance_scale")}
        if settings["width"]:
            gen.update(width=settings["width"], height=settings["height"])
        progress(0, desc="loading the model and preparing")
        d = run_dir()
        spec = write_spec(d / "trajectory.json", state, traj, kind, timing, keys, settings)
        frames, maps = generate_fn(state["image"], settings["prompt"], traj, kind, **gen)
        frames, maps = np.asarray(frames), np.asarray(maps)
        progress(1.0, desc="writing the video")
        from ..pipelines.generate import write_outputs

        record = dict(settings, kind=kind, timing=timing, trajectory=spec.name)
        paths = write_outputs(d / "video.mp4", frames, maps, record, fps=settings["fps"])
        video, gif = paths["video"], paths["preview_gif"]
        shown = write_side_by_side(d / "result-and-trajectory.mp4", frames, maps, settings["fps"])
        return str(shown), [str(video), str(gif), str(spec)]

    # ---------------------------------------------------------------------------------- the layout

    with gr.Blocks(title="MagicMotion: draw a trajectory", analytics_enabled=False) as demo:
        state = gr.State(new_state())
        gr.Markdown(
            "# MagicMotion: draw a trajectory, make a video\n"
            "Upload a first frame, add an object, drag a **box** around it (two clicks: opposite "
            "corners), switch to **Path** and click where it should go. Preview, then generate."
        )
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                upload = gr.Image(label="First frame (upload)", type="numpy", sources=["upload"],
                                  image_mode="RGB", height=200, elem_id="first-frame")
                upload.preprocess = types.MethodType(first_frame_path, upload)  # the path, not decoded
                with gr.Row():
                    example = gr.Dropdown(choices=list(examples), value=next(iter(examples), None),
                                          label="Example", elem_id="example", scale=3)
                    example_btn = gr.Button("Use example", size="sm", scale=1, elem_id="use-example")
                load_spec = gr.UploadButton("Load spec JSON", file_types=[".json"], size="sm",
                                            elem_id="load-spec")
                with gr.Accordion("Take the motion from a video or point tracks", open=False):
                    motion_video = gr.File(label="Reference video", file_types=["video"], elem_id="motion-video")
                    motion_objects = gr.Textbox(label="Objects to copy", placeholder="e.g. horse. child.",
                                                elem_id="motion-objects")
                    motion_btn = gr.Button("Take their motion (placed on the drawn boxes, else found by name)",
                                           size="sm", elem_id="take-motion")
                    load_tracks = gr.UploadButton("Load point tracks (.json, .npy, .npz)", size="sm",
                                                  file_types=[".json", ".npy", ".npz"], elem_id="load-tracks")
                gr.Markdown("### Objects")
                objects = gr.Dropdown(choices=[], label="Selected object", elem_id="objects")
                name = gr.Textbox(label="Name", placeholder="e.g. dog (Enter renames the selected object)",
                                  elem_id="object-name")
                with gr.Row():
                    add_btn = gr.Button("Add object", size="sm", elem_id="add-object")
                    rename_btn = gr.Button("Rename", size="sm", elem_id="rename-object")
                    remove_btn = gr.Button("Remove object", size="sm", variant="stop", elem_id="remove-object")
                # without SAM 2 the points mode is not offered, and one line says how to have it
                mode = gr.Radio(list(MODES) if segmenter is not None else [m for m in MODES if "SAM 2" not in m],
                                value="Box", label="Clicks on the drawing", elem_id="mode",
                                info=None if segmenter is not None else NO_SAM2)
                point_label = gr.Radio(list(POINT_LABELS), value=POINT_LABELS[0], label="SAM 2 point",
                                       visible=segmenter is not None, elem_id="point-label")
                with gr.Row():
                    clear_mask_btn = gr.Button("Clear mask", size="sm", elem_id="clear-mask")
                    undo_btn = gr.Button("Undo path point", size="sm", elem_id="undo-path")
                    clear_path_btn = gr.Button("Clear path", size="sm", elem_id="clear-path")
                with gr.Row():
                    scale_point = gr.Number(value=0, precision=0, label="Path point (0 = last)", minimum=0,
                                            elem_id="scale-point")
                    scale_value = gr.Number(value=1.0, label="Scale there", minimum=dr.MIN_SCALE,
                                            maximum=dr.MAX_SCALE, step=0.1, elem_id="scale-value")
                scale_btn = gr.Button("Set scale", size="sm", elem_id="set-scale")
            with gr.Column(scale=2, min_width=400):
                canvas = gr.Image(label="Drawing (click here)", type="numpy", interactive=False, height=420,
                                  format="png", elem_id="canvas", buttons=[])
                summary = gr.Markdown(describe(new_state()), elem_id="summary")
                with gr.Row():
                    kind = gr.Radio(list(KINDS), value="box", label="Trajectory kind", elem_id="kind")
                    timing = gr.Radio(list(dr.TIMINGS), value="arc", elem_id="timing",
                                      label="Timing (arc: constant speed; time: equal time between points)")
                keys = gr.Dropdown(choices=list(range(1, defaults["num_frames"])), value=[], multiselect=True,
                                   max_choices=MAX_SPARSE_KEYS, elem_id="key-frames",
                                   label="Key frames for sparse_box (empty: where the path points are reached)")
                prompt = gr.Textbox(label="Prompt", elem_id="prompt",
                                    placeholder="what the video shows, e.g. a red ball rolls to the right")
                with gr.Accordion("Settings", open=False):
                    with gr.Row():
                        num_frames = gr.Slider(5, 81, value=defaults["num_frames"], step=4, label="Frames",
                                               elem_id="frames")
                        steps = gr.Slider(1, 100, value=defaults["num_inference_steps"], step=1, label="Steps",
                                          elem_id="steps")
                        seed = gr.Number(value=defaults["seed"], precision=0, label="Seed", elem_id="seed")
                    with gr.Row():
                        guidance = gr.Slider(1.0, 12.0, value=defaults["guidance_scale"], step=0.5,
                                             label="Guidance scale", elem_id="guidance")
                        control = gr.Slider(0.0, 2.0, value=defaults["controlnet_conditioning_scale"], step=0.05,
                                            label="Control scale", elem_id="control-scale")
                        trajectory_guidance = gr.Slider(
                            1.0, 4.0, value=defaults["trajectory_guidance_scale"], step=0.25,
                            label="Trajectory guidance (1 = off; each step also runs the base alone)",
                            elem_id="trajectory-guidance")
                    with gr.Row():
                        width = gr.Number(value=defaults["width"], precision=0, label="Width (0 = automatic)",
                                          elem_id="width")
                        height = gr.Number(value=defaults["height"], precision=0, label="Height (0 = automatic)",
                                           elem_id="height")
                        fps = gr.Number(value=defaults["fps"], precision=0, label="FPS", elem_id="fps")
                with gr.Row():
                    preview_btn = gr.Button("Preview trajectory", elem_id="preview")
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Row(equal_height=True):
            preview = gr.Image(label="Trajectory preview", type="filepath", interactive=False, height=PREVIEW_SIDE,
                               elem_id="preview-image", scale=1)
            video = gr.Video(label="Video | the same with its trajectory drawn over it", interactive=False,
                             height=PREVIEW_SIDE, loop=True, autoplay=True, elem_id="video", scale=2)
        files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")

        # ---------------------------------------------------------------------------------- events
        drawing_out = [state, canvas, objects, summary]
        spec_fields = [kind, timing, num_frames, keys, prompt, seed, steps, guidance, control, trajectory_guidance,
                       width, height, fps]
        upload.upload(on_upload, [upload, state], drawing_out)
        upload.clear(on_upload, [upload, state], drawing_out)
        example_btn.click(on_example, [example, state], [state, upload, canvas, objects, summary, *spec_fields])
        load_spec.upload(on_load_spec, [load_spec, state], [*drawing_out, *spec_fields])
        canvas.select(on_click, [mode, point_label, state], drawing_out)
        motion_btn.click(on_take_motion, [motion_video, motion_objects, state], [*drawing_out, kind, num_frames])
        load_tracks.upload(on_load_tracks, [load_tracks, state], [*drawing_out, kind, num_frames])
        add_btn.click(on_add, [name, state], [*drawing_out, name])
        rename_btn.click(on_rename, [name, state], drawing_out)
        name.submit(on_rename, [name, state], drawing_out)
        remove_btn.click(on_remove, [state], drawing_out)
        objects.input(on_select_object, [objects, state], drawing_out)
        clear_mask_btn.click(on_clear_mask, [state], drawing_out)
        undo_btn.click(on_undo_path, [state], drawing_out)
        clear_path_btn.click(on_clear_path, [state], drawing_out)
        scale_btn.click(on_set_scale, [scale_point, scale_value, state], drawing_out)
        num_frames.change(on_frames, [num_frames, keys], [keys])
        run_inputs = [state, kind, timing, keys, prompt, num_frames, steps, seed, guidance, control,
                      trajectory_guidance, width, height, fps]
        preview_btn.click(on_preview, run_inputs, [preview, files])
        generate_btn.click(on_generate, run_inputs, [video, files])
    return demo


def launch(demo, host: str = "127.0.0.1", port: int = 7860, **kwargs):
    """Start the server (does not block with prevent_thread_lock=True); returns the local address."""
    demo.queue()
    kwargs.setdefault("share", False)
    _, url, _ = demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD, **kwargs)
    return url


__all__ = ["DEFAULT_SETTINGS", "build_app", "find_examples", "launch", "pipeline_generate_fn"]
