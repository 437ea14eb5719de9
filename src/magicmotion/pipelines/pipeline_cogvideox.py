"""MagicMotion on CogVideoX image-to-video: diffusers' `CogVideoXImageToVideoPipeline` plus a Trajectory
ControlNet. This is the paper's main base (CogVideoX-5B-I2V, v-prediction, `CogVideoXDPMScheduler`).

Steps, in the parent's order, with the trajectory added:

1. `check_inputs`          prompt, size, frame count, kind; a base with learned positional embeddings
                           (5B I2V) only runs at its sample size (49 x 480 x 720)
2. `prepare_trajectory`    first frame + trajectory maps, resized and cropped together (shared with
                           Wan: `pipeline_trajectory.TrajectoryPipelineMixin`)
3. `encode_prompt`         (parent) T5 text embeddings, negative and positive stacked as one batch
4. `prepare_latents`       (parent) noise + first-frame latents (the image latent is sampled with the
                           generator, as the parent does)
5. `encode_trajectory`     the maps through the same VAE, scaled exactly as the image latents
6. denoising loop          `MagicMotionTransformer` (base + ControlNet), cond and uncond as one batch,
                           the trajectory latents in both guidance branches; with trajectory guidance
                           the conditional branch once more without the ControlNet
7. `decode_latents`        (parent) VAE decode + video post-processing

With `controlnet_conditioning_scale=0` the output equals `CogVideoXImageToVideoPipeline`'s for the same
components, seed and inputs.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import numpy as np
import torch
from diffusers import CogVideoXDPMScheduler, CogVideoXImageToVideoPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video import retrieve_timesteps
from diffusers.utils.torch_utils import get_module_execution_device
from PIL import Image

from ..errors import PipelineError
from .conditions import (MagicMotionPipelineOutput, TrajectoryInput, check_call_inputs, maps_to_video_tensor, onload,
                         release, trajectory_guidance_on, trajectory_guided)
from .guidance import GuidedPrediction, check_speed_options
from .pipeline_trajectory import TrajectoryPipelineMixin
from .settings import default_size, model_limits, pipeline_settings


class MagicMotionCogVideoXPipeline(TrajectoryPipelineMixin, CogVideoXImageToVideoPipeline):
    """Trajectory-controlled image-to-video with a CogVideoX I2V base.

    Components: `tokenizer`, `text_encoder` (T5), `vae` (`AutoencoderKLCogVideoX`), `transformer`
    (`CogVideoXTransformer3DModel`, 32 input channels), `controlnet` (`CogVideoXTrajectoryControlNet`),
    `scheduler` (`CogVideoXDPMScheduler` or `CogVideoXDDIMScheduler`, v-prediction).

    Load with `MagicMotionCogVideoXPipeline.from_pretrained(base, controlnet=PATH_OR_MODEL)` or
    `magicmotion.pipelines.load_pipeline`.
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    # Model offload, one group on the GPU at a time (`offload.offload_by_groups`): the transformer with
    # the ControlNet, the VAE alone
    offload_groups = (("text_encoder",), ("transformer", "controlnet"), ("vae",))
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds", "trajectory_latents"]

    def __init__(self, tokenizer, text_encoder, vae, transformer, controlnet, scheduler):
        super().__init__(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                         scheduler=scheduler)
        self.register_modules(controlnet=controlnet)
        if controlnet is not None and transformer is not None:
            controlnet.check_compatible(transformer)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, controlnet=None, **kwargs):
        """Load a CogVideoX I2V base (a local diffusers folder or a hub id) with a Trajectory ControlNet.

        `controlnet`: a `CogVideoXTrajectoryControlNet`, a folder saved with `save_pretrained`, or a
        released `.pt` checkpoint (e.g. `stage2/box.pt`, imported with
        `magicmotion.models.load_official_checkpoint`).
        """
        controlnet_source = controlnet
        if isinstance(controlnet, (str, os.PathLike)):
            from .loading import load_controlnet

            controlnet = load_controlnet(controlnet, model="cogvideox", dtype=kwargs.get("dtype", kwargs.get("torch_dtype")),
                                         base=pretrained_model_name_or_path)
        if controlnet is not None:
            kwargs["controlnet"] = controlnet
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        from .loading import attach_settings

        return attach_settings(pipe, "cogvideox", pretrained_model_name_or_path, controlnet_source)

    # ------------------------------------------------------------------------------------ steps

    @property
    def fixed_size(self) -> tuple[int, int, int] | None:
        """(W, H, frames) the base only works at (learned positional embeddings, as CogVideoX-5B-I2V),
        or None when any size works."""
        cfg = self.transformer.config
        if not cfg.use_learned_positional_embeddings:
            return None
        s = self.vae_scale_factor_spatial
        return cfg.sample_width * s, cfg.sample_height * s, cfg.sample_frames

    def spatial_multiple(self) -> int:
        """Height and width must be multiples of this: VAE downsampling x patch size (16)."""
        return self.vae_scale_factor_spatial * int(self.transformer.config.patch_size)

    def default_size(self, trajectory_wh: tuple[int, int] | None = None) -> tuple[int, int]:
        """(W, H) when none is given: the model's recommended size (the base's sample size, 720 x 480
        for CogVideoX-5B-I2V, unless its magicmotion.json says otherwise)."""
        return default_size(pipeline_settings(self), self.spatial_multiple(), trajectory_wh or (720, 480))

    def limits(self):
        """What this base can run (`ModelLimits`): only its sample size with learned positional embeddings."""
        return model_limits("cogvideox", dict(self.transformer.config), dict(self.vae.config))

    # Twin of magicmotion.pipelines.pipeline_wan.MagicMotionWanPipeline.check_inputs, less Wan's A14B
    # guidance_scale_2 and context-parallel checks: each pipeline spells out its own signature, as in diffusers.
    def check_inputs(
        self,
        prompt,
        negative_prompt,
        kind: str,
        num_frames: int,
        height: int,
        width: int,
        num_inference_steps: int,
        guidance_scale: float,
        trajectory_frames: int | None = None,
        callback_on_step_end_tensor_inputs=None,
        trajectory_guidance_scale: float = 1.0,
    ) -> None:
        """Raise PipelineError on inputs the pipeline cannot run with (before any model runs)."""
        check_call_inputs(self, prompt, negative_prompt, kind, num_frames, height, width, num_inference_steps,
                          guidance_scale, trajectory_frames, callback_on_step_end_tensor_inputs,
                          trajectory_guidance_scale)
        self.limits().check(width, height, num_frames)

    def encode_trajectory(self, maps: np.ndarray | torch.Tensor, device: torch.device,
                          dtype: torch.dtype, generator: torch.Generator | None = None) -> torch.Tensor:
        """Trajectory maps (T, H, W, 3) uint8 -> trajectory latents (1, F, 16, H/8, W/8).

        The VAE latent's mode (deterministic), or, when the model's settings say `map_encoding:
        "sample"` (the authors' release, and checkpoints imported from it), a sample of the VAE
        posterior drawn with `generator`, as the release does; scaled exactly as `prepare_latents`
        scales the first-frame latents (times `scaling_factor`, or divided by it when
        `invert_scale_latents`).
        """
        sample = pipeline_settings(self)["map_encoding"] == "sample"
        return cogvideox_trajectory_latents(self.vae, maps, generator if sample else None,
                                            sample=sample).to(device=device, dtype=dtype)

    def joint_transformer(self):
        """Base + ControlNet as one model (`magicmotion.models.MagicMotionTransformer`)."""
        from ..models import MagicMotionTransformer

        return MagicMotionTransformer(transformer=self.transformer, controlnet=self.controlnet, freeze_base=False)

    # ------------------------------------------------------------------------------------ call

    # Twin of magicmotion.pipelines.pipeline_wan.MagicMotionWanPipeline.__call__: the shared arguments and the same
    # steps, written out per pipeline as diffusers does; the loop differs (CogVideoX's (B, F, C, H, W) latents,
    # its DPM-solver step, dynamic CFG).
    @torch.no_grad()
    def __call__(
        self,
        image,
        prompt: str | list[str] | None = None,
        trajectory: TrajectoryInput | None = None,
        kind: str = "box",
        negative_prompt: str | list[str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        controlnet_conditioning_scale: float | list[float] = 1.0,
        trajectory_guidance_scale: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        eta: float = 0.0,
        use_dynamic_cfg: bool = False,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        max_sequence_length: int | None = None,
        cfg_mode: str = "batched",
        control_every: int = 1,
        control_dense: float = 0.0,
        control_branches: str = "both",
    ) -> MagicMotionPipelineOutput | tuple:
        """Generate videos whose objects follow `trajectory`.

        Args as `MagicMotionWanPipeline.__call__`, and:
            height, width: default the base's sample size (480 x 720 for CogVideoX-5B-I2V, the only
                size that base works at).
            eta, use_dynamic_cfg: as in diffusers' CogVideoX pipelines.
            max_sequence_length: text tokens; default the transformer's `max_text_seq_length` (226).
            cfg_mode, control_every, control_dense, control_branches: speed options, off by default
                (`magicmotion.pipelines.guidance`).
        Returns:
            `MagicMotionPipelineOutput(frames, trajectory_maps)` or, with return_dict=False,
            (frames, trajectory_maps).
        """
        if trajectory is None:
            raise PipelineError("a trajectory is required (spec path, Trajectory or rendered maps)")
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        check_speed_options(cfg_mode, control_every, control_dense, control_branches)
        max_sequence_length = max_sequence_length or self.transformer.config.max_text_seq_length

        # 1-2. the model's recommended settings where none are given, conditions and checks
        settings = pipeline_settings(self)
        num_inference_steps = settings["num_inference_steps"] if num_inference_steps is None else num_inference_steps
        guidance_scale = settings["guidance_scale"] if guidance_scale is None else guidance_scale
        cond, num_frames, height, width = self.prepare_trajectory(image, trajectory, kind, num_frames, height, width)
        self.check_inputs(prompt, negative_prompt, kind, num_frames, height, width, num_inference_steps,
                          guidance_scale, cond.num_frames, callback_on_step_end_tensor_inputs,
                          trajectory_guidance_scale)

        self._guidance_scale = guidance_scale
        self._current_timestep = None
        self._attention_kwargs = attention_kwargs
        self._interrupt = False
        device = self._execution_device
        batch_size = 1 if isinstance(prompt, str) else len(prompt)
        cfg = guidance_scale > 1.0

        # 3. text embeddings, [uncond, cond] as one batch
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt=prompt, negative_prompt=negative_prompt, do_classifier_free_guidance=cfg,
            num_videos_per_prompt=1, max_sequence_length=max_sequence_length, device=device,
        )
        dtype = prompt_embeds.dtype

        # 4. timesteps and latents (noise + first-frame latents)
        timesteps, num_inference_steps = retrieve_timesteps(self.scheduler, num_inference_steps, device)
        self._num_timesteps = len(timesteps)
        latent_frames = (num_frames - 1) // self.vae_scale_factor_temporal + 1
        patch_size_t = self.transformer.config.patch_size_t
        additional_frames = 0  # CogVideoX 1.5 pads the latent frames to a multiple of patch_size_t
        if patch_size_t is not None and latent_frames % patch_size_t != 0:
            additional_frames = patch_size_t - latent_frames % patch_size_t
        first_frame = Image.fromarray(cond.image)
        image_tensor = self.video_processor.preprocess(first_frame, height=height, width=width).to(device, dtype=dtype)
        image_tensor = image_tensor.repeat(batch_size, 1, 1, 1)  # one first frame per video
        latents, image_latents = self.prepare_latents(
            image_tensor, batch_size, self.transformer.config.in_channels // 2,
            num_frames + additional_frames * self.vae_scale_factor_temporal, height, width, dtype, device,
            generator, latents,
        )

        # 5. trajectory latents, one copy per video (padded at the front like the image latents)
        gen = generator[0] if isinstance(generator, list) else generator
        trajectory_latents = self.encode_trajectory(cond.maps, device, dtype, gen)
        pad = latents.shape[1] - trajectory_latents.shape[1]
        if pad > 0:
            trajectory_latents = torch.cat([trajectory_latents[:, :1].repeat(1, pad, 1, 1, 1), trajectory_latents], 1)
        trajectory_latents = trajectory_latents.repeat(batch_size, 1, 1, 1, 1)

        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        image_rotary_emb = (
            self._prepare_rotary_positional_embeddings(height, width, latents.size(1), device)
            if self.transformer.config.use_rotary_positional_embeddings else None
        )
        ofs_emb = None if self.transformer.config.ofs_embed_dim is None else latents.new_full((1,), fill_value=2.0)

        # 6. denoising loop: cond and uncond in one batch, the trajectory in both
        model = self.joint_transformer()
        guide = trajectory_guidance_on(model, trajectory_guidance_scale, controlnet_conditioning_scale)
        predict = GuidedPrediction(model, len(timesteps), controlnet_conditioning_scale, cfg_mode, control_every,
                                   control_dense, control_branches)
        num_warmup_steps = max(len(timesteps) - num_inference_steps * self.scheduler.order, 0)
        onload(self.transformer)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            old_pred_original_sample = None  # for DPM-solver++
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                self._current_timestep = t
                model_input = self.scheduler.scale_model_input(latents, t)
                model_input = torch.cat([model_input, image_latents], dim=2)
                noise_uncond, controlled = predict(  # controlled: the text-conditional prediction with control
                    i, model_input, trajectory_latents, t, negative_prompt_embeds if cfg else None, prompt_embeds,
                    shared=dict(image_rotary_emb=image_rotary_emb, ofs=ofs_emb, attention_kwargs=attention_kwargs),
                )
                controlled = noise_pred = controlled.float()

                if use_dynamic_cfg:
                    self._guidance_scale = 1 + guidance_scale * (
                        (1 - math.cos(math.pi * ((num_inference_steps - t.item()) / num_inference_steps) ** 5.0)) / 2
                    )
                if cfg:
                    noise_pred = noise_uncond.float() + self.guidance_scale * (controlled - noise_uncond.float())
                if guide:  # the conditional branch again, without control
                    with model.cache_context("free"):  # its own cache state, when a cache is enabled
                        free = model(
                            hidden_states=model_input, timestep=t.expand(model_input.shape[0]),
                            encoder_hidden_states=prompt_embeds, trajectory_latents=trajectory_latents,
                            conditioning_scale=0.0, image_rotary_emb=image_rotary_emb,
                            ofs=ofs_emb, attention_kwargs=attention_kwargs, return_dict=False,
                        )[0].float()
                    noise_pred = trajectory_guided(noise_pred, controlled, free, trajectory_guidance_scale)

                if not isinstance(self.scheduler, CogVideoXDPMScheduler):
                    latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
                else:
                    latents, old_pred_original_sample = self.scheduler.step(
                        noise_pred, old_pred_original_sample, t, timesteps[i - 1] if i > 0 else None, latents,
                        **extra_step_kwargs, return_dict=False,
                    )
                latents = latents.to(dtype)

                latents, prompt_embeds, negative_prompt_embeds, trajectory_latents = self.step_end(
                    callback_on_step_end, i, t, callback_on_step_end_tensor_inputs, latents=latents,
                    prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
                    trajectory_latents=trajectory_latents)

                if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % self.scheduler.order == 0):
                    progress_bar.update()
        release(self.transformer)
        self._current_timestep = None

        # 7. decode (dropping CogVideoX 1.5's padding frames)
        if output_type == "latent":
            video = latents
        else:
            video = self.decode_latents(latents[:, additional_frames:])
            video = self.video_processor.postprocess_video(video=video, output_type=output_type)
        self.maybe_free_model_hooks()
        maps = cond.maps_uint8()
        if not return_dict:
            return (video, maps)
        return MagicMotionPipelineOutput(frames=video, trajectory_maps=maps)


@torch.no_grad()
def cogvideox_trajectory_latents(vae, maps: np.ndarray | torch.Tensor, generator: torch.Generator | None = None,
                                 sample: bool = False) -> torch.Tensor:
    """Trajectory maps -> scaled CogVideoX VAE latents (1, F, 16, H/8, W/8), float32.

    maps: uint8 (T, H, W, 3) or float (T, 3, H, W) in [0, 1]. The posterior's mode, or with `sample`
    a draw from it with `generator` (the release's way). Training uses the same function.
    """
    video = maps_to_video_tensor(maps).to(device=get_module_execution_device(vae), dtype=vae.dtype)
    dist = vae.encode(video).latent_dist
    z = (dist.sample(generator) if sample else dist.mode()).float().permute(0, 2, 1, 3, 4)  # (B, F, C, H, W)
    scale = vae.config.scaling_factor
    return z / scale if vae.config.invert_scale_latents else z * scale


__all__ = ["MagicMotionCogVideoXPipeline", "cogvideox_trajectory_latents"]
