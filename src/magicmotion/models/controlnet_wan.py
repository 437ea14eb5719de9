"""Trajectory ControlNet for Wan image-to-video bases (`WanTransformer3DModel`): Wan2.1 I2V / Fun-InP,
Wan2.2 TI2V-5B and each expert of Wan2.2 I2V-A14B.

A trainable copy of the base's condition embedder (time + text + optional CLIP image) and first N
`WanTransformerBlock`s, with the same rotary settings. Its input is the base's latents (C = the base's
`out_channels` = the VAE's z_dim: 16 for Wan2.1 and A14B, 48 for TI2V-5B) concatenated on channels with
the trajectory latents (C channels, the same VAE). The patch embedding Conv3d(2C -> D) is initialised
from the base's:

- Wan2.1 / A14B (in_channels 36 = noise 16 + mask 4 + image latents 16): noise channels from base
  channels 0..15, trajectory channels from the base's image-latent channels (the last 16), so at the
  start the trajectory is read the way the base reads the first-frame latents.
- TI2V-5B (in_channels 48 = out_channels, `expand_timesteps`): the first frame goes in as clean
  latents in the same 48 channels, so both halves start from the base's one 48-channel embedding.

After control block i a zero-initialised per-token linear map (`out_projectors.i`) gives the residual
the joint model adds to the output of base block i. An A14B base has one ControlNet per expert, each
built from its own expert (`expert="high"` from `transformer`, `"low"` from `transformer_2`).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models._modeling_parallel import ContextParallelInput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.transformer_wan import (
    WanRotaryPosEmbed,
    WanTimeTextImageEmbedding,
    WanTransformerBlock,
)
from torch import nn

from ..errors import ModelError
from .casting import cast_like

EXPERTS = (None, "high", "low")  # Wan2.2 A14B: transformer (high noise) / transformer_2 (low noise)

_COPIED = (
    "patch_size", "num_attention_heads", "attention_head_dim", "text_dim", "freq_dim", "ffn_dim",
    "cross_attn_norm", "qk_norm", "eps", "image_dim", "added_kv_proj_dim", "rope_max_seq_len",
    "pos_embed_seq_len",
)


# Parts marked "Twin of CogVideoXTrajectoryControlNet.X" stand again in controlnet_cogvideox.py, marked
# "Copied from" there: one file per model, as diffusers keeps its ControlNets. Change both.
class WanTrajectoryControlNet(ModelMixin, ConfigMixin):
    """Trajectory ControlNet for a Wan image-to-video transformer.

    Args (config; `from_transformer` fills them from a base):
        num_layers: number of control blocks (at most `base_num_layers`).
        in_channels: latent channels + trajectory latent channels (16 + 16; 48 + 48 for Wan2.2 TI2V-5B).
        base_in_channels: input channels of the base (36: noise 16 + mask 4 + image latents 16; 48 for
            TI2V-5B, whose first frame is in the latents).
        base_num_layers: number of blocks of the base this ControlNet was built for.
        base_type: "wan" (checked by `MagicMotionTransformer`).
        trajectory_palette: the palette of the trajectory maps it was trained on ("voc" or "release",
            see `magicmotion.trajectory.palette`); pipelines render specs with it.
        expert: for a two-expert Wan2.2 A14B base, the expert it was built from and runs beside:
            "high" (`transformer`, timesteps >= the boundary) or "low" (`transformer_2`); None otherwise.
        the rest: as `WanTransformer3DModel`.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["WanTransformerBlock"]
    _skip_layerwise_casting_patterns = ["patch_embedding", "condition_embedder", "norm"]
    _keep_in_fp32_modules = ["time_embedder", "scale_shift_table", "norm1", "norm2", "norm3"]
    # Context parallelism (`magicmotion.pipelines.parallel`): the sequence is split as the base's
    # `_cp_plan` splits it (rotary tables, the tokens entering block 0, Wan2.2 TI2V's per-token
    # timesteps), and nothing is gathered: each process's residuals are its part of the sequence,
    # added by the base's block hooks to the same part of the base's tokens.
    _cp_plan = {
        "rope": {
            0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
            1: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
        },
        "blocks.0": {
            "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
        },
        "": {
            "timestep": ContextParallelInput(split_dim=1, expected_dims=2, split_output=False),
        },
    }

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 12,
        attention_head_dim: int = 128,
        in_channels: int = 32,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 8960,
        num_layers: int = 30,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        base_in_channels: int = 36,
        base_num_layers: int = 30,
        base_type: str = "wan",
        trajectory_palette: str = "voc",
        expert: str | None = None,
    ):
        super().__init__()
        if base_type != "wan":
            raise ModelError(f"WanTrajectoryControlNet: base_type must be 'wan', got {base_type!r}")
        if in_channels % 2:
            raise ModelError(f"WanTrajectoryControlNet: in_channels {in_channels} is not noise + trajectory")
        if trajectory_palette not in ("voc", "release"):
            raise ModelError(f"WanTrajectoryControlNet: trajectory_palette must be voc or release, got {trajectory_palette!r}")
        if expert not in EXPERTS:
            raise ModelError(f"WanTrajectoryControlNet: expert must be high, low or null, got {expert!r}")
        patch_size = tuple(patch_size)
        inner_dim = num_attention_heads * attention_head_dim

        # embeddings
        self.rope = WanRotaryPosEmbed(attention_head_dim, patch_size, rope_max_seq_len)
        self.patch_embedding = nn.Conv3d(in_channels, inner_dim, kernel_size=patch_size, stride=patch_size)
        self.condition_embedder = WanTimeTextImageEmbedding(
            dim=inner_dim,
            time_freq_dim=freq_dim,
            time_proj_dim=inner_dim * 6,
            text_embed_dim=text_dim,
            image_embed_dim=image_dim,
            pos_embed_seq_len=pos_embed_seq_len,
        )

        # control blocks
        self.blocks = nn.ModuleList(
            [
                WanTransformerBlock(
                    inner_dim, ffn_dim, num_attention_heads, qk_norm, cross_attn_norm, eps, added_kv_proj_dim
                )
                for _ in range(num_layers)
            ]
        )

        # zero-initialised residual projections, one per control block
        # Twin of CogVideoXTrajectoryControlNet.__init__ (projections)
        self.out_projectors = nn.ModuleList([nn.Linear(inner_dim, inner_dim) for _ in range(num_layers)])
        for proj in self.out_projectors:
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

        self.gradient_checkpointing = False

    # Twin of CogVideoXTrajectoryControlNet.inner_dim
    @property
    def inner_dim(self) -> int:
        return self.config.num_attention_heads * self.config.attention_head_dim

    @classmethod
    def from_transformer(cls, transformer, num_layers: int | None = None,
                         trajectory_palette: str = "voc", expert: str | None = None,
                         expand_timesteps: bool = False) -> "WanTrajectoryControlNet":
        """Build a ControlNet from a Wan image-to-video base, copying its weights.

        Copies the condition embedder, rotary settings and the first `num_layers` blocks (default: all);
        the 2C-channel patch embedding takes the base's noise channels (0..C-1) and image-latent
        channels (the last C) (TI2V-5B: its C channels twice). The projections start at zero, so the
        joint model equals the base. `expert`: "high" / "low" for a ControlNet of one A14B expert
        (built from that expert). `expand_timesteps`: the base is a Wan2.2 TI2V base (the pipeline's
        config says so), whose transformer, in_channels = out_channels, looks like a text-to-video one.
        """
        cfg = transformer.config
        if getattr(transformer, "blocks", None) is None or "rope_max_seq_len" not in cfg:
            raise ModelError(f"{type(transformer).__name__} is not a WanTransformer3DModel")
        # Twin of CogVideoXTrajectoryControlNet.from_transformer (num_layers)
        base_layers = len(transformer.blocks)
        num_layers = base_layers if num_layers is None else int(num_layers)
        if not 1 <= num_layers <= base_layers:
            raise ModelError(f"num_layers must be 1..{base_layers} (the base's blocks), got {num_layers}")
        latent = cfg.out_channels or 16
        if expand_timesteps and cfg.in_channels != latent:
            raise ModelError(f"expand_timesteps (Wan2.2 TI2V) needs in_channels = out_channels; this base has "
                             f"{cfg.in_channels} input and {latent} output channels")
        if not expand_timesteps and cfg.in_channels < 2 * latent:
            raise ModelError(
                f"Wan ControlNet needs an image-to-video base (noise + mask + image latents, e.g. 36 input "
                f"channels; a TI2V base, whose latents hold the first frame, with expand_timesteps=True); "
                f"this base has {cfg.in_channels} input and {latent} output channels"
            )
        controlnet = cls(
            **{k: cfg[k] for k in _COPIED if k in cfg},
            in_channels=2 * latent,
            num_layers=num_layers,
            base_in_channels=cfg.in_channels,
            base_num_layers=base_layers,
            trajectory_palette=trajectory_palette,
            expert=expert,
        )
        with torch.no_grad():
            w, b = transformer.patch_embedding.weight, transformer.patch_embedding.bias
            controlnet.patch_embedding.weight.copy_(torch.cat([w[:, :latent], w[:, -latent:]], dim=1))
            controlnet.patch_embedding.bias.copy_(b)
        controlnet.condition_embedder.load_state_dict(transformer.condition_embedder.state_dict())
        for own, base in zip(controlnet.blocks, transformer.blocks):
            own.load_state_dict(base.state_dict())
        return cast_like(controlnet, transformer.device, transformer.dtype)

    def check_compatible(self, transformer) -> None:
        """Raise ModelError when this ControlNet was not built for a base like `transformer`."""
        if not hasattr(transformer, "blocks") or "rope_max_seq_len" not in transformer.config:
            raise ModelError(f"a Wan ControlNet does not fit a {type(transformer).__name__} base")
        cfg, b = self.config, transformer.config
        expected = {
            "latent channels": (cfg.in_channels // 2, b.out_channels or 16),
            "base input channels": (cfg.base_in_channels, b.in_channels),
            "inner dim": (self.inner_dim, b.num_attention_heads * b.attention_head_dim),
            "attention heads": (cfg.num_attention_heads, b.num_attention_heads),
            "patch size": (tuple(cfg.patch_size), tuple(b.patch_size)),
            "text dim": (cfg.text_dim, b.text_dim),
            "image dim": (cfg.image_dim, b.image_dim),
        }
        # Twin of CogVideoXTrajectoryControlNet.check_compatible
        bad = [f"{k} {mine} vs base {theirs}" for k, (mine, theirs) in expected.items() if mine != theirs]
        if cfg.num_layers > len(transformer.blocks):
            bad.append(f"{cfg.num_layers} control blocks vs base {len(transformer.blocks)} blocks")
        if bad:
            raise ModelError("the Wan ControlNet does not fit this base: " + "; ".join(bad))

    def forward(
        self,
        noisy_latents: torch.Tensor,
        trajectory_latents: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        num_blocks: int | None = None,
    ) -> list[torch.Tensor]:
        """Control residuals, one per control block.

        Args:
            noisy_latents: (B, C, F, H, W) the noisy video latents only (not the mask / image latents;
                TI2V: the latents with the clean first frame in them), C = in_channels // 2.
            trajectory_latents: (B, C, F, H, W) VAE latents of the trajectory maps.
            timestep: (B,), or (B, L) one per token as in Wan2.2 TI2V.
            encoder_hidden_states: (B, S, text_dim) text embeddings.
            encoder_hidden_states_image: (B, S_img, image_dim) CLIP image embeddings, for bases with them.
            num_blocks: run only the first `num_blocks` control blocks (default: all).
        Returns:
            list of (B, L_video, D) residuals, L_video = F/p_t * H/p_h * W/p_w (under context
            parallelism over N processes, this process's part: L_video / N tokens).
        """
        # Twin of CogVideoXTrajectoryControlNet.forward (input checks)
        half = self.config.in_channels // 2
        if noisy_latents.shape[1] != half or trajectory_latents.shape[1] != half:
            raise ModelError(
                f"Wan ControlNet takes {half}-channel noisy and trajectory latents (B, C, F, H, W); got "
                f"{tuple(noisy_latents.shape)} and {tuple(trajectory_latents.shape)}"
            )
        if noisy_latents.shape != trajectory_latents.shape:
            raise ModelError(
                f"noisy latents {tuple(noisy_latents.shape)} and trajectory latents "
                f"{tuple(trajectory_latents.shape)} differ in shape"
            )
        num_blocks = len(self.blocks) if num_blocks is None else num_blocks

        # embeddings
        x = torch.cat([noisy_latents, trajectory_latents], dim=1)
        rotary_emb = self.rope(x)
        hidden_states = self.patch_embedding(x).flatten(2).transpose(1, 2).contiguous()
        timestep_proj, encoder_hidden_states = wan_conditions(
            self.condition_embedder, timestep, encoder_hidden_states, encoder_hidden_states_image
        )

        # control blocks
        residuals = []
        for block, proj in zip(self.blocks[:num_blocks], self.out_projectors):
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, encoder_hidden_states, timestep_proj, rotary_emb
                )
            else:
                hidden_states = block(hidden_states, encoder_hidden_states, timestep_proj, rotary_emb)
            residuals.append(proj(hidden_states))
        return residuals


