"""What a MagicMotion pipeline adds to its diffusers parent the same way whatever the base: the frame rate
and the trajectory settings from the model's settings, model offload by groups, the trajectory step
(first frame + trajectory maps, sized together), and the step-end callback with the trajectory latents.

`MagicMotionWanPipeline` and `MagicMotionCogVideoXPipeline` take it as their first base class, so that
each pipeline keeps only the steps that differ between Wan and CogVideoX.
"""

from __future__ import annotations

from typing import Callable

from ..errors import PipelineError
from .conditions import (Conditions, TrajectoryInput, prepare_conditions, read_trajectory, trajectory_frames,
                         trajectory_size)
from .offload import offload_by_groups
from .settings import pipeline_settings


class TrajectoryPipelineMixin:
    """Steps shared by the MagicMotion pipelines; the class using it defines `offload_groups`,
    `default_size(trajectory_wh)` and `_callback_tensor_inputs`, and has a diffusers pipeline after it."""

    offload_groups: tuple[tuple[str, ...], ...] = ()

    @property
    def fps(self) -> float:
        """The frame rate to write videos at: the model's recommended (`pipeline_settings`)."""
        return float(pipeline_settings(self)["fps"])

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device="cuda"):
        """diffusers' model CPU offload, by `offload_groups`: a base transformer and its ControlNet on the
        GPU together, nothing else; the VAE alone while it encodes and decodes."""
        super().enable_model_cpu_offload(gpu_id=gpu_id, device=device)
        offload_by_groups(self, self.offload_groups)

    def prepare_trajectory(
        self,
        image,
        trajectory: TrajectoryInput,
        kind: str = "box",
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
    ) -> tuple[Conditions, int, int, int]:
        """Read the trajectory, settle the output size and frame count, and bring the first frame and the
        trajectory maps to that size together.

        Returns (conditions, num_frames, height, width); `conditions.image` is uint8 (H, W, 3),
        `conditions.maps` uint8 (T, H, W, 3) (or the float tensor given).
        """
        traj = read_trajectory(trajectory)
        if (height is None) != (width is None):
            raise PipelineError("give both height and width, or neither")
        if height is None:
            width, height = self.default_size(trajectory_size(traj))
        num_frames = trajectory_frames(traj) if num_frames is None else int(num_frames)
        settings = pipeline_settings(self)
        cond = prepare_conditions(image, traj, kind, (width, height), palette=settings["trajectory_palette"],
                                  resize=settings["resize"])
        return cond, num_frames, int(height), int(width)

    def step_end(self, callback: Callable | None, i: int, t, names: list[str], **tensors) -> tuple:
        """diffusers' `callback_on_step_end` after step `i`: `callback(pipe, i, t, {name: tensor})` gets
        the tensors named in `names`, and a tensor it returns replaces that one. Returns `tensors`' values
        in their order (unchanged without a callback)."""
        if callback is None:
            return tuple(tensors.values())
        outputs = callback(self, i, t, {k: tensors[k] for k in names})
        return tuple(outputs.pop(k, v) for k, v in tensors.items())


__all__ = ["TrajectoryPipelineMixin"]
