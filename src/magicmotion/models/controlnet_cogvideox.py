"""Trajectory ControlNet for CogVideoX image-to-video bases (`CogVideoXTransformer3DModel`, 5B I2V).

A trainable copy of the base's patch embedding, time embedding and first N `CogVideoXBlock`s. Its input
is the noisy video latents (16 ch) concatenated on channels with the trajectory latents (16 ch); the
5B I2V base's patch embedding already takes 32 channels (noise + image latents), so it is copied whole.
After control block i a zero-initialised per-token linear map (`out_projectors.i`) gives the residual
that the joint model adds to the output of base block i (video tokens only).

Parameter names follow the released checkpoint (`patch_embed`, `time_embedding`,
`transformer_blocks.N`, `out_projectors.N`), so its weights load after `convert.py` reshapes the
1x1-conv projectors.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import CogVideoXPatchEmbed, TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock
from torch import nn

from ..errors import ModelError
from ..trajectory.palette import PALETTES
from .casting import cast_like

# Config keys copied from the base transformer's config (the ControlNet's own architecture).
_COPIED = (
    "num_attention_heads", "attention_head_dim", "flip_sin_to_cos", "freq_shift", "time_embed_dim",
    "ofs_embed_dim", "text_embed_dim", "dropout", "attention_bias", "sample_width", "sample_height",
    "sample_frames", "patch_size", "patch_size_t", "temporal_compression_ratio", "max_text_seq_length",
    "activation_fn", "timestep_activation_fn", "norm_elementwise_affine", "norm_eps",
    "spatial_interpolation_scale", "temporal_interpolation_scale", "use_rotary_positional_embeddings",
    "use_learned_positional_embeddings", "patch_bias",
)


def cogvideox_rotary_embedding(
    config, num_frames: int, height: int, width: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3D rotary embedding a CogVideoX pipeline passes as `image_rotary_emb`.

    Same as `CogVideoXImageToVideoPipeline._prepare_rotary_positional_embeddings`, but in latent units.

    Args:
        config: a CogVideoX transformer's (or ControlNet's) config.
        num_frames, height, width: latent frames, latent height, latent width.
    Returns:
        (cos, sin), each (num_frames * height/p * width/p, attention_head_dim).
    """
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video import get_resize_crop_region_for_grid

    p, p_t = config.patch_size, config.patch_size_t
    grid_h, grid_w = height // p, width // p
    base_w, base_h = config.sample_width // p, config.sample_height // p
    if p_t is None:
        crops = get_resize_crop_region_for_grid((grid_h, grid_w), base_w, base_h)
        return get_3d_rotary_pos_embed(
            embed_dim=config.attention_head_dim, crops_coords=crops, grid_size=(grid_h, grid_w),
            temporal_size=num_frames, device=device,
        )
    return get_3d_rotary_pos_embed(
        embed_dim=config.attention_head_dim, crops_coords=None, grid_size=(grid_h, grid_w),
        temporal_size=(num_frames + p_t - 1) // p_t, grid_type="slice", max_size=(base_h, base_w), device=device,
    )


