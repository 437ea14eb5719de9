"""What the Wan pipeline (and the trainer) read from a Wan base: its text length, whether its
ControlNets fit its transformer(s) (Wan2.1, Wan2.2 TI2V-5B, the two experts of Wan2.2 I2V-A14B), where a
folder keeps both experts' ControlNets, and its VAE's latent normalisation for the trajectory maps.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from diffusers.pipelines.wan.pipeline_wan_i2v import retrieve_latents
from diffusers.utils.torch_utils import get_module_execution_device

from ..errors import ModelError
from .conditions import maps_to_video_tensor

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


def check_wan_components(transformer, controlnet, transformer_2=None, controlnet_2=None,
                         boundary_ratio: float | None = None, expand_timesteps: bool = False) -> None:
    """ModelError unless the ControlNets fit the base: each ControlNet its own expert's (`expert` in its
    config: "high" beside `transformer`, "low" beside `transformer_2`, or unset), one per expert of a
    two-expert base, and a TI2V base (`expand_timesteps`) whose latents hold the first frame."""
    c = transformer.config
    if expand_timesteps and c.in_channels != c.out_channels:
        raise ModelError(f"expand_timesteps (Wan2.2 TI2V) needs a transformer whose input is its latents alone; "
                         f"this one has {c.in_channels} input and {c.out_channels} output channels")
    if not expand_timesteps and c.in_channels == c.out_channels:
        raise ModelError(f"the Wan transformer takes {c.in_channels} channels, its latents alone: a text-to-video "
                         "base, or a Wan2.2 TI2V one whose model_index.json lacks expand_timesteps: true")
    if boundary_ratio is not None and not 0 < boundary_ratio <= 1:
        raise ModelError(f"boundary_ratio must be in (0, 1], got {boundary_ratio}")
    two = boundary_ratio is not None and transformer_2 is not None
    if not two and controlnet_2 is not None:
        raise ModelError("controlnet_2 is the low-noise expert's ControlNet of a two-expert Wan2.2 A14B base "
                         "(transformer_2 and boundary_ratio); this base has one transformer")
    pairs = [("controlnet", controlnet, transformer, "high" if two else None)]
    if two:
        if controlnet is not None and controlnet_2 is None:
            raise ModelError("a two-expert Wan2.2 A14B base needs a ControlNet per expert: controlnet (high noise) "
                             "and controlnet_2 (low noise; CLI --controlnet-2)")
        pairs.append(("controlnet_2", controlnet_2, transformer_2, "low"))
    for name, cn, base, want in pairs:
        if cn is None:
            continue
        if not hasattr(cn, "check_compatible"):  # a module that is no ControlNet (the base's own transformer...)
            raise ModelError(f"{name}: {type(cn).__name__} is not a Trajectory ControlNet")
        cn.check_compatible(base)
        expert = cn.config.get("expert")
        if expert is not None and expert != want:
            where = {"high": "controlnet (high noise)", "low": "controlnet_2 (low noise)"}[expert]
            raise ModelError(
                f"{name} was trained beside the {expert}-noise expert of a two-expert Wan2.2 A14B base; "
                + (f"give it as {where}" if two else "this base has one transformer"))


def expert_controlnet_folders(path: str | os.PathLike) -> tuple:
    """(controlnet, controlnet_2) of a folder holding both experts' ControlNets, `controlnet/` and
    `controlnet_2/` (a saved A14B MagicMotion pipeline, or one put together by hand); else (path, None)."""
    p = Path(path)
    if (p / "controlnet" / "config.json").is_file() and (p / "controlnet_2" / "config.json").is_file():
        return p / "controlnet", p / "controlnet_2"
    return path, None


def wan_latent_stats(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents_mean, 1 / latents_std), shaped (1, z, 1, 1, 1), as diffusers' Wan pipelines build them."""
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(like.device, like.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(like.device, like.dtype)
    return mean, inv_std


@torch.no_grad()
def wan_trajectory_latents(vae, maps: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Trajectory maps -> normalised Wan VAE latents (1, z, F, H/s, W/s), float32 (z = 16, s = 8 for the
    Wan2.1 VAE; z = 48, s = 16 for Wan2.2's).

    maps: uint8 (T, H, W, 3) or float (T, 3, H, W) in [0, 1]. Training uses the same function, so the
    ControlNet sees the same latents at training and inference.
    """
    video = maps_to_video_tensor(maps).to(device=get_module_execution_device(vae), dtype=vae.dtype)
    z = retrieve_latents(vae.encode(video), sample_mode="argmax").float()
    mean, inv_std = wan_latent_stats(vae, z)
    return (z - mean) * inv_std


__all__ = ["WAN_TEXT_TOKENS", "check_wan_components", "expert_controlnet_folders", "wan_latent_stats",
           "wan_text_length", "wan_trajectory_latents"]
