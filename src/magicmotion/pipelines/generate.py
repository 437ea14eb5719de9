"""Making a video: run a loaded MagicMotion pipeline on one first frame, prompt and trajectory, and write
the video, a preview with the trajectory drawn over it, and the settings used.

`generate` checks everything before the model runs; `write_outputs` writes
`NAME.json` (settings), `NAME.preview.gif` + `NAME.preview.png` (trajectory over the generated frames)
and `NAME.mp4` last, each atomically, so a finished mp4 means a complete set.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MediaError, PipelineError


def output_paths(out_mp4: str | os.PathLike) -> dict[str, Path]:
    """The files written for `out_mp4`: video, preview_gif, preview_png, settings."""
    out = Path(out_mp4)
    return {
        "video": out,
        "preview_gif": out.with_name(out.stem + ".preview.gif"),
        "preview_png": out.with_name(out.stem + ".preview.png"),
        "settings": out.with_suffix(".json"),
    }


def check_output(out_mp4: str | os.PathLike, inputs=()) -> Path:
    """An output path the outputs can be written to: an .mp4 in an existing folder we can write in,
    not one of `inputs`, not inside a dataset (`paths.check_output`)."""
    out = Path(out_mp4)
    if out.suffix.lower() != ".mp4":
        raise MediaError(f"{out}: the output must be an .mp4 file")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise MediaError(f"{out}: output folder {out.parent} does not exist")
    if out.is_dir():
        raise MediaError(f"{out}: is a folder")
    from ..paths import check_output as check_output_path

    return check_output_path(out, inputs, error=MediaError)


def generate(
    pipe,
    image,
    prompt: str,
    trajectory,
    kind: str = "box",
    *,
    # Twin of the pipelines' __call__ arguments (MagicMotionWanPipeline.__call__), forwarded by name: spelled
    # out here for generate's own defaults and docs.
    negative_prompt: str | None = None,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    controlnet_conditioning_scale: float = 1.0,
    trajectory_guidance_scale: float = 1.0,
    seed: int | None = None,
    **call_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """One video from a MagicMotion pipeline (`load_pipeline`).

    Args:
        image: the first frame (path, PIL image or uint8 (H, W, 3)).
        prompt: the text.
        trajectory: a spec path / `Trajectory`, or rendered maps (see the pipelines' `__call__`).
        kind: "mask", "box" or "sparse_box".
        seed: the random seed (a CPU generator, so a seed gives the same video on any device); under
            context parallelism (`enable_context_parallel`) rank 0's, a random one when None.
        num_inference_steps, guidance_scale, height/width, num_frames: default the model's recommended
            settings (`magicmotion.json` in its folder, see `magicmotion.pipelines.settings`).
        the rest: as the pipelines' `__call__`.
    Returns:
        (frames uint8 (T, H, W, 3), trajectory maps uint8 (T, H, W, 3)) at the output size.
    Raises:
        PipelineError / TrajectoryError / MediaError before the model runs, on inputs that do not fit.
    """
    import torch

    from .conditions import to_uint8_frames

    if not isinstance(prompt, str):
        raise PipelineError("generate makes one video: prompt must be a single string")
    from .settings import pipeline_settings

    settings = pipeline_settings(pipe)
    num_inference_steps = settings["num_inference_steps"] if num_inference_steps is None else num_inference_steps
    guidance_scale = settings["guidance_scale"] if guidance_scale is None else guidance_scale
    # every check the pipeline makes, before any model runs
    cond, frames_, h, w = pipe.prepare_trajectory(image, trajectory, kind, num_frames, height, width)
    pipe.check_inputs(prompt, negative_prompt, kind, frames_, h, w, num_inference_steps, guidance_scale,
                      cond.num_frames, trajectory_guidance_scale=trajectory_guidance_scale)
    if getattr(pipe, "context_parallel", None) is not None:  # split across processes: one noise for all
        from .parallel import shared_seed

        seed = shared_seed(seed)
    generator = None if seed is None else torch.Generator("cpu").manual_seed(int(seed))
    out = pipe(
        image=cond.image, prompt=prompt, trajectory=cond.maps, kind=kind, negative_prompt=negative_prompt,
        num_frames=frames_, height=h, width=w, num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale, controlnet_conditioning_scale=controlnet_conditioning_scale,
        trajectory_guidance_scale=trajectory_guidance_scale, generator=generator, output_type="np",
        **call_kwargs,
    )
    return to_uint8_frames(out.frames)[0], out.trajectory_maps


def write_outputs(out_mp4: str | os.PathLike, frames: np.ndarray, maps: np.ndarray | None,
                  settings: dict[str, Any], fps: float = 8.0) -> dict[str, Path]:
    """Write the video and its companions; returns their paths (see `output_paths`).

    NAME.json: `settings` plus the output's frames, size, fps and file names. NAME.preview.gif /
    NAME.preview.png: the trajectory maps over the generated frames (animation / contact sheet).
    NAME.mp4 is written last.
    """
    from ..io import atomic_path, write_preview, write_video

    out = check_output(out_mp4)
    paths = output_paths(out)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MediaError(f"{out}: frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    record = dict(settings)
    record.update(
        num_frames=int(frames.shape[0]), width=int(frames.shape[2]), height=int(frames.shape[1]), fps=float(fps),
        outputs={k: p.name for k, p in paths.items()},
    )
    with atomic_path(paths["settings"]) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    write_preview(paths["preview_gif"], frames, maps, fps=fps)
    write_preview(paths["preview_png"], frames, maps)
    write_video(paths["video"], frames, fps=fps)
    return paths


def random_seed() -> int:
    """A fresh seed, recorded in the settings so that the video can be made again."""
    return secrets.randbelow(2**31)


__all__ = ["check_output", "generate", "output_paths", "random_seed", "write_outputs"]