class CogVideoXTrajectoryControlNet(ModelMixin, ConfigMixin):
    """Trajectory ControlNet for a CogVideoX image-to-video transformer.

    Args (config; `from_transformer` fills them from a base):
        num_layers: number of control blocks (at most the base's `base_num_layers`).
        in_channels: noisy latent channels + trajectory latent channels (16 + 16).
        base_num_layers: number of blocks of the base this ControlNet was built for.
        base_type: "cogvideox" (checked by `MagicMotionTransformer`).
        trajectory_palette: the palette of the trajectory maps it was trained on ("voc", ours; "release",
            the authors' colours), so generation draws maps it knows.
        source: where the weights came from when not trained here (e.g. "MagicMotion release
            stage2/box.pt"), or None.
        the rest: as `CogVideoXTransformer3DModel`.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["CogVideoXBlock", "CogVideoXPatchEmbed"]
    _skip_layerwise_casting_patterns = ["patch_embed", "norm"]

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 48,
        attention_head_dim: int = 64,
        in_channels: int = 32,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        time_embed_dim: int = 512,
        ofs_embed_dim: int | None = None,
        text_embed_dim: int = 4096,
        num_layers: int = 42,
        dropout: float = 0.0,
        attention_bias: bool = True,
        sample_width: int = 90,
        sample_height: int = 60,
        sample_frames: int = 49,
        patch_size: int = 2,
        patch_size_t: int | None = None,
        temporal_compression_ratio: int = 4,
        max_text_seq_length: int = 226,
        activation_fn: str = "gelu-approximate",
        timestep_activation_fn: str = "silu",
        norm_elementwise_affine: bool = True,
        norm_eps: float = 1e-5,
        spatial_interpolation_scale: float = 1.875,
        temporal_interpolation_scale: float = 1.0,
        use_rotary_positional_embeddings: bool = True,
        use_learned_positional_embeddings: bool = True,
        patch_bias: bool = True,
        base_num_layers: int = 42,
        base_type: str = "cogvideox",
        trajectory_palette: str = "voc",
        source: str | None = None,
    ):
        super().__init__()
        if base_type != "cogvideox":
            raise ModelError(f"CogVideoXTrajectoryControlNet: base_type must be 'cogvideox', got {base_type!r}")
        if trajectory_palette not in PALETTES:
            raise ModelError(f"CogVideoXTrajectoryControlNet: trajectory_palette must be one of "
                             f"{', '.join(PALETTES)}, got {trajectory_palette!r}")
        if in_channels % 2:
            raise ModelError(f"CogVideoXTrajectoryControlNet: in_channels {in_channels} is not noise + trajectory")
        inner_dim = num_attention_heads * attention_head_dim

        # embeddings
        self.patch_embed = CogVideoXPatchEmbed(
            patch_size=patch_size,
            patch_size_t=patch_size_t,
            in_channels=in_channels,
            embed_dim=inner_dim,
            text_embed_dim=text_embed_dim,
            bias=patch_bias,
            sample_width=sample_width,
            sample_height=sample_height,
            sample_frames=sample_frames,
            temporal_compression_ratio=temporal_compression_ratio,
            max_text_seq_length=max_text_seq_length,
            spatial_interpolation_scale=spatial_interpolation_scale,
            temporal_interpolation_scale=temporal_interpolation_scale,
            use_positional_embeddings=not use_rotary_positional_embeddings,
            use_learned_positional_embeddings=use_learned_positional_embeddings,
        )
        self.embedding_dropout = nn.Dropout(dropout)
        self.time_proj = Timesteps(inner_dim, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(inner_dim, time_embed_dim, timestep_activation_fn)
        self.ofs_proj = self.ofs_embedding = None
        if ofs_embed_dim:
            self.ofs_proj = Timesteps(ofs_embed_dim, flip_sin_to_cos, freq_shift)
            self.ofs_embedding = TimestepEmbedding(ofs_embed_dim, ofs_embed_dim, timestep_activation_fn)

        # control blocks
        self.transformer_blocks = nn.ModuleList(
            [
                CogVideoXBlock(
                    dim=inner_dim,
                    num_attention_heads=num_attention_heads,
                    attention_head_dim=attention_head_dim,
                    time_embed_dim=time_embed_dim,
                    dropout=dropout,
                    activation_fn=activation_fn,
                    attention_bias=attention_bias,
                    norm_elementwise_affine=norm_elementwise_affine,
                    norm_eps=norm_eps,
                )
                for _ in range(num_layers)
            ]
        )

        # zero-initialised residual projections, one per control block
        # Copied from magicmotion.models.controlnet_wan.WanTrajectoryControlNet.__init__ (projections)
        self.out_projectors = nn.ModuleList([nn.Linear(inner_dim, inner_dim) for _ in range(num_layers)])
        for proj in self.out_projectors:
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

        self.gradient_checkpointing = False

    # Copied from magicmotion.models.controlnet_wan.WanTrajectoryControlNet.inner_dim
    @property
    def inner_dim(self) -> int:
        return self.config.num_attention_heads * self.config.attention_head_dim

    @classmethod
    def from_transformer(cls, transformer, num_layers: int | None = None) -> "CogVideoXTrajectoryControlNet":
        """Build a ControlNet from a CogVideoX image-to-video base, copying its weights.

        Copies the patch embedding (32 input channels: the base's noise + image-latent channels become
        noise + trajectory channels), the time (and ofs) embedding and the first `num_layers` blocks
        (default: all). The projections start at zero, so the joint model equals the base.
        """
        cfg = transformer.config
        if getattr(transformer, "transformer_blocks", None) is None or not hasattr(cfg, "time_embed_dim"):
            raise ModelError(f"{type(transformer).__name__} is not a CogVideoXTransformer3DModel")
        # Copied from magicmotion.models.controlnet_wan.WanTrajectoryControlNet.from_transformer, blocks->transformer_blocks
        base_layers = len(transformer.transformer_blocks)
        num_layers = base_layers if num_layers is None else int(num_layers)
        if not 1 <= num_layers <= base_layers:
            raise ModelError(f"num_layers must be 1..{base_layers} (the base's blocks), got {num_layers}")
        if cfg.in_channels != 32:
            raise ModelError(
                f"CogVideoX ControlNet needs an image-to-video base with 32 input channels (noise 16 + image 16); "
                f"this base has {cfg.in_channels}"
            )
        controlnet = cls(
            **{k: cfg[k] for k in _COPIED if k in cfg},
            in_channels=cfg.in_channels,
            num_layers=num_layers,
            base_num_layers=base_layers,
        )
        controlnet.patch_embed.load_state_dict(transformer.patch_embed.state_dict())
        controlnet.time_embedding.load_state_dict(transformer.time_embedding.state_dict())
        if controlnet.ofs_embedding is not None:
            controlnet.ofs_embedding.load_state_dict(transformer.ofs_embedding.state_dict())
        for own, base in zip(controlnet.transformer_blocks, transformer.transformer_blocks):
            own.load_state_dict(base.state_dict())
        return cast_like(controlnet, transformer.device, transformer.dtype)

    def check_compatible(self, transformer) -> None:
        """Raise ModelError when this ControlNet was not built for a base like `transformer`."""
        cfg = self.config
        if not hasattr(transformer, "transformer_blocks") or "time_embed_dim" not in transformer.config:
            raise ModelError(f"a CogVideoX ControlNet does not fit a {type(transformer).__name__} base")
        b = transformer.config
        expected = {
            "inner dim": (self.inner_dim, b.num_attention_heads * b.attention_head_dim),
            "attention heads": (cfg.num_attention_heads, b.num_attention_heads),
            "patch size": ((cfg.patch_size, cfg.patch_size_t), (b.patch_size, b.patch_size_t)),
            "time embedding dim": (cfg.time_embed_dim, b.time_embed_dim),
            "text embedding dim": (cfg.text_embed_dim, b.text_embed_dim),
        }
        # Copied from magicmotion.models.controlnet_wan.WanTrajectoryControlNet.check_compatible, blocks->transformer_blocks
        bad = [f"{k} {mine} vs base {theirs}" for k, (mine, theirs) in expected.items() if mine != theirs]
        if cfg.num_layers > len(transformer.transformer_blocks):
            bad.append(f"{cfg.num_layers} control blocks vs base {len(transformer.transformer_blocks)} blocks")
        if bad:
            raise ModelError("the CogVideoX ControlNet does not fit this base: " + "; ".join(bad))

    def forward(
        self,
        noisy_latents: torch.Tensor,
        trajectory_latents: torch.Tensor,
        timestep: int | float | torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        timestep_cond: torch.Tensor | None = None,
        ofs: int | float | torch.Tensor | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        num_blocks: int | None = None,
    ) -> list[torch.Tensor]:
        """Control residuals, one per control block.

        Args:
            noisy_latents: (B, F, 16, H, W) the noisy video latents only (not the image latents).
            trajectory_latents: (B, F, 16, H, W) VAE latents of the trajectory maps.
            timestep: (B,) or scalar.
            encoder_hidden_states: (B, S, text_embed_dim) text embeddings.
            image_rotary_emb: (cos, sin), each (L_video, attention_head_dim), as the base gets.
            num_blocks: run only the first `num_blocks` control blocks (default: all).
        Returns:
            list of (B, L_video, D) residuals, L_video = F * H/p * W/p.
        """
        # Copied from magicmotion.models.controlnet_wan.WanTrajectoryControlNet.forward, channels on dim 2
        half = self.config.in_channels // 2
        if noisy_latents.shape[2] != half or trajectory_latents.shape[2] != half:
            raise ModelError(
                f"CogVideoX ControlNet takes {half}-channel noisy and trajectory latents (B, F, C, H, W); got "
                f"{tuple(noisy_latents.shape)} and {tuple(trajectory_latents.shape)}"
            )
        if noisy_latents.shape != trajectory_latents.shape:
            raise ModelError(
                f"noisy latents {tuple(noisy_latents.shape)} and trajectory latents "
                f"{tuple(trajectory_latents.shape)} differ in shape"
            )
        num_blocks = len(self.transformer_blocks) if num_blocks is None else num_blocks

        # time embedding
        t_emb = self.time_proj(timestep).to(dtype=noisy_latents.dtype)
        emb = self.time_embedding(t_emb, timestep_cond)
        if self.ofs_embedding is not None:
            ofs_emb = self.ofs_proj(ofs).to(dtype=noisy_latents.dtype)
            emb = emb + self.ofs_embedding(ofs_emb)

        # patch embedding of [noise, trajectory] and text
        x = torch.cat([noisy_latents, trajectory_latents], dim=2)
        x = self.embedding_dropout(self.patch_embed(encoder_hidden_states, x))
        text_len = encoder_hidden_states.shape[1]
        encoder_hidden_states, hidden_states = x[:, :text_len], x[:, text_len:]

        # control blocks
        residuals = []
        for block, proj in zip(self.transformer_blocks[:num_blocks], self.out_projectors):
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states, encoder_hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, encoder_hidden_states, emb, image_rotary_emb, attention_kwargs
                )
            else:
                hidden_states, encoder_hidden_states = block(
                    hidden_states=hidden_states,
                    encoder_hidden_states=encoder_hidden_states,
                    temb=emb,
                    image_rotary_emb=image_rotary_emb,
                    attention_kwargs=attention_kwargs,
                )
            residuals.append(proj(hidden_states))
        return residuals
