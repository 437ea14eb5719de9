"""The conditions of a MagicMotion pipeline: the first frame and the trajectory maps, brought to the
output size together (resize so the frame covers the target, then centre crop; the same transform for
both, so they stay aligned), and the pipeline output type.

Shared by `MagicMotionWanPipeline` and `MagicMotionCogVideoXPipeline`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np
import torch
from diffusers.utils import BaseOutput

from ..errors import PipelineError
from ..trajectory import KINDS, Trajectory, load, render, resize_crop

# A trajectory as the pipelines take it: a spec (JSON path or object), rendered maps as a uint8 array
# (T, H, W, 3) or a video path, or maps as a float tensor (T, 3, H, W) in [0, 1] at the output size.
TrajectoryInput = Union[str, os.PathLike, Trajectory, np.ndarray, torch.Tensor]


@dataclass
class MagicMotionPipelineOutput(BaseOutput):
    """frames: the generated videos, as diffusers' `output_type` says ("np": float (B, T, H, W, 3) in
    [0, 1]; "pil": lists of images; "pt": (B, T, 3, H, W); "latent": latents).
    trajectory_maps: uint8 (T, H, W, 3), the maps the video was conditioned on, at the output size."""

    frames: Any
    trajectory_maps: np.ndarray


@dataclass
class Conditions:
    """The first frame and the trajectory maps at the output size.

    image: uint8 (H, W, 3). maps: uint8 (T, H, W, 3), or float (T, 3, H, W) in [0, 1] when given so.
    source_size: (W, H) of the trajectory as given, before resizing. source: where it came from.
    fit: None, or how an image and trajectory of slightly different aspect were fitted.
    """

    image: np.ndarray
    maps: np.ndarray | torch.Tensor
    source_size: tuple[int, int]
    source: str
    fit: str | None = None

    @property
    def num_frames(self) -> int:
        return int(self.maps.shape[0])

    def maps_uint8(self) -> np.ndarray:
        """uint8 (T, H, W, 3) whatever the input form."""
        if isinstance(self.maps, torch.Tensor):
            m = self.maps.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
            return m.permute(0, 2, 3, 1).cpu().numpy()
        return self.maps


def read_image(image) -> np.ndarray:
    """A first frame as uint8 (H, W, 3): a path, a PIL image or a uint8 array; one under
    MIN_IMAGE_SIDE pixels a side (a 1x1 'picture') is refused."""
    from PIL import Image

    from ..io import read_image as read_image_file
    from ..limits import MIN_IMAGE_SIDE

    if isinstance(image, (str, os.PathLike)):
        frame, where = read_image_file(image), str(image)
    elif isinstance(image, Image.Image):
        from ..io import image_to_rgb

        frame, where = image_to_rgb(image, "image"), "image"  # 16-bit, alpha... as for files
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise PipelineError(f"image array must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        frame, where = image, "image"
    else:
        raise PipelineError(
            f"image must be a path, a PIL image or a uint8 (H, W, 3) array, got {type(image).__name__}")
    if min(frame.shape[:2]) < MIN_IMAGE_SIDE:
        raise PipelineError(f"{where}: the first frame is {frame.shape[1]}x{frame.shape[0]}; at least "
                            f"{MIN_IMAGE_SIDE} pixels a side are needed")
    return frame


def read_trajectory(trajectory: TrajectoryInput) -> Trajectory | np.ndarray | torch.Tensor:
    """A spec path (.json) -> Trajectory; a video file or frame folder -> uint8 maps; others as given."""
    from ..io import read_video

    if isinstance(trajectory, (str, os.PathLike)):
        path = Path(trajectory)
        if path.suffix.lower() == ".json":
            return load(path)
        maps, _ = read_video(path)
        return maps
    if isinstance(trajectory, Trajectory):
        return trajectory
    if isinstance(trajectory, np.ndarray):
        if trajectory.dtype != np.uint8 or trajectory.ndim != 4 or trajectory.shape[-1] != 3:
            raise PipelineError(
                f"trajectory maps must be uint8 (T, H, W, 3), got {trajectory.dtype} {trajectory.shape}"
            )
        return trajectory
    if isinstance(trajectory, torch.Tensor):
        if not trajectory.is_floating_point() or trajectory.ndim != 4 or trajectory.shape[1] != 3:
            raise PipelineError(
                f"trajectory tensor must be float (T, 3, H, W) in [0, 1], got {trajectory.dtype} "
                f"{tuple(trajectory.shape)}"
            )
        return trajectory
    raise PipelineError(
        "trajectory must be a spec (path or Trajectory), rendered maps (uint8 (T, H, W, 3) or a video "
        f"path) or a float tensor (T, 3, H, W); got {type(trajectory).__name__}"
    )


def trajectory_size(trajectory: Trajectory | np.ndarray | torch.Tensor) -> tuple[int, int]:
    """(W, H) of a trajectory as read by `read_trajectory`."""
    if isinstance(trajectory, Trajectory):
        return trajectory.size
    if isinstance(trajectory, torch.Tensor):
        return int(trajectory.shape[-1]), int(trajectory.shape[-2])
    return int(trajectory.shape[2]), int(trajectory.shape[1])


def trajectory_frames(trajectory: Trajectory | np.ndarray | torch.Tensor) -> int:
    return trajectory.num_frames if isinstance(trajectory, Trajectory) else int(trajectory.shape[0])


def describe(trajectory: Trajectory | np.ndarray | torch.Tensor) -> str:
    if isinstance(trajectory, Trajectory):
        return trajectory.source or "trajectory spec"
    return "trajectory maps"


# Image and trajectory with the same aspect ratio (within ALIGN_TOLERANCE) go through one resize +
# centre crop and stay aligned pixel for pixel. Up to FIT_TOLERANCE apart -- the authors' release pairs
# 1280x853 images with 1280x864 maps (1.3%), 848x480 with 864x480 (1.9%), 1280x788 with 1280x800
# (1.5%), because its map videos were encoded at multiples of 16 -- each is fitted to the output size on
# its own, as the release does: the maps are stretched to the image's frame, then both are resized and
# cropped together. Further apart, the pair is refused.
ALIGN_TOLERANCE = 0.01
FIT_TOLERANCE = 0.03


def aspect_difference(image_wh: tuple[int, int], traj_wh: tuple[int, int]) -> float:
    """How far apart the aspect ratios are, relative to the trajectory's (0.0185 for 848x480 vs 864x480)."""
    (iw, ih), (tw, th) = image_wh, traj_wh
    return abs(iw / ih - tw / th) / (tw / th)


