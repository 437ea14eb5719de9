"""Helpers shared by the model tests: tiny random bases, their inputs, parameter perturbation."""

from __future__ import annotations

import torch

from magicmotion.models import (
    CogVideoXTrajectoryControlNet,
    WanTrajectoryControlNet,
    tiny_cogvideox_inputs,
    tiny_cogvideox_transformer,
    tiny_wan_inputs,
    tiny_wan_transformer,
)

FAMILIES = ["wan", "wan_clip", "cogvideox"]


def build_base(family: str, **overrides):
    """A tiny I2V base of `family` ("wan", "wan_clip" with a CLIP image branch, "cogvideox")."""
    if family == "cogvideox":
        return tiny_cogvideox_transformer(**overrides)
    return tiny_wan_transformer(image_embedding=family == "wan_clip", **overrides)


def build_inputs(base, batch: int = 1, seed: int = 0, **sizes) -> tuple[dict, torch.Tensor]:
    """(base forward kwargs, trajectory latents) for a tiny base."""
    if "rope_max_seq_len" in base.config:
        inputs = tiny_wan_inputs(base, batch=batch, seed=seed, **sizes)
    else:
        inputs = tiny_cogvideox_inputs(base, batch=batch, seed=seed, **sizes)
    trajectory = inputs.pop("trajectory_latents")
    return inputs, trajectory


def controlnet_class(base):
    return WanTrajectoryControlNet if "rope_max_seq_len" in base.config else CogVideoXTrajectoryControlNet


def perturb(module: torch.nn.Module, seed: int = 1, std: float = 0.05) -> torch.nn.Module:
    """Add small random values to every parameter (so zero projections become non-zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


def control_blocks(controlnet):
    return controlnet.blocks if isinstance(controlnet, WanTrajectoryControlNet) else controlnet.transformer_blocks


def base_blocks(base):
    return base.blocks if "rope_max_seq_len" in base.config else base.transformer_blocks
