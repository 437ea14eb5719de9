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
stack trace. The drawing logic lives in `drawing.py`, the event handlers in `callbacks.py`, what they
share (settings, examples, models, the drawing state) in `state.py`; this file lays out the page.
"""

from __future__ import annotations

import os
import tempfile
import types
from pathlib import Path

import gradio as gr

from ..trajectory import KINDS, MAX_SPARSE_KEYS
from . import drawing as dr
from . import motion as mo

from .callbacks import Handlers
from .state import (DEFAULT_SETTINGS, GenerateFn, MAX_UPLOAD, MODES, NO_SAM2, POINT_LABELS, PREVIEW_SIDE,
                    REAL_MODEL_SETTINGS, as_segmenter, describe, find_examples, first_frame_path, model_defaults,
                    new_state, pipeline_generate_fn)


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
    handlers = Handlers(segmenter, generate_fn, defaults, out_root, examples, motion_models, tiny=base is None)

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
        upload.upload(handlers.on_upload, [upload, state], drawing_out)
        upload.clear(handlers.on_upload, [upload, state], drawing_out)
        example_btn.click(handlers.on_example, [example, state],
                          [state, upload, canvas, objects, summary, *spec_fields])
        load_spec.upload(handlers.on_load_spec, [load_spec, state], [*drawing_out, *spec_fields])
        canvas.select(handlers.on_click, [mode, point_label, state], drawing_out)
        motion_btn.click(handlers.on_take_motion, [motion_video, motion_objects, state],
                         [*drawing_out, kind, num_frames])
        load_tracks.upload(handlers.on_load_tracks, [load_tracks, state], [*drawing_out, kind, num_frames])
        add_btn.click(handlers.on_add, [name, state], [*drawing_out, name])
        rename_btn.click(handlers.on_rename, [name, state], drawing_out)
        name.submit(handlers.on_rename, [name, state], drawing_out)
        remove_btn.click(handlers.on_remove, [state], drawing_out)
        objects.input(handlers.on_select_object, [objects, state], drawing_out)
        clear_mask_btn.click(handlers.on_clear_mask, [state], drawing_out)
        undo_btn.click(handlers.on_undo_path, [state], drawing_out)
        clear_path_btn.click(handlers.on_clear_path, [state], drawing_out)
        scale_btn.click(handlers.on_set_scale, [scale_point, scale_value, state], drawing_out)
        num_frames.change(handlers.on_frames, [num_frames, keys], [keys])
        run_inputs = [state, kind, timing, keys, prompt, num_frames, steps, seed, guidance, control,
                      trajectory_guidance, width, height, fps]
        preview_btn.click(handlers.on_preview, run_inputs, [preview, files])
        generate_btn.click(handlers.on_generate, run_inputs, [video, files])
    return demo


def launch(demo, host: str = "127.0.0.1", port: int = 7860, **kwargs):
    """Start the server (does not block with prevent_thread_lock=True); returns the local address."""
    demo.queue()
    kwargs.setdefault("share", False)
    _, url, _ = demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD, **kwargs)
    return url


__all__ = ["DEFAULT_SETTINGS", "build_app", "find_examples", "launch", "pipeline_generate_fn"]