def check_aspect(image_wh: tuple[int, int], traj_wh: tuple[int, int], where: str,
                 tolerance: float = FIT_TOLERANCE) -> str | None:
    """Refuse an image and a trajectory whose aspect ratios differ by more than `tolerance`.

    Returns None when they go through one transform together, or a note saying that each was
    fitted to the output size on its own (aspects apart by more than ALIGN_TOLERANCE)."""
    (iw, ih), (tw, th) = image_wh, traj_wh
    d = aspect_difference(image_wh, traj_wh)
    if d > tolerance:
        raise PipelineError(
            f"{where}: trajectory is {tw}x{th} but the image is {iw}x{ih}; their aspect ratios differ by "
            f"{100 * d:.1f}% (at most {100 * tolerance:.0f}% can be fitted), so they cannot be brought to the "
            "output size together (use the first frame of the video the trajectory was drawn on, or rescale "
            "the spec)"
        )
    if d <= ALIGN_TOLERANCE:
        return None
    return (f"trajectory {tw}x{th} stretched to the image's {iw}x{ih} (aspect ratios {100 * d:.1f}% apart), "
            "then both resized and cropped to the output size")


def prepare_conditions(image, trajectory: Trajectory | np.ndarray | torch.Tensor, kind: str,
                       size: tuple[int, int], palette: str = "voc", resize: str = "cover") -> Conditions:
    """The first frame and trajectory maps at `size` = (W, H), resized and cropped together.

    A spec is rendered with `render(spec, kind, size=..., palette=...)` (boxes rescaled exactly as the
    image is cropped); uint8 maps are resized and cropped like the image (nearest neighbour, colours
    kept); a float tensor must already be at `size`. An image and a trajectory a few percent apart in
    aspect are fitted each on its own (see `check_aspect`). `resize="stretch"` is the authors'
    release's way: image and maps each resized straight to `size` with PIL Lanczos (no crop);
    `resize="pad"` fits both inside `size` (aspect kept, area averaging / nearest for the maps) and
    centres them on black."""
    if kind not in KINDS:
        raise PipelineError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    frame = read_image(image)
    where = describe(trajectory)
    src = trajectory_size(trajectory)
    image_wh = (frame.shape[1], frame.shape[0])
    fit = check_aspect(image_wh, src, where)
    size = (int(size[0]), int(size[1]))
    if resize == "stretch" and not isinstance(trajectory, torch.Tensor):
        maps = render(trajectory, kind, palette=palette) if isinstance(trajectory, Trajectory) else trajectory
        fit = None if src == image_wh else f"image {image_wh[0]}x{image_wh[1]} and trajectory {src[0]}x{src[1]} " \
            f"each stretched to {size[0]}x{size[1]} (Lanczos), as the authors' release does"
        return Conditions(image=_stretch(frame, size), maps=np.stack([_stretch(m, size) for m in maps]),
                          source_size=src, source=where, fit=fit)
    if resize == "pad" and not isinstance(trajectory, torch.Tensor):
        # fitted inside `size` with the aspect kept, centred on black (the maps' background)
        scale = min(size[0] / image_wh[0], size[1] / image_wh[1])
        inner = (max(1, min(size[0], round(image_wh[0] * scale))), max(1, min(size[1], round(image_wh[1] * scale))))
        if isinstance(trajectory, Trajectory) and fit is None:
            maps = render(trajectory, kind, size=inner, palette=palette)
        else:
            maps = render(trajectory, kind, palette=palette) if isinstance(trajectory, Trajectory) else trajectory
            maps = np.stack([cv2.resize(m, inner, interpolation=cv2.INTER_NEAREST) for m in maps])
        image = cv2.resize(frame, inner, interpolation=cv2.INTER_AREA)
        return Conditions(image=_pad(image, size), maps=np.stack([_pad(m, size) for m in maps]), source_size=src,
                          source=where, fit=fit)
    if isinstance(trajectory, torch.Tensor):
        if src != size:
            raise PipelineError(f"{where}: a trajectory tensor must be at the output size {size[0]}x{size[1]}, "
                                f"got {src[0]}x{src[1]}")
        maps = trajectory
    elif fit is not None:  # stretched to the image's frame first (nearest: colours kept)
        maps = render(trajectory, kind, palette=palette) if isinstance(trajectory, Trajectory) else trajectory
        maps = np.stack([cv2.resize(m, image_wh, interpolation=cv2.INTER_NEAREST) for m in maps])
        maps = resize_crop(maps, size, nearest=True)
    elif isinstance(trajectory, Trajectory):
        maps = render(trajectory, kind, size=size, palette=palette)
    else:
        maps = resize_crop(trajectory, size, nearest=True)
    return Conditions(image=resize_crop(frame, size), maps=maps, source_size=src, source=where, fit=fit)


