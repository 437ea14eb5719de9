"""Tiny random base transformers built in code, for tests and smoke runs (no downloads).

Both builders mirror the image-to-video layouts of the real bases at toy width:

- `tiny_wan_transformer`: a `WanTransformer3DModel` with 36 input channels (noise 16 + mask 4 + image
  latents 16), patch (1, 2, 2), 2 heads x 8. `image_embedding=True` adds the CLIP image branch of the
  14B I2V model (image_dim=16, added K/V projections); then `encoder_hidden_states` must hold exactly
  512 text tokens, because diffusers' Wan attention splits image and text context at 512.
- `tiny_cogvideox_transformer`: a `CogVideoXTransformer3DModel` like CogVideoX-5B-I2V (32 input
  channels: noise 16 + image latents 16, rotary embeddings, patch 2), 2 heads x 16 (the 3D rotary
  embedding splits the head dim into 1/4 + 3/8 + 3/8, so it must be a multiple of 16), sample size
  8 x 8 latents x 9 frames (3 latent frames).

Weights are random but deterministic (`seed`); the global torch RNG is left untouched.
`tiny_wan_inputs` / `tiny_cogvideox_inputs` give matching random inputs for a forward pass.
"""

from __future__ import annotations

from typing import Any

import torch

WAN_TINY = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=8,
    in_channels=36,
    out_channels=16,
    text_dim=16,
    freq_dim=16,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=None,
    added_kv_proj_dim=None,
    rope_max_seq_len=32,
)

COGVIDEOX_TINY = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=32,
    out_channels=16,
    time_embed_dim=16,
    text_embed_dim=16,
    num_layers=2,
    sample_width=8,
    sample_height=8,
    sample_frames=9,
    patch_size=2,
    max_text_seq_length=8,
    use_rotary_positional_embeddings=True,
    use_learned_positional_embeddings=False,
)


def seeded(seed: int, build):
    """build() with the torch RNG seeded with `seed`, the global RNG left as it was: random weights
    that are the same for the same seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def tiny_wan_transformer(*, image_embedding: bool = False, seed: int = 0, **overrides: Any):
    """A random `WanTransformer3DModel` image-to-video base (36 input channels) of toy size.

    Args:
        image_embedding: add the CLIP image branch (as Wan2.1-I2V-14B has); inputs then need
            `encoder_hidden_states_image` (B, 257 or any, 16) and exactly 512 text tokens.
        seed: weight initialisation seed.
        **overrides: any `WanTransformer3DModel` config value (e.g. num_layers=4).
    """
    from diffusers import WanTransformer3DModel

    config = dict(WAN_TINY)
    if image_embedding:
        config.update(image_dim=16, added_kv_proj_dim=config["num_attention_heads"] * config["attention_head_dim"])
    config.update(overrides)
    return seeded(seed, lambda: WanTransformer3DModel(**config)).eval()


def tiny_cogvideox_transformer(*, seed: int = 0, **overrides: Any):
    """A random `CogVideoXTransformer3DModel` laid out like CogVideoX-5B-I2V (32 input channels) of toy size.

    Args:
        seed: weight initialisation seed.
        **overrides: any `CogVideoXTransformer3DModel` config value (e.g. num_layers=4,
            use_learned_positional_embeddings=True as in the real 5B I2V model; then inputs must be
            exactly sample_height x sample_width latents).
    """
    from diffusers import CogVideoXTransformer3DModel

    config = dict(COGVIDEOX_TINY)
    config.update(overrides)
    return seeded(seed, lambda: CogVideoXTransformer3DModel(**config)).eval()


def tiny_wan_inputs(
    model, batch: int = 1, frames: int = 3, height: int = 8, width: int = 8, text_tokens: int = 4, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random inputs for a Wan I2V base built by `tiny_wan_transformer` (or any Wan I2V base).

    Returns a dict with `hidden_states` (B, in_channels, F, H, W), `timestep` (B,),
    `encoder_hidden_states` (B, S, text_dim) (S = 512 when the model has a CLIP image branch),
    `trajectory_latents` (B, 16, F, H, W) and, for the CLIP variant, `encoder_hidden_states_image`
    (B, 4, image_dim).
    """
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    has_image = cfg.image_dim is not None
    text_tokens = 512 if has_image else text_tokens
    out = dict(
        hidden_states=torch.randn(batch, cfg.in_channels, frames, height, width, generator=g),
        timestep=torch.randint(0, 1000, (batch,), generator=g),
        encoder_hidden_states=torch.randn(batch, text_tokens, cfg.text_dim, generator=g),
        trajectory_latents=torch.randn(batch, 16, frames, height, width, generator=g),
    )
    if has_image:
        out["encoder_hidden_states_image"] = torch.randn(batch, 4, cfg.image_dim, generator=g)
    return out


def tiny_cogvideox_inputs(
    model, batch: int = 1, frames: int | None = None, height: int | None = None, width: int | None = None,
    text_tokens: int | None = None, seed: int = 0,
) -> dict[str, Any]:
    """Random inputs for a CogVideoX I2V base (defaults: the model's sample size).

    Returns a dict with `hidden_states` (B, F, in_channels, H, W), `timestep` (B,),
    `encoder_hidden_states` (B, S, text_embed_dim), `trajectory_latents` (B, F, 16, H, W) and
    `image_rotary_emb` (cos, sin) when the model uses rotary embeddings.
    """
    from .controlnet_cogvideox import cogvideox_rotary_embedding

    cfg = model.config
    frames = frames or (cfg.sample_frames - 1) // cfg.temporal_compression_ratio + 1
    height = height or cfg.sample_height
    width = width or cfg.sample_width
    text_tokens = text_tokens or cfg.max_text_seq_length
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = dict(
        hidden_states=torch.randn(batch, frames, cfg.in_channels, height, width, generator=g),
        timestep=torch.randint(0, 1000, (batch,), generator=g),
        encoder_hidden_states=torch.randn(batch, text_tokens, cfg.text_embed_dim, generator=g),
        trajectory_latents=torch.randn(batch, frames, 16, height, width, generator=g),
    )
    if cfg.use_rotary_positional_embeddings:
        out["image_rotary_emb"] = cogvideox_rotary_embedding(cfg, frames, height, width)
    return out
