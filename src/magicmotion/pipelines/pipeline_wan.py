"""MagicMotion on Wan2.1 image-to-video: diffusers' `WanImageToVideoPipeline` plus a Trajectory ControlNet.

The steps are the parent's, in the parent's order, with the trajectory added:

1. `check_inputs`          prompt, size, frame count, kind, guidance; nothing runs on bad input
2. `prepare_trajectory`    first frame + trajectory maps, resized and cropped together
3. `encode_prompt`         (parent) UMT5 text embeddings, positive and negative
4. `encode_image`          (parent) CLIP image embeddings, only for bases with an image branch (14B)
5. `prepare_latents`       (parent) noise + the first-frame condition (mask 4 ch + image latents 16 ch)
6. `encode_trajectory`     the maps through the same VAE, normalised exactly as the image latents
7. denoising loop          `MagicMotionTransformer` (base + ControlNet), cond and uncond as one batch,
                           the trajectory latents in both guidance branches; with trajectory guidance
                           the conditional branch once more without the ControlNet (speed options:
                           `magicmotion.pipelines.guidance`)
8. `decode_latents`        VAE decode + video post-processing

With `controlnet_conditioning_scale=0` the output equals `WanImageToVideoPipeline`'s for the same
components, seed and inputs.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import numpy as np
import torch
from diffusers import WanImageToVideoPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.wan.pipeline_wan_i2v import retrieve_latents
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils.torch_utils import get_module_execution_device
from diffusers.video_processor import VideoProcessor
from PIL import Image

from ..errors import PipelineError
from .conditions import (Conditions, MagicMotionPipelineOutput, check_call_inputs, TrajectoryInput, maps_to_video_tensor, onload,
                         prepare_conditions, read_trajectory, release, trajectory_frames, trajectory_guidance_on,
                         trajectory_guided, trajectory_size)
from .guidance import GuidedPrediction, check_speed_options
from .settings import default_size, model_limits, pipeline_settings

# Wan2.1 pads every prompt to umT5's 512 tokens (and diffusers splits a 14B base's context into image
# and text at 512); a base trained with fewer, like the shipped tiny model, says so in its tokenizer.
WAN_TEXT_TOKENS = 512


def wan_text_length(tokenizer, transformer_config=None) -> int:
    """The text tokens a Wan base takes: its tokenizer's `model_max_length` where that is under 512,
    else 512 (always 512 for a base with a CLIP image branch)."""
    if transformer_config is not None and transformer_config.get("image_dim") is not None:
        return WAN_TEXT_TOKENS
    n = getattr(tokenizer, "model_max_length", None)
    return int(n) if isinstance(n, int) and 0 < n < WAN_TEXT_TOKENS else WAN_TEXT_TOKENS


class MagicMotionWanPipeline(WanImageToVideoPipeline):
    """Trajectory-controlled image-to-video with a Wan2.1 I2V base.

    Components: `tokenizer`, `text_encoder` (UMT5), `vae` (`AutoencoderKLWan`), `scheduler` (flow matching:
    `UniPCMultistepScheduler` as Wan uses, or `FlowMatchEulerDiscreteScheduler`), `transformer`
    (`WanTransformer3DModel`, 36 input channels), `controlnet` (`WanTrajectoryControlNet`), and for
    the 14B I2V base `image_encoder` (CLIP) + `image_processor`.

    Load with `MagicMotionWanPipeline.from_pretrained(base, controlnet=PATH_OR_MODEL)` or
    `magicmotion.pipelines.load_pipeline`.
    """

    # The ControlNet is outside the chain: under model offload it gets its own hook and stays on the
    # GPU through the denoising loop, as diffusers' ControlNet pipelines do.
    model_cpu_offload_seq = "text_encoder->image_encoder->transformer->vae"
    _optional_components = ["image_encoder", "image_processor"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds", "trajectory_latents"]

    @property
    def fps(self) -> float:
        """The frame rate to write videos at: the model's recommended (`pipeline_settings`)."""
        return float(pipeline_settings(self)["fps"])

    def __init__(
        self,
        tokenizer,
        text_encoder,
        vae,
        scheduler,
        transformer,
        controlnet,
        image_processor=None,
        image_encoder=None,
        expand_timesteps: bool = False,
    ):
        # Not the parent's __init__: it registers Wan2.2's `transformer_2`, which MagicMotion does not use.
        DiffusionPipeline.__init__(self)
        if expand_timesteps:
            raise PipelineError("Wan2.2 TI2V bases (expand_timesteps=True) are not supported; use a Wan2.1 I2V base")
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, image_encoder=image_encoder,
            transformer=transformer, controlnet=controlnet, scheduler=scheduler, image_processor=image_processor,
        )
        # the parent's `prepare_latents` reads this
        self.register_to_config(expand_timesteps=False)
        if controlnet is not None and transformer is not None:
            controlnet.check_compatible(transformer)
        self.vae_scale_factor_temporal = self.vae.config.scale_factor_temporal if getattr(self, "vae", None) else 4
        self.vae_scale_factor_spatial = self.vae.config.scale_factor_spatial if getattr(self, "vae", None) else 8
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, controlnet=None, **kwargs):
        """Load a Wan2.1 I2V base (a local diffusers folder or a hub id) with a Trajectory ControlNet.

        `controlnet`: a `WanTrajectoryControlNet`, a folder saved with `save_pretrained`, or a released
        `.pt` checkpoint (imported with `magicmotion.models.load_official_checkpoint`). A folder saved
        from this pipeline (with its `controlnet/`) needs none.
        """
        controlnet_source = controlnet
        if isinstance(controlnet, (str, os.PathLike)):
            from .loading import load_controlnet

            controlnet = load_controlnet(controlnet, model="wan", dtype=kwargs.get("dtype", kwargs.get("torch_dtype")),
                                         base=pretrained_model_name_or_path)
        if controlnet is not None:
            kwargs["controlnet"] = controlnet
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        from .loading import attach_settings

        return attach_settings(pipe, "wan", pretrained_model_name_or_path, controlnet_source)

    # ------------------------------------------------------------------------------------ steps

    def spatial_multiple(self) -> int:
        """Height and width must be multiples of this: VAE downsampling x patch size (16 for Wan2.1)."""
        return self.vae_scale_factor_spatial * int(self.transformer.config.patch_size[1])

    def default_size(self, trajectory_wh: tuple[int, int]) -> tuple[int, int]:
        """(W, H) when none is given: the model's recommended size, or the trajectory's size scaled down
        to its recommended area (Wan2.1 480P: ~832x480; the shipped tiny model: 64x64), rounded down to
        the spatial multiple."""
        return default_size(pipeline_settings(self), self.spatial_multiple(), trajectory_wh)

    def limits(self):
        """What this base can run (`ModelLimits`): its rotary table covers `rope_max_seq_len` tokens
        per axis."""
        return model_limits("wan", dict(self.transformer.config), dict(self.vae.config))

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

    def encode_trajectory(self, maps: np.ndarray | torch.Tensor, device: torch.device,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Trajectory maps (T, H, W, 3) uint8 -> trajectory latents (1, 16, F, H/8, W/8).

        The VAE latent's mode (deterministic), normalised exactly as `prepare_latents` normalises the
        first-frame latents: (z - latents_mean) / latents_std.
        """
        return wan_trajectory_latents(self.vae, maps).to(device=device, dtype=dtype)

    def decode_latents(self, latents: torch.Tensor, output_type: str = "np"):
        """Latents (B, 16, F, h, w) -> video, as the parent does after its loop."""
        latents = latents.to(device=get_module_execution_device(self.vae), dtype=self.vae.dtype)
        mean, inv_std = _wan_latent_stats(self.vae, latents)
        latents = latents / inv_std + mean
        video = self.vae.decode(latents, return_dict=False)[0]
        return self.video_processor.postprocess_video(video, output_type=output_type)

    def joint_transformer(self):
        """Base + ControlNet as one model (`magicmotion.models.MagicMotionTransformer`)."""
        from ..models import MagicMotionTransformer

        return MagicMotionTransformer(transformer=self.transformer, controlnet=self.controlnet, freeze_base=False)

    # ------------------------------------------------------------------------------------ call

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

        Args:
            image: the first frame: a path, a PIL image or uint8 (H, W, 3); shared by all prompts.
            prompt: a text or a list of texts (one video each).
            trajectory: a spec (JSON path or `magicmotion.trajectory.Trajectory`), rendered maps
                (uint8 (T, H, W, 3) or a video path), or float maps (T, 3, H, W) in [0, 1] at the
                output size. Shared by all prompts.
            kind: "mask", "box" or "sparse_box": how a spec is rendered.
            negative_prompt: text(s) for the unconditional branch (default empty).
            num_frames: frames to generate; default the trajectory's; (T - 1) % 4 == 0.
            height, width: output size (multiples of 16); default the trajectory's size, scaled down
                to ~832x480 pixels if larger. Image and trajectory are resized and centre-cropped to it.
            num_inference_steps, guidance_scale: sampling steps; classifier-free guidance weight
                (guidance off at <= 1).
            controlnet_conditioning_scale: weight of the control residuals (a float or one per control
                block); 0 gives the base model's video.
            trajectory_guidance_scale: classifier-free guidance with the trajectory as the condition
                (not in the paper): each step also runs the text-conditional branch without the
                ControlNet and moves the prediction `scale - 1` times further from it, towards the
                controlled one. 1 (default) is off and costs nothing; 0 gives the base's video.
            generator, latents: randomness, as in diffusers.
            output_type: "np" (float (B, T, H, W, 3) in [0, 1]), "pil", "pt" or "latent".
            max_sequence_length: text tokens; default `wan_text_length` (512, or what a base trained
                with fewer states in its tokenizer).
            callback_on_step_end: `fn(pipe, step, timestep, tensors) -> dict` after each step, with the
                tensors named in `callback_on_step_end_tensor_inputs` ("latents", "prompt_embeds",
                "negative_prompt_embeds", "trajectory_latents"); a returned tensor replaces it.
            cfg_mode: "batched" (default): the two guidance branches as one batch; "sequential": one after
                the other (half the activations, the same video within float rounding).
            control_every, control_dense: run the ControlNet on every n-th step only, reusing its last
                residuals in between, and on every step of the first `control_dense` fraction (default 1
                and 0: every step). See `magicmotion.pipelines.guidance`.
            control_branches: "both" (default), or "cond": one ControlNet pass, on the conditional text,
                whose residuals both guidance branches get.
        Returns:
            `MagicMotionPipelineOutput(frames, trajectory_maps)` or, with return_dict=False,
            (frames, trajectory_maps).
        """
        if trajectory is None:
            raise PipelineError("a trajectory is required (spec path, Trajectory or rendered maps)")
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        check_speed_options(cfg_mode, control_every, control_dense, control_branches)

        # 1-2. the model's recommended settings where none are given, conditions and checks
        settings = pipeline_settings(self)
        num_inference_steps = settings["num_inference_steps"] if num_inference_steps is None else num_inference_steps
        guidance_scale = settings["guidance_scale"] if guidance_scale is None else guidance_scale
        cond, num_frames, height, width = self.prepare_trajectory(image, trajectory, kind, num_frames, height, width)
        self.check_inputs(prompt, negative_prompt, kind, num_frames, height, width, num_inference_steps,
                          guidance_scale, cond.num_frames, callback_on_step_end_tensor_inputs,
                          trajectory_guidance_scale)

        self._guidance_scale = guidance_scale
        self._attention_kwargs = attention_kwargs
        self._current_timestep = None
        self._interrupt = False
        device = self._execution_device
        batch_size = 1 if isinstance(prompt, str) else len(prompt)
        first_frame = Image.fromarray(cond.image)

        # 3. text embeddings
        max_sequence_length = max_sequence_length or wan_text_length(self.tokenizer, self.transformer.config)
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt=prompt, negative_prompt=negative_prompt,
            do_classifier_free_guidance=self.do_classifier_free_guidance,
            max_sequence_length=max_sequence_length, device=device,
        )
        transformer_dtype = self.transformer.dtype
        prompt_embeds = prompt_embeds.to(transformer_dtype)
        if negative_prompt_embeds is not None:
            negative_prompt_embeds = negative_prompt_embeds.to(transformer_dtype)

        # 4. CLIP image embeddings (only Wan2.1-I2V-14B has an image branch)
        image_embeds = None
        if self.transformer.config.image_dim is not None:
            if self.image_encoder is None:
                raise PipelineError("this Wan base has an image branch (image_dim) but the pipeline has no image_encoder")
            image_embeds = self.encode_image(first_frame, device).repeat(batch_size, 1, 1).to(transformer_dtype)

        # 5. timesteps and latents (noise + first-frame condition)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        image_tensor = self.video_processor.preprocess(first_frame, height=height, width=width).to(
            device, dtype=torch.float32
        )
        latents, condition = self.prepare_latents(
            image_tensor, batch_size, self.vae.config.z_dim, height, width, num_frames, torch.float32, device,
            generator, latents,
        )

        # 6. trajectory latents, one copy per video
        trajectory_latents = self.encode_trajectory(cond.maps, device, torch.float32).repeat(batch_size, 1, 1, 1, 1)

        # 7. denoising loop: cond and uncond in one batch (or one after the other), the trajectory in both
        model = self.joint_transformer()
        guide = trajectory_guidance_on(model, trajectory_guidance_scale, controlnet_conditioning_scale)
        cfg = self.do_classifier_free_guidance
        predict = GuidedPrediction(model, len(timesteps), controlnet_conditioning_scale, cfg_mode, control_every,
                                   control_dense, control_branches)
        self._num_timesteps = len(timesteps)
        num_warmup_steps = len(timesteps) - num_inference_steps * self.scheduler.order
        onload(self.transformer)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                self._current_timestep = t
                model_input = torch.cat([latents, condition], dim=1).to(transformer_dtype)
                traj_input = trajectory_latents.to(transformer_dtype)
                noise_uncond, controlled = predict(  # controlled: the text-conditional prediction with control
                    i, model_input, traj_input, t, negative_prompt_embeds if cfg else None, prompt_embeds,
                    per_sample=dict(encoder_hidden_states_image=image_embeds),
                    shared=dict(attention_kwargs=attention_kwargs),
                )
                noise_pred = controlled
                if cfg:
                    noise_pred = noise_uncond + guidance_scale * (controlled - noise_uncond)
                if guide:  # the conditional branch again, without control
                    free = model(
                        hidden_states=model_input, timestep=t.expand(model_input.shape[0]),
                        encoder_hidden_states=prompt_embeds, trajectory_latents=traj_input, conditioning_scale=0.0,
                        encoder_hidden_states_image=image_embeds, attention_kwargs=attention_kwargs, return_dict=False,
                    )[0]
                    noise_pred = trajectory_guided(noise_pred, controlled, free, trajectory_guidance_scale)

                latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]

                if callback_on_step_end is not None:
                    tensors = dict(latents=latents, prompt_embeds=prompt_embeds,
                                   negative_prompt_embeds=negative_prompt_embeds,
                                   trajectory_latents=trajectory_latents)
                    outputs = callback_on_step_end(self, i, t, {k: tensors[k] for k in callback_on_step_end_tensor_inputs})
                    latents = outputs.pop("latents", latents)
                    prompt_embeds = outputs.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = outputs.pop("negative_prompt_embeds", negative_prompt_embeds)
                    trajectory_latents = outputs.pop("trajectory_latents", trajectory_latents)

                if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % self.scheduler.order == 0):
                    progress_bar.update()
        release(self.transformer)
        self._current_timestep = None

        # 8. decode
        video = latents if output_type == "latent" else self.decode_latents(latents, output_type)
        self.maybe_free_model_hooks()
        maps = cond.maps_uint8()
        if not return_dict:
            return (video, maps)
        return MagicMotionPipelineOutput(frames=video, trajectory_maps=maps)


def _wan_latent_stats(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents_mean, 1 / latents_std), shaped (1, z, 1, 1, 1), as diffusers' Wan pipelines build them."""
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(like.device, like.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(like.device, like.dtype)
    return mean, inv_std


@torch.no_grad()
def wan_trajectory_latents(vae, maps: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Trajectory maps -> normalised Wan VAE latents (1, z, F, H/8, W/8), float32.

    maps: uint8 (T, H, W, 3) or float (T, 3, H, W) in [0, 1]. Training uses the same function, so the
    ControlNet sees the same latents at training and inference.
    """
    video = maps_to_video_tensor(maps).to(device=get_module_execution_device(vae), dtype=vae.dtype)
    z = retrieve_latents(vae.encode(video), sample_mode="argmax").float()
    mean, inv_std = _wan_latent_stats(vae, z)
    return (z - mean) * inv_std


__all__ = ["MagicMotionWanPipeline", "wan_trajectory_latents"]
