"""MagicMotion on Wan image-to-video: diffusers' `WanImageToVideoPipeline` plus a Trajectory ControlNet.

Bases: Wan2.1 I2V (and Fun-InP), Wan2.2 TI2V-5B (`expand_timesteps`: the first frame goes in as clean
latents, one timestep per token, the 48-channel VAE) and Wan2.2 I2V-A14B (two experts: `transformer`
for high noise, `transformer_2` for low noise, switched at `boundary_ratio`), each as diffusers runs it.
An A14B base has a ControlNet per expert, `controlnet` and `controlnet_2`, switched with the expert.

The steps are the parent's, in the parent's order, with the trajectory added:

1. `check_inputs`          prompt, size, frame count, kind, guidance; nothing runs on bad input
2. `prepare_trajectory`    first frame + trajectory maps, resized and cropped together (shared with
                           CogVideoX: `pipeline_trajectory.TrajectoryPipelineMixin`)
3. `encode_prompt`         (parent) UMT5 text embeddings, positive and negative
4. `encode_image`          (parent) CLIP image embeddings, only for bases with an image branch (14B, Fun-InP)
5. `prepare_latents`       (parent) noise + the first-frame condition (mask 4 ch + image latents 16 ch;
                           TI2V: the first frame's latents and a mask that keeps them clean)
6. `encode_trajectory`     the maps through the same VAE, normalised exactly as the image latents
7. denoising loop          `MagicMotionTransformer` (base + ControlNet; A14B: the expert and its
                           ControlNet for the step's timestep), cond and uncond as one batch, the
                           trajectory latents in both guidance branches; with trajectory guidance the
                           conditional branch once more without the ControlNet (speed options:
                           `magicmotion.pipelines.guidance`)
8. `decode_latents`        VAE decode + video post-processing

With `controlnet_conditioning_scale=0` the output equals `WanImageToVideoPipeline`'s for the same
components, seed and inputs. What the pipeline reads from a Wan base (its text length, whether the
ControlNets fit it, the VAE's latent normalisation) is in `wan_base`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import numpy as np
import torch
from diffusers import WanImageToVideoPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils.torch_utils import get_module_execution_device
from diffusers.video_processor import VideoProcessor
from PIL import Image

from ..errors import PipelineError
from .conditions import (MagicMotionPipelineOutput, TrajectoryInput, check_call_inputs, onload, release,
                         trajectory_guidance_on, trajectory_guided)
from .guidance import GuidedPrediction, batch_timestep, check_speed_options
from .parallel import check_pipeline_split
from .pipeline_trajectory import TrajectoryPipelineMixin
from .settings import default_size, model_limits, pipeline_settings
from .wan_base import (check_wan_components, expert_controlnet_folders, wan_latent_stats, wan_text_length,
                       wan_trajectory_latents)


class MagicMotionWanPipeline(TrajectoryPipelineMixin, WanImageToVideoPipeline):
    """Trajectory-controlled image-to-video with a Wan I2V base (Wan2.1 I2V, Wan2.2 TI2V-5B or I2V-A14B).

    Components: `tokenizer`, `text_encoder` (UMT5), `vae` (`AutoencoderKLWan`), `scheduler` (flow matching:
    `UniPCMultistepScheduler` as Wan uses, or `FlowMatchEulerDiscreteScheduler`), `transformer`
    (`WanTransformer3DModel`: 36 input channels, TI2V 48), `controlnet` (`WanTrajectoryControlNet`), for
    the bases with an image branch (Wan2.1-I2V-14B, Fun-InP) `image_encoder` (CLIP) + `image_processor`, and for a two-expert A14B base
    `transformer_2` (the low-noise expert) + `controlnet_2` (its ControlNet). Config: `boundary_ratio`
    (A14B: `transformer` runs the steps with t >= boundary_ratio * num_train_timesteps) and
    `expand_timesteps` (TI2V), as in diffusers.

    Load with `MagicMotionWanPipeline.from_pretrained(base, controlnet=PATH_OR_MODEL)` (A14B: also
    `controlnet_2=`) or `magicmotion.pipelines.load_pipeline`.
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->transformer->transformer_2->vae"
    # Model offload, one group on the GPU at a time (`offload.offload_by_groups`): each expert with its
    # ControlNet, the VAE alone (encoding the first frame and the maps, decoding)
    offload_groups = (("text_encoder",), ("image_encoder",), ("transformer", "controlnet"),
                      ("transformer_2", "controlnet_2"), ("vae",))
    _optional_components = ["image_encoder", "image_processor", "transformer_2", "controlnet_2"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds", "trajectory_latents"]

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
        transformer_2=None,
        controlnet_2=None,
        boundary_ratio: float | None = None,
        expand_timesteps: bool = False,
    ):
        # Not the parent's __init__, which has no ControlNets; the same registrations otherwise.
        DiffusionPipeline.__init__(self)
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, image_encoder=image_encoder,
            transformer=transformer, transformer_2=transformer_2, controlnet=controlnet, controlnet_2=controlnet_2,
            scheduler=scheduler, image_processor=image_processor,
        )
        self.register_to_config(boundary_ratio=boundary_ratio, expand_timesteps=bool(expand_timesteps))
        if transformer is not None:
            check_wan_components(transformer, controlnet, transformer_2, controlnet_2, boundary_ratio,
                                 bool(expand_timesteps))
        self.vae_scale_factor_temporal = self.vae.config.scale_factor_temporal if getattr(self, "vae", None) else 4
        self.vae_scale_factor_spatial = self.vae.config.scale_factor_spatial if getattr(self, "vae", None) else 8
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)

    @property
    def two_experts(self) -> bool:
        """Whether this is a two-expert Wan2.2 A14B pipeline (`transformer_2` switched in at the boundary)."""
        return self.config.boundary_ratio is not None and self.transformer_2 is not None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, controlnet=None, controlnet_2=None, **kwargs):
        """Load a Wan I2V base (a local diffusers folder or a hub id) with a Trajectory ControlNet.

        `controlnet`: a `WanTrajectoryControlNet`, a folder saved with `save_pretrained`, or a released
        `.pt` checkpoint (imported with `magicmotion.models.load_official_checkpoint`). A folder saved
        from this pipeline (with its `controlnet/`, A14B also `controlnet_2/`) needs none.
        `controlnet_2`: for a two-expert Wan2.2 A14B base, the low-noise expert's ControlNet (`controlnet`
        is then the high-noise expert's); or leave it out and give as `controlnet` one folder holding
        both, `controlnet/` and `controlnet_2/`.
        """
        from .loading import attach_settings, load_controlnet

        controlnet_source = controlnet
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        if controlnet_2 is None and isinstance(controlnet, (str, os.PathLike)):
            controlnet, controlnet_2 = expert_controlnet_folders(controlnet)
        loaded = {}
        for name, cn in (("controlnet", controlnet), ("controlnet_2", controlnet_2)):
            if isinstance(cn, (str, os.PathLike)):
                cn = load_controlnet(cn, model="wan", dtype=dtype, base=pretrained_model_name_or_path)
            if cn is not None:
                loaded[name] = cn
        pipe = super().from_pretrained(pretrained_model_name_or_path, **loaded, **kwargs)
        return attach_settings(pipe, "wan", pretrained_model_name_or_path, controlnet_source)

    # ------------------------------------------------------------------------------------ steps

    def spatial_multiple(self) -> int:
        """Height and width must be multiples of this: VAE downsampling x patch size (16 for Wan2.1 and
        A14B, 32 for Wan2.2 TI2V-5B)."""
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

    # Twin: MagicMotionCogVideoXPipeline.check_inputs, the same checks less guidance_scale_2 and the split.
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
        guidance_scale_2: float | None = None,
    ) -> None:
        """Raise PipelineError on inputs the pipeline cannot run with (before any model runs)."""
        check_call_inputs(self, prompt, negative_prompt, kind, num_frames, height, width, num_inference_steps,
                          guidance_scale, trajectory_frames, callback_on_step_end_tensor_inputs,
                          trajectory_guidance_scale)
        if guidance_scale_2 is not None:
            if self.config.boundary_ratio is None:
                raise PipelineError("guidance_scale_2 is for a two-expert Wan2.2 A14B base (boundary_ratio); this base has one")
            if not math.isfinite(guidance_scale_2) or guidance_scale_2 < 0:
                raise PipelineError(f"guidance_scale_2 must be a number >= 0, got {guidance_scale_2}")
        self.limits().check(width, height, num_frames)
        check_pipeline_split(self, num_frames, height, width)  # split across processes: tokens and heads divide

    def encode_trajectory(self, maps: np.ndarray | torch.Tensor, device: torch.device,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Trajectory maps (T, H, W, 3) uint8 -> trajectory latents (1, z, F, H/s, W/s) (z, s: the VAE's
        z_dim and spatial factor: 16 and 8, the Wan2.2 VAE 48 and 16).

        The VAE latent's mode (deterministic), normalised exactly as `prepare_latents` normalises the
        first-frame latents: (z - latents_mean) / latents_std.
        """
        return wan_trajectory_latents(self.vae, maps).to(device=device, dtype=dtype)

    def decode_latents(self, latents: torch.Tensor, output_type: str = "np"):
        """Latents (B, z, F, h, w) -> video, as the parent does after its loop."""
        latents = latents.to(device=get_module_execution_device(self.vae), dtype=self.vae.dtype)
        mean, inv_std = wan_latent_stats(self.vae, latents)
        latents = latents / inv_std + mean
        video = self.vae.decode(latents, return_dict=False)[0]
        return self.video_processor.postprocess_video(video, output_type=output_type)

    def joint_transformer(self, expert: str = "high"):
        """Base + ControlNet as one model (`magicmotion.models.MagicMotionTransformer`); for a two-expert
        A14B base, `expert` "high" (`transformer` + `controlnet`) or "low" (`transformer_2` + `controlnet_2`)."""
        from ..models import MagicMotionTransformer

        if expert == "low":
            return MagicMotionTransformer(transformer=self.transformer_2, controlnet=self.controlnet_2, freeze_base=False)
        return MagicMotionTransformer(transformer=self.transformer, controlnet=self.controlnet, freeze_base=False)

    def boundary_timestep(self) -> float | None:
        """A14B: steps with t >= this run the high-noise expert, the rest the low-noise one (diffusers'
        rule); None with one expert."""
        if not self.two_experts:
            return None
        return self.config.boundary_ratio * self.scheduler.config.num_train_timesteps

    # ------------------------------------------------------------------------------------ call

    # Twin: MagicMotionCogVideoXPipeline.__call__ shares these arguments and steps; change both together.
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
        guidance_scale_2: float | None = None,
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
            guidance_scale_2: A14B only: the guidance weight of the low-noise expert's steps (default
                `guidance_scale`), as in diffusers.
            controlnet_conditioning_scale: weight of the control residuals (a float or one per control
                block; A14B: the same for both experts' ControlNets); 0 gives the base model's video.
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
        if getattr(self, "context_parallel", None) is not None and generator is None and latents is None:
            raise PipelineError("a pipeline split across processes needs a seeded generator (or latents), the same "
                                "on every process, so that all start from the same noise")

        # 1-2. the model's recommended settings where none are given, conditions and checks
        settings = pipeline_settings(self)
        num_inference_steps = settings["num_inference_steps"] if num_inference_steps is None else num_inference_steps
        guidance_scale = settings["guidance_scale"] if guidance_scale is None else guidance_scale
        cond, num_frames, height, width = self.prepare_trajectory(image, trajectory, kind, num_frames, height, width)
        self.check_inputs(prompt, negative_prompt, kind, num_frames, height, width, num_inference_steps,
                          guidance_scale, cond.num_frames, callback_on_step_end_tensor_inputs,
                          trajectory_guidance_scale, guidance_scale_2)
        if self.config.boundary_ratio is not None and guidance_scale_2 is None:
            guidance_scale_2 = guidance_scale

        self._guidance_scale = guidance_scale
        self._guidance_scale_2 = guidance_scale_2
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

        # 4. CLIP image embeddings (bases with an image branch: Wan2.1-I2V-14B, Wan2.1-Fun-InP)
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
        prepared = self.prepare_latents(
            image_tensor, batch_size, self.vae.config.z_dim, height, width, num_frames, torch.float32, device,
            generator, latents,
        )
        if self.config.expand_timesteps:  # TI2V: the first frame's latents, kept clean through a mask
            latents, condition, first_frame_mask = prepared
        else:
            latents, condition = prepared

        # 6. trajectory latents, one copy per video
        trajectory_latents = self.encode_trajectory(cond.maps, device, torch.float32).repeat(batch_size, 1, 1, 1, 1)

        # 7. denoising loop: cond and uncond in one batch (or one after the other), the trajectory in both;
        # A14B: the expert for the step's timestep and its ControlNet, each with its own residuals
        experts = ("high", "low") if self.two_experts else ("high",)
        models = {e: self.joint_transformer(e) for e in experts}
        guide = trajectory_guidance_on(models["high"], trajectory_guidance_scale, controlnet_conditioning_scale)
        cfg = self.do_classifier_free_guidance
        predicts = {e: GuidedPrediction(models[e], len(timesteps), controlnet_conditioning_scale, cfg_mode,
                                        control_every, control_dense, control_branches) for e in experts}
        boundary = self.boundary_timestep()
        self._num_timesteps = len(timesteps)
        num_warmup_steps = len(timesteps) - num_inference_steps * self.scheduler.order
        active = None
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                self._current_timestep = t
                expert = "high" if boundary is None or t >= boundary else "low"
                if expert != active:  # offload hooks: the joint model runs the base's blocks itself
                    if active is not None:
                        release(models[active].base)
                    onload(models[expert].base)
                    active = expert
                model, scale = models[expert], guidance_scale if expert == "high" else guidance_scale_2
                if self.config.expand_timesteps:
                    # as diffusers: the first frame's latents clean, their tokens at timestep 0
                    model_input = ((1 - first_frame_mask) * condition + first_frame_mask * latents).to(transformer_dtype)
                    _, p_h, p_w = model.config.patch_size
                    timestep = (first_frame_mask[0][0][:, ::p_h, ::p_w] * t).flatten().unsqueeze(0)
                else:
                    model_input = torch.cat([latents, condition], dim=1).to(transformer_dtype)
                    timestep = t
                traj_input = trajectory_latents.to(transformer_dtype)
                noise_uncond, controlled = predicts[expert](  # controlled: the text-conditional prediction with control
                    i, model_input, traj_input, timestep, negative_prompt_embeds if cfg else None, prompt_embeds,
                    per_sample=dict(encoder_hidden_states_image=image_embeds),
                    shared=dict(attention_kwargs=attention_kwargs),
                )
                noise_pred = controlled
                if cfg:
                    noise_pred = noise_uncond + scale * (controlled - noise_uncond)
                if guide:  # the conditional branch again, without control
                    with model.cache_context("free"):  # its own cache state, when a cache is enabled
                        free = model(
                            hidden_states=model_input, timestep=batch_timestep(timestep, model_input.shape[0]),
                            encoder_hidden_states=prompt_embeds, trajectory_latents=traj_input, conditioning_scale=0.0,
                            encoder_hidden_states_image=image_embeds, attention_kwargs=attention_kwargs, return_dict=False,
                        )[0]
                    noise_pred = trajectory_guided(noise_pred, controlled, free, trajectory_guidance_scale)

                latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]

                latents, prompt_embeds, negative_prompt_embeds, trajectory_latents = self.step_end(
                    callback_on_step_end, i, t, callback_on_step_end_tensor_inputs, latents=latents,
                    prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
                    trajectory_latents=trajectory_latents)

                if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % self.scheduler.order == 0):
                    progress_bar.update()
        if active is not None:
            release(models[active].base)
        self._current_timestep = None
        if self.config.expand_timesteps:
            latents = (1 - first_frame_mask) * condition + first_frame_mask * latents

        # 8. decode
        video = latents if output_type == "latent" else self.decode_latents(latents, output_type)
        self.maybe_free_model_hooks()
        maps = cond.maps_uint8()
        if not return_dict:
            return (video, maps)
        return MagicMotionPipelineOutput(frames=video, trajectory_maps=maps)


__all__ = ["MagicMotionWanPipeline", "check_wan_components", "expert_controlnet_folders", "wan_trajectory_latents"]