def _pad(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (h, w, 3) centred on a black (H, W, 3) canvas, `size` = (W, H)."""
    out = np.zeros((size[1], size[0], frame.shape[2]), dtype=frame.dtype)
    y, x = (size[1] - frame.shape[0]) // 2, (size[0] - frame.shape[1]) // 2
    out[y:y + frame.shape[0], x:x + frame.shape[1]] = frame
    return out


def _stretch(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) resized to `size` = (W, H) with PIL Lanczos, aspect not kept."""
    from PIL import Image

    if (frame.shape[1], frame.shape[0]) == size:
        return frame
    return np.asarray(Image.fromarray(frame).resize(size, Image.LANCZOS))


def maps_to_video_tensor(maps: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) or float (T, 3, H, W) in [0, 1] -> float (1, 3, T, H, W) in [-1, 1] (VAE input)."""
    if isinstance(maps, torch.Tensor):
        video = maps.float().permute(1, 0, 2, 3)
    else:
        video = torch.from_numpy(np.ascontiguousarray(maps)).permute(3, 0, 1, 2).float() / 255.0
    return (video * 2.0 - 1.0).unsqueeze(0)


def onload(module) -> None:
    """Bring an offloaded component to the execution device before running its submodules directly.

    diffusers' model CPU offload (and accelerate's sequential offload) moves a component when its
    `forward` runs; the joint MagicMotion model runs the base transformer's blocks itself, so the
    base's hook is triggered by hand, as diffusers' `apply_forward_hook` does for `vae.encode`.
    """
    hook = getattr(module, "_hf_hook", None)
    if hook is not None and hasattr(hook, "pre_forward"):
        hook.pre_forward(module)


def release(module) -> None:
    """Undo `onload` for hooks that put weights back after the forward (sequential offload)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is not None and hasattr(hook, "post_forward"):
        hook.post_forward(module, None)


def to_uint8_frames(frames) -> np.ndarray:
    """Pipeline output ("np", float (B, T, H, W, 3) in [0, 1]) -> uint8 (B, T, H, W, 3)."""
    frames = np.asarray(frames)
    return np.clip(frames * 255.0 + 0.5, 0, 255).astype(np.uint8)


