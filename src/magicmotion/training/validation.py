"""Validation videos during training: the held-out clip generated with the joint model at its
current weights, written as validation/step-XXXXXXX.mp4 (+ .png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .config import TrainConfig
from .setup import uses_expand_timesteps


class Validator:
    """Generates a video from a held-out clip with the current weights (main process only).

    Writes OUTPUT_DIR/validation/step-XXXXXXX.mp4 (ground truth | generated | trajectory over the
    generated video, side by side) and step-XXXXXXX.png (contact sheet of the generated frames with
    the trajectory drawn over them).
    """

    def __init__(self, config: TrainConfig, components: dict[str, Any] | None):
        self.config = config
        self.components = components  # vae, text encoder, ... (loaded on first use when None)
        self.clip = None

    def _held_out_clip(self):
        from ..data.reader import Dataset

        v, d = self.config.validation, self.config.data
        kwargs = dict(num_frames=d.num_frames, stride=d.stride, size=tuple(d.size), sampling="start",
                      seed=self.config.seed, pad=d.pad)
        clips = Dataset(d.dataset, split=v.split, **kwargs)
        if len(clips) == 0:
            clips = Dataset(d.dataset, split=d.split, **kwargs)
        ids = [r["id"] for r in clips.records]
        if v.clip is not None and v.clip not in ids:
            raise ConfigError(f"{self.config.source}: validation.clip {v.clip} is not in {d.dataset}")
        return clips[ids.index(v.clip) if v.clip is not None else 0]

    def pipeline(self, joint):
        from copy import deepcopy

        from .conditioning import encoder_dtypes, encoder_names, load_base_components

        if self.components is None:
            self.components = load_base_components(self.config.base, encoder_names(self.config.model),
                                                   dtypes=encoder_dtypes(joint.base.device))
        c = self.components
        scheduler = deepcopy(c["scheduler"])
        if self.config.model == "wan":
            from ..pipelines.pipeline_wan import MagicMotionWanPipeline

            ti2v = {"expand_timesteps": True} if uses_expand_timesteps(self.config) else {}
            return MagicMotionWanPipeline(
                tokenizer=c["tokenizer"], text_encoder=c["text_encoder"], vae=c["vae"], scheduler=scheduler,
                transformer=joint.base, controlnet=joint.controlnet, image_processor=c.get("image_processor"),
                image_encoder=c.get("image_encoder"), **ti2v,
            )
        from ..pipelines.pipeline_cogvideox import MagicMotionCogVideoXPipeline

        return MagicMotionCogVideoXPipeline(
            tokenizer=c["tokenizer"], text_encoder=c["text_encoder"], vae=c["vae"], transformer=joint.base,
            scheduler=scheduler, controlnet=joint.controlnet,
        )

    @torch.no_grad()
    def __call__(self, joint, accelerator, step: int, output_dir: Path) -> Path:
        from ..io import overlay, write_preview, write_video
        from ..trajectory import sparsify

        if self.clip is None:
            self.clip = self._held_out_clip()
        cfg, v = self.config, self.config.validation
        clip = self.clip
        trajectory = clip.trajectory
        if cfg.condition == "sparse_box":
            trajectory = sparsify(trajectory, max_keys=cfg.data.sparse_max_keys, mode="random", seed=v.seed)
        pipe = self.pipeline(joint)
        pipe.to(accelerator.device)
        pipe.set_progress_bar_config(disable=True)
        width, height = cfg.data.size
        was_training = joint.controlnet.training
        joint.controlnet.eval()
        try:
            with accelerator.autocast():
                out = pipe(image=clip.frames[0], prompt=clip.caption, trajectory=trajectory, kind=cfg.condition,
                           num_frames=cfg.data.num_frames, height=height, width=width,
                           num_inference_steps=v.num_inference_steps, guidance_scale=v.guidance_scale,
                           generator=torch.Generator().manual_seed(v.seed), output_type="np")
        finally:
            joint.controlnet.train(was_training)
        frames = np.clip(np.asarray(out.frames[0]) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        maps = out.trajectory_maps
        folder = Path(output_dir) / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        video = np.concatenate([clip.frames[: len(frames)], frames, overlay(frames, maps)], axis=2)
        path = write_video(folder / f"step-{step:07d}.mp4", video, fps=clip.fps)
        write_preview(folder / f"step-{step:07d}.png", frames, maps)
        return path