def wan_conditions(
    condition_embedder: WanTimeTextImageEmbedding,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_hidden_states_image: torch.Tensor | None,
    return_temb: bool = False,
):
    """Run a Wan condition embedder the way `WanTransformer3DModel.forward` does.

    Returns (timestep_proj (B, 6, D) or (B, L, 6, D), context (B, S_img + S, D)) and, with
    `return_temb`, temb (B, D) or (B, L, D) first.
    """
    if timestep.ndim == 2:  # Wan2.2 TI2V: one timestep per token
        ts_seq_len = timestep.shape[1]
        timestep = timestep.flatten()
    else:
        ts_seq_len = None
    temb, timestep_proj, context, context_image = condition_embedder(
        timestep, encoder_hidden_states, encoder_hidden_states_image, timestep_seq_len=ts_seq_len
    )
    timestep_proj = timestep_proj.unflatten(2 if ts_seq_len is not None else 1, (6, -1))
    if context_image is not None:
        context = torch.concat([context_image, context], dim=1)
    if return_temb:
        return temb, timestep_proj, context
    return timestep_proj, context


def wan_unpatchify(hidden_states: torch.Tensor, shape: tuple[int, ...], patch_size) -> torch.Tensor:
    """(B, L, C * p_t * p_h * p_w) tokens -> (B, C, F, H, W) with (F, H, W) = shape[2:]."""
    batch, _, frames, height, width = shape
    p_t, p_h, p_w = patch_size
    x = hidden_states.reshape(batch, frames // p_t, height // p_h, width // p_w, p_t, p_h, p_w, -1)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)


__all__ = ["EXPERTS", "WanTrajectoryControlNet", "wan_conditions", "wan_unpatchify"]