__all__ = [
    "ALIGN_TOLERANCE", "FIT_TOLERANCE", "Conditions", "MagicMotionPipelineOutput", "TrajectoryInput",
    "aspect_difference", "check_aspect", "maps_to_video_tensor",
    "onload", "prepare_conditions", "read_image", "read_trajectory", "release", "to_uint8_frames",
    "trajectory_frames", "trajectory_size",
]


def faster_cache_on(pipe) -> bool:
    """Whether diffusers' FasterCache is enabled on the pipeline's base transformer (or transformer_2)."""
    for transformer in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)):
        registry = getattr(transformer, "_diffusers_hook", None)
        if registry is not None and registry.get_hook("faster_cache_denoiser") is not None:
            return True
    return False


def check_call_inputs(pipe, prompt, negative_prompt, kind: str, num_frames: int, height: int, width: int,
                      num_inference_steps: int, guidance_scale: float, trajectory_frames: int | None = None,
                      callback_on_step_end_tensor_inputs=None, trajectory_guidance_scale: float = 1.0) -> None:
    """The checks both MagicMotion pipelines make before any model runs (PipelineError on bad input)."""
    if not isinstance(prompt, (str, list)) or (isinstance(prompt, list) and not prompt):
        raise PipelineError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
    batch = 1 if isinstance(prompt, str) else len(prompt)
    if negative_prompt is not None:
        if isinstance(negative_prompt, list) and len(negative_prompt) != batch:
            raise PipelineError(f"{len(negative_prompt)} negative prompts for {batch} prompts")
        if not isinstance(negative_prompt, (str, list)):
            raise PipelineError(f"negative_prompt must be a string or a list, got {negative_prompt!r}")
    if kind not in KINDS:
        raise PipelineError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    t = pipe.vae_scale_factor_temporal
    if num_frames < 1 or (num_frames - 1) % t:
        low = num_frames - (num_frames - 1) % t if num_frames > 1 else None
        use = f"{low} or {low + t}" if low and low > 1 else f"{t + 1} or {4 * t + 1}"
        raise PipelineError(
            f"{num_frames} frames: the VAE needs (frames - 1) divisible by {t}: use {use} (a spec: "
            "magicmotion.trajectory.with_num_frames trims it or pads it holding its last frame)"
        )
    if trajectory_frames is not None and trajectory_frames != num_frames:
        raise PipelineError(f"the trajectory has {trajectory_frames} frames but {num_frames} were asked for; "
                            f"bring it to {num_frames} first (a spec: magicmotion.trajectory.with_num_frames)")
    m = pipe.spatial_multiple()
    if height <= 0 or width <= 0 or height % m or width % m:
        raise PipelineError(f"size {width}x{height}: width and height must be positive multiples of {m}")
    if num_inference_steps < 1:
        raise PipelineError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
    if guidance_scale < 0:
        raise PipelineError(f"guidance_scale must be >= 0, got {guidance_scale}")
    if not math.isfinite(trajectory_guidance_scale) or trajectory_guidance_scale < 0:
        raise PipelineError(f"trajectory_guidance_scale must be a number >= 0, got {trajectory_guidance_scale}")
    if trajectory_guidance_scale != 1.0 and faster_cache_on(pipe):
        raise PipelineError("the FasterCache cache cannot run with trajectory guidance (its pass without control is "
                            "a third branch, not half of a guidance batch): use another cache or trajectory "
                            "guidance 1")
    if callback_on_step_end_tensor_inputs is not None:
        bad = [k for k in callback_on_step_end_tensor_inputs if k not in pipe._callback_tensor_inputs]
        if bad:
            raise PipelineError(f"callback tensor inputs {bad} not in {pipe._callback_tensor_inputs}")


def trajectory_guidance_on(model, scale: float, conditioning_scale) -> bool:
    """Whether a step needs trajectory guidance's extra pass: not at scale 1, nor when every control
    scale is 0 (the controlled and free predictions are then the same)."""
    return scale != 1.0 and any(model.conditioning_scales(conditioning_scale))


def trajectory_guided(noise_pred: torch.Tensor, controlled: torch.Tensor, free: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """Trajectory guidance: `noise_pred + (scale - 1) * (controlled - free)`.

    `controlled` is the text-conditional prediction with the ControlNet, `free` the same without it
    (control scale 0), `noise_pred` the prediction the sampler would step with (after text guidance).
    Without text guidance this is `free + scale * (controlled - free)`: classifier-free guidance
    with the trajectory as the condition. 1 changes nothing; 0 gives the base's prediction.
    """
    return noise_pred + (scale - 1.0) * (controlled - free)
