"""The objective of one training step: noise the video latents, predict with base + ControlNet,
L = L_diffusion + lambda L_seg (flow matching for Wan, v-prediction for CogVideoX); every draw from
the sample's own generator."""

from __future__ import annotations

from typing import Any, Callable

import torch

from .conditioning import base_inputs, drop_image_condition, first_frame_keep, flow_shift_of, ti2v_inputs
from .config import TrainConfig
from .data import sample_seed
from .losses import (flow_matching_loss, flow_matching_noisy, latent_segmentation_loss, sample_flow_sigmas,
                     sample_timesteps, total_loss, v_prediction_loss, v_prediction_noisy)


class TrainingObjective:
    """One noisy sample and its loss terms, for either base.

    Wan: s from `sample_flow_sigmas`, x_t = (1 - s) x0 + s eps, timestep 1000 s, flow-matching
    loss. CogVideoX: t uniform, x_t from the scheduler's `alphas_cumprod`, v-prediction loss (eq. (1)).
    Plus lambda * L_seg when the segment head is trained.

    Wan2.2 I2V-A14B (`expert`): s only in that expert's range, where diffusers' pipeline runs it:
    high 1000 s >= boundary_ratio * num_train_timesteps, low below. Wan2.2 TI2V (`expand_timesteps`),
    as diffusers' pipeline runs the base: the first latent frame replaced by the clean image latents,
    one timestep per token (0 on that frame), the loss on the noised frames only; an image-dropped
    sample is a text-to-video one (all frames noised). `layout`: `conditioning.base_layout` of the base
    (read from config.base when None).
    """

    def __init__(self, config: TrainConfig, base_config, scheduler, layout: dict | None = None):
        self.model = config.model
        self.base_config = base_config
        self.noise = config.noise
        self.lambda_seg = config.lambda_seg
        self.want_seg = config.needs_mask_latents
        self.image_dropout = config.data.image_dropout > 0
        self.expand_timesteps = False
        self.sigma_range = None
        if self.model == "wan":
            from .conditioning import base_layout

            layout = base_layout(config.base) if layout is None else layout
            self.shift = config.noise.flow_shift or flow_shift_of(scheduler.config)
            self.expand_timesteps = bool(layout.get("expand_timesteps"))
            if config.expert is not None:
                boundary = layout["boundary_ratio"] * int(scheduler.config.num_train_timesteps) / 1000.0
                self.sigma_range = (boundary, 1.0) if config.expert == "high" else (0.0, boundary)
        else:
            self.alphas_cumprod = scheduler.alphas_cumprod.float()
            self.num_train_timesteps = int(scheduler.config.num_train_timesteps)

    def draw(self, shape: tuple[int, ...], generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(noise, level) for a batch of `shape`: Wan's sigmas in (0, 1), CogVideoX's integer timesteps.
        A list of generators (`sample_generators`) draws each sample with its own."""
        if isinstance(generator, (list, tuple)):
            parts = [self.draw((1, *shape[1:]), g) for g in generator]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        noise = torch.randn(shape, generator=generator)
        if self.model == "wan":
            n = self.noise
            return noise, sample_flow_sigmas(shape[0], generator, n.timestep_sampling, self.shift, n.logit_mean,
                                             n.logit_std, sigma_range=self.sigma_range)
        return noise, sample_timesteps(shape[0], self.num_train_timesteps, generator)

    def __call__(self, model: Callable, batch: dict[str, Any], generator) -> dict[str, torch.Tensor]:
        """Loss terms {"loss", "diffusion", ["segmentation"]} for a latent batch on the model's device;
        `generator`: one for the batch, or one per sample (see `draw`)."""
        x0 = batch["latents"]
        noise, level = self.draw(x0.shape, generator)
        noise = noise.to(x0.device, x0.dtype)
        if self.model == "wan":
            sigmas = level
            noisy = flow_matching_noisy(x0, noise, sigmas.to(x0.device))
            timestep = (sigmas * 1000.0).to(x0.device)
        else:
            t = level
            alphas = self.alphas_cumprod[t].to(x0.device)
            noisy = v_prediction_noisy(x0, noise, alphas)
            timestep = t.to(x0.device)
        batch = dict(batch)
        keep = None
        if self.expand_timesteps:  # Wan2.2 TI2V: the clean first frame, per-token timesteps
            keep = first_frame_keep(x0, batch.get("drop_image") if self.image_dropout else None)
            hidden, timestep = ti2v_inputs(noisy, batch["image_condition"], keep, timestep,
                                           self.base_config.patch_size)
            extra = {}
        else:
            if self.image_dropout:
                batch["image_condition"] = drop_image_condition(self.model, batch["image_condition"],
                                                                batch.get("drop_image"))
            hidden, extra = base_inputs(self.model, self.base_config, noisy, batch)
        sample, segmentation = model(
            hidden_states=hidden, timestep=timestep, encoder_hidden_states=batch["prompt_embeds"],
            trajectory_latents=batch["trajectory_latents"], return_segmentation=self.want_seg, **extra,
        )
        if self.model == "wan":
            diffusion = flow_matching_loss(sample, x0, noise, keep)
        else:
            diffusion = v_prediction_loss(sample, noisy, x0, alphas, self.noise.loss_weighting)
        seg = latent_segmentation_loss(segmentation, batch["mask_latents"]) if self.want_seg else None
        return total_loss(diffusion, seg, self.lambda_seg)


def step_generator(seed: int, micro_step: int, rank: int) -> torch.Generator:
    """The generator of one micro-step's noise and timesteps (CPU, so runs reproduce across devices)."""
    return torch.Generator().manual_seed(sample_seed(seed + 1_000_003, micro_step, rank))


def sample_generators(seeds) -> list[torch.Generator]:
    """One generator per sample for its noise and timestep, seeded by the sample's seed (CPU): a sample
    is noised the same whatever the batch size, gradient accumulation or number of processes, so a
    2-process run of batch 1 equals a 1-process run of batch 2."""
    return [torch.Generator().manual_seed(sample_seed(int(s), 1_000_003, 0)) for s in seeds]
