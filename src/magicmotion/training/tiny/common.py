"""What every phase of the tiny recipe shares: the sizes and configs of the tiny model, the
synthetic clips in memory, their trajectory maps, and small tensor helpers."""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

SIZE = (64, 64)
FRAMES = 17
# x4 in space (not Wan's x8): a tiny Wan VAE with x8 learned only the mean colour in the time we have,
# while x4 keeps the objects. With (1, 2, 2) patches a latent frame is an 8x8 token grid (8x8 pixels a
# token); (1, 4, 4) patches (4x4 tokens of 16x16 pixels, smaller than most objects' paths) were 4x
# cheaper but never learned to move an object.
VAE_CONFIG = dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 2], num_res_blocks=1, attn_scales=[],
                  temperal_downsample=[True, True], scale_factor_spatial=4)
# How the base sees the first frame: "ti2v" as Wan2.2 TI2V-5B (`expand_timesteps`: the first latent
# frame goes in clean, with its own timestep 0, and has no loss; the transformer's input is the latents
# alone) or "i2v" as Wan2.1 I2V (the image latent and a 4-channel mask concatenated to the noisy latents,
# every frame noised). See docs/tiny-model.md for the comparison that picked it.
BASE_CONDITIONING = "ti2v"
CONDITIONINGS = ("ti2v", "i2v")


def base_config(conditioning: str = BASE_CONDITIONING) -> dict:
    """The tiny transformer's config for a conditioning: its input is the VAE's z_dim channels (ti2v) or
    those, a 4-channel mask and the image latents (i2v)."""
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"base conditioning {conditioning!r}: one of {', '.join(CONDITIONINGS)}")
    z = VAE_CONFIG["z_dim"]
    return dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32,
                in_channels=z if conditioning == "ti2v" else 2 * z + 4, out_channels=z, text_dim=32,
                freq_dim=64, ffn_dim=256, num_layers=6, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                eps=1e-6, image_dim=None, rope_max_seq_len=64)


BASE_CONFIG = base_config()
# Prompts of the synthetic world are at most 30 tokens; padding them to 64, not Wan's 512, makes a base
# step 1.6x faster (cross-attention over 512 tokens was a third of it). Saved as the tokenizer's
# model_max_length, which the pipelines read (`wan_text_length`).
TEXT_TOKENS = 64
TEXT_CONFIG = dict(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16,
                   dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def recipe_device(name: str) -> torch.device:
    """The device every phase runs on: "cpu", "cuda", "cuda:N" or "mps". ConfigError (one line) for an
    unknown device or one this machine does not have."""
    from ...errors import ConfigError

    text = str(name).strip()
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name!r}: not a device (cpu, cuda, cuda:N, mps)") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {name!r}: the recipe runs on cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name!r}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name!r}: MPS is not available on this machine (use --device cpu)")
    return device


@contextlib.contextmanager
def accelerate_device(device: torch.device):
    """Runs of `magicmotion.training.train` inside pick `device` (accelerate's ACCELERATE_TORCH_DEVICE,
    read when its state is made; the trainer makes a fresh one each run); restored afterwards."""
    old = os.environ.get("ACCELERATE_TORCH_DEVICE")
    os.environ["ACCELERATE_TORCH_DEVICE"] = str(device)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ACCELERATE_TORCH_DEVICE", None)
        else:
            os.environ["ACCELERATE_TORCH_DEVICE"] = old


def log(msg: str) -> None:
    print(f"[tiny {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float (B, 3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def round_trip(vae, x: torch.Tensor) -> torch.Tensor:
    """x (B, 3, T, H, W) in [-1, 1] -> the VAE's reconstruction from its posterior's mode."""
    return vae.decode(vae.encode(x).latent_dist.mode()).sample


def latent_drift(vae, z: torch.Tensor, z_ref: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two latents after normalising by the VAE's `latents_std`."""
    inv_std = 1.0 / torch.tensor(vae.config.latents_std, device=z.device).view(1, -1, 1, 1, 1)
    return ((z - z_ref) * inv_std).pow(2).mean()


def ema_update(ema: dict[str, float], key: str, value: float, decay: float = 0.98) -> None:
    """Exponential moving average of a logged value, started at its first value."""
    ema[key] = value if key not in ema else decay * ema[key] + (1 - decay) * value


def world_clips(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n clips of the synthetic world in memory: frames uint8 (n, T, H, W, 3) and object labels
    int32 (n, T, H, W) (0 = background)."""
    from ...data.synthetic import SyntheticWorld

    world = SyntheticWorld(size=SIZE, num_frames=FRAMES)
    clips = [world.render(world.sample_scene(np.random.default_rng([seed, k]))) for k in range(n)]
    return np.stack([c[0] for c in clips]), np.stack([c[1] for c in clips])


def trajectory_maps(labels: np.ndarray, kind: str = "mask") -> np.ndarray:
    """Trajectory maps of label videos (..., T, H, W) (value = object id), rendered by the trajectory
    layer: uint8 (..., T, H, W, 3)."""
    from ...trajectory import from_label_masks, render

    flat = labels.reshape(-1, *labels.shape[-3:])
    out = np.zeros((*flat.shape, 3), dtype=np.uint8)
    for v, clip in enumerate(flat):
        if clip.any():
            out[v] = render(from_label_masks(clip), kind)
    return out.reshape(*labels.shape, 3)


def psnr_of(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.clamp(-1, 1) - b) / 2).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


CONFIGS = Path(__file__).resolve().parents[4] / "configs" / "tiny"
STAGES = ["stage1", "stage2", "stage3"]
PHASES = ["data", "vae", "base", "maps", "stages", "examples", "ablations", "bench"]
