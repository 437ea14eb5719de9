"""The app's event handlers: each takes the drawing state and the fields it reads, and returns the
state and the views to update (canvas, object list, summary, previews, video, downloads)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np

from ..errors import MagicMotionError, MediaError, TrajectoryError
from ..trajectory import MAX_SPARSE_KEYS, render
from . import drawing as dr
from . import motion as mo
from .canvas import draw_canvas

from .state import (POINT_LABELS, SPEC_SETTINGS, TINY_AREA, add_object, choice_id, current_object, describe,
                    fit_area, new_state, object_choices, shown_size, shows_errors, zoom)


class Handlers:
    """The app's event handlers, state in, views out; `ui.build_app` lays out the page and wires them.

    segmenter: SAM 2 for point clicks or None; generate_fn: `fn(image, prompt, trajectory, kind,
    **settings) -> (frames, maps)`; defaults: the settings fields' defaults; out_root: where each run
    writes its own folder; examples: {name: (image, spec or None)}; motion_models: for "take the motion
    from a video"; tiny: the shipped tiny model runs (no base given)."""

    def __init__(self, segmenter, generate_fn, defaults: dict, out_root: Path, examples: dict,
                 motion_models: mo.MotionModels, tiny: bool):
        self.segmenter, self.generate_fn, self.defaults, self.tiny = segmenter, generate_fn, defaults, tiny
        self.out_root, self.examples, self.motion_models = out_root, examples, motion_models
        self.runs = 0

    def run_dir(self) -> Path:
        self.runs += 1
        return Path(tempfile.mkdtemp(prefix=f"run-{self.runs:04d}-", dir=self.out_root))


    def views(self, state: dict):
        """canvas image, object dropdown, summary."""
        canvas = None
        if state["image"] is not None:
            canvas = draw_canvas(state["image"], state["objects"], state["current"], zoom(state))
        current = next((c for c in object_choices(state) if choice_id(c) == state["current"]), None)
        return (canvas, gr.update(choices=object_choices(state), value=current), describe(state))

    @shows_errors
    def on_upload(self, image, state):
        state = new_state()
        if image is not None:  # None: the upload was cleared
            state["image"] = dr.read_first_frame(image)
            add_object(state)
        return (state, *self.views(state))

    @shows_errors
    def on_example(self, name, state):
        if not name:  # nothing picked: say so, change nothing (an error would mark every output red)
            gr.Info("Pick an example under Example first, then press Use example."
                    if self.examples else "There are no examples here: upload a first frame instead.")
            return (state, *[gr.skip()] * (4 + 5 + len(SPEC_SETTINGS)))
        if name not in self.examples:
            raise MediaError(f"unknown example {name!r}")
        from ..io import read_image

        image_path, spec_path = self.examples[name]
        state = new_state()
        state["image"] = dr.check_image(read_image(image_path), where=str(image_path))
        updates = [gr.update()] * (5 + len(SPEC_SETTINGS))
        if spec_path is not None:
            state, updates = self.load_spec_into(state, spec_path)
        else:
            add_object(state)
        prompt_file = image_path.parent / "prompt.txt"
        if prompt_file.is_file():  # the example's prompt (the spec's caption otherwise)
            updates[4] = gr.update(value=prompt_file.read_text().strip())
        return (state, state["image"], *self.views(state), *updates)

    def load_spec_into(self, state: dict, path, uploaded: bool = False) -> tuple[dict, list]:
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
    def on_load_spec(self, file, state):
        if file is None:
            raise TrajectoryError("no spec file")
        if state["image"] is None:
            raise MediaError("upload the first frame the spec was drawn on before loading the spec")
        state, updates = self.load_spec_into(state, file if isinstance(file, str) else file.name, uploaded=True)
        gr.Info(f"loaded {len(state['objects'])} object(s) from the spec")
        return (state, *self.views(state), *updates)

    def use_motion(self, state: dict, traj, what: str):
        """A motion from elsewhere replaces the drawing (shown as its frame-0 masks and box paths) until
        a new first frame, example or spec is loaded."""
        _, objects, _ = dr.objects_from_spec(dr.to_dict(traj), source=what)
        state = {"image": state["image"], "objects": objects, "current": objects[0].id,
                 "next_id": max(o.id for o in objects) + 1, "motion": traj}
        frames = max(5, min(81, (traj.num_frames - 1) // 4 * 4 + 1))
        gr.Info(f"{what}: the motion of {len(objects)} object(s), {traj.num_frames} frames; Preview and "
                "Generate use it (kind mask keeps the whole motion)")
        return (state, *self.views(state), gr.update(value="mask" if all(
            len(o.masks) == traj.num_frames for o in traj.objects) else "box"), gr.update(value=frames))

    @shows_errors
    def on_take_motion(self, video, objects_text, state, progress=gr.Progress()):
        if state["image"] is None:
            raise MediaError("upload the first frame to put the motion on first")
        drawn = [o.bounding_box() for o in state["objects"] if o.mask is not None and o.mask.any()]
        traj = mo.motion_from_video(video if isinstance(video, (str, type(None))) else video.name,
                                    objects_text, state["image"], self.motion_models, fit_boxes=drawn or None,
                                    progress=lambda f, done, total: progress(done / total, desc="SAM 2"))
        return self.use_motion(state, traj, "reference video")

    @shows_errors
    def on_load_tracks(self, file, state):
        if state["image"] is None:
            raise MediaError("upload the first frame the tracks belong to first")
        if file is None:
            raise TrajectoryError("no tracks file")
        traj = mo.motion_from_tracks(file if isinstance(file, str) else file.name, state["image"])
        return self.use_motion(state, traj, "point tracks")

    @shows_errors
    def on_click(self, mode, point_label, state, evt: gr.SelectData):
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
            if self.segmenter is None:
                raise MagicMotionError(
                    "point clicks need SAM 2: start the app with --sam2 FOLDER (a transformers Sam2Model), "
                    "or use Box mode"
                )
            o.corner = None
            o.points.append(dr.check_point((x, y), (w, h), "point"))
            o.point_labels.append(1 if point_label == POINT_LABELS[0] else 0)
            o.mask, o.box = self.segmenter(state["image"], o.points, o.point_labels), None
            if not o.mask.any():
                gr.Warning("SAM 2 found no object at these points: click more points on it")
                o.mask = None
        else:
            if o.mask is None:
                raise TrajectoryError(f"{o.name()} has no mask yet: drag a box around it (Box mode) first")
            o.path.append(dr.check_point((x, y), (w, h), f"{o.name()}: path point {len(o.path) + 1}"))
        return (state, *self.views(state))

    @shows_errors
    def on_add(self, name, state):
        if state["image"] is None:
            raise MediaError("no first frame: upload an image or pick an example first")
        add_object(state, name or "")
        return (state, *self.views(state), "")

    @shows_errors
    def on_remove(self, state):
        o = current_object(state)
        state["objects"] = [p for p in state["objects"] if p.id != o.id]
        state["current"] = state["objects"][-1].id if state["objects"] else None
        return (state, *self.views(state))

    @shows_errors
    def on_rename(self, name, state):
        o = current_object(state)
        o.label = (name or "").strip()
        return (state, *self.views(state))

    @shows_errors
    def on_select_object(self, choice, state):
        oid = choice_id(choice)
        if oid is not None and oid != state["current"]:
            state["current"] = oid
            return (state, *self.views(state))
        return (state, gr.update(), gr.update(), gr.update())

    @shows_errors
    def on_clear_mask(self, state):
        o = current_object(state)
        o.mask = o.box = o.corner = None
        o.points, o.point_labels = [], []
        return (state, *self.views(state))

    @shows_errors
    def on_undo_path(self, state):
        o = current_object(state)
        if o.path:
            o.scales.pop(len(o.path), None)
            o.path.pop()
        return (state, *self.views(state))

    @shows_errors
    def on_clear_path(self, state):
        o = current_object(state)
        o.path, o.scales = [], {}
        return (state, *self.views(state))

    @shows_errors
    def on_set_scale(self, point, scale, state):
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
        return (state, *self.views(state))

    def on_frames(self, num_frames, keys):
        num_frames = int(num_frames)
        keys = [int(k) for k in (keys or []) if 0 < int(k) < num_frames]
        return gr.update(choices=list(range(1, num_frames)), value=keys)

    def make_trajectory(self, state, kind, timing, keys, num_frames, prompt):
        if state["image"] is None:
            raise MediaError("no first frame: upload an image or pick an example first")
        num_frames = int(num_frames)
        if num_frames < 2 or (num_frames - 1) % 4:
            low = num_frames - (num_frames - 1) % 4 if num_frames > 1 else None
            use = f": use {low + 4}" + (f" or {low}" if low and low > 1 else "") if num_frames > 1 else ""
            raise TrajectoryError(f"frames must be 4k + 1 (5, 9, 13, ...), got {num_frames}{use}")
        if state.get("motion") is not None:  # taken from a video or point tracks
            return mo.motion_trajectory(state["motion"], num_frames, kind, keys, caption=(prompt or "").strip())
        h, w = state["image"].shape[:2]
        keys = [int(k) for k in keys or []] if kind == "sparse_box" else None
        if keys and len(keys) > MAX_SPARSE_KEYS:
            raise TrajectoryError(f"{len(keys)} key frames picked: sparse_box takes at most {MAX_SPARSE_KEYS}")
        return dr.build_trajectory(state["objects"], (w, h), num_frames, kind, key_frames=keys or None,
                                   timing=timing, caption=(prompt or "").strip())

    def write_preview(self, path: Path, image: np.ndarray, maps: np.ndarray, fps: float):
        from ..io import write_preview as write

        t = maps.shape[0]
        frames, maps = shown_size(np.repeat(image[None], t, axis=0), maps)
        return write(path, frames, maps, fps=fps)

    def write_side_by_side(self, path: Path, frames: np.ndarray, maps: np.ndarray, fps: float) -> Path:
        """The generated video next to the same video with its trajectory drawn over it, at a size one
        can judge (small frames enlarged whole times)."""
        from ..io import overlay, write_video

        frames, maps = shown_size(frames, maps)
        gap = np.full((*frames.shape[:2], 8, 3), 255, np.uint8)
        both = np.concatenate([frames, gap, overlay(frames, maps)], axis=2)
        both = both[:, : both.shape[1] // 2 * 2, : both.shape[2] // 2 * 2]  # H.264 wants even sides
        return write_video(path, both, fps=fps)

    def write_spec(self, path: Path, state, traj, kind, timing, keys, settings):
        keys_used = sorted({t for o in traj.objects for t in o.boxes if t > 0}) if kind == "sparse_box" else None
        data = dr.spec_dict(state["objects"], traj, kind, timing, keys_used or keys, settings)
        from ..io import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=1))
        return path

    def collect_settings(self, prompt, num_frames, steps, seed, guidance, control, trajectory_guidance, width, height,
                         fps):
        return {"prompt": (prompt or "").strip(), "num_frames": int(num_frames),
                "num_inference_steps": int(steps), "seed": int(seed or 0), "guidance_scale": float(guidance),
                "controlnet_conditioning_scale": float(control),
                "trajectory_guidance_scale": float(trajectory_guidance), "width": int(width or 0),
                "height": int(height or 0), "fps": float(fps)}

    @shows_errors
    def on_preview(self, state, kind, timing, keys, prompt, num_frames, steps, seed, guidance, control,
                   trajectory_guidance, width, height, fps):
        traj = self.make_trajectory(state, kind, timing, keys, num_frames, prompt)
        settings = self.collect_settings(prompt, num_frames, steps, seed, guidance, control, trajectory_guidance,
                                         width, height, fps)
        d = self.run_dir()
        maps = render(traj, kind, palette=self.defaults.get("trajectory_palette", "voc"))
        gif = self.write_preview(d / "trajectory_preview.gif", state["image"], maps, settings["fps"])
        spec = self.write_spec(d / "trajectory.json", state, traj, kind, timing, keys, settings)
        return str(gif), [str(spec), str(gif)]

    @shows_errors
    def on_generate(self, state, kind, timing, keys, prompt, num_frames, steps, seed, guidance, control,
                    trajectory_guidance, width, height, fps, progress=gr.Progress(track_tqdm=True)):
        traj = self.make_trajectory(state, kind, timing, keys, num_frames, prompt)
        settings = self.collect_settings(prompt, num_frames, steps, seed, guidance, control, trajectory_guidance,
                                         width, height, fps)
        if not settings["prompt"]:
            gr.Warning("no prompt given: generating with an empty prompt")
        if not (settings["width"] and settings["height"]):
            settings["width"] = settings["height"] = 0  # the model's default size
            if self.tiny:  # the tiny model: its training area, in the frame's shape
                h, w = state["image"].shape[:2]
                settings["width"], settings["height"] = fit_area((w, h), TINY_AREA)
        gen = {k: settings[k] for k in ("num_inference_steps", "seed", "guidance_scale",
                                        "controlnet_conditioning_scale", "trajectory_guidance_scale")}
        if settings["width"]:
            gen.update(width=settings["width"], height=settings["height"])
        progress(0, desc="loading the model and preparing")
        d = self.run_dir()
        spec = self.write_spec(d / "trajectory.json", state, traj, kind, timing, keys, settings)
        frames, maps = self.generate_fn(state["image"], settings["prompt"], traj, kind, **gen)
        frames, maps = np.asarray(frames), np.asarray(maps)
        progress(1.0, desc="writing the video")
        from ..pipelines.generate import write_outputs

        record = dict(settings, kind=kind, timing=timing, trajectory=spec.name)
        paths = write_outputs(d / "video.mp4", frames, maps, record, fps=settings["fps"])
        video, gif = paths["video"], paths["preview_gif"]
        shown = self.write_side_by_side(d / "result-and-trajectory.mp4", frames, maps, settings["fps"])
        return str(shown), [str(video), str(gif), str(spec)]
