"""Segment head (the paper's latent segmentation branch, stages 2-3; training only).

Takes the hidden states after every base block (after the control residual), applies per block a
Conv3x3(D -> 64) + GroupNorm(16, 64) + ReLU on each frame's token grid, sums over blocks, upsamples
bilinearly by the spatial patch size and maps Conv1x1(64 -> 16): a prediction of the VAE latent of the
mask-trajectory video. Module names (`convs.N.0`, `convs.N.1`, `conv_out`) match the released head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..errors import ModelError
from .casting import cast_like


class SegmentHead(ModelMixin, ConfigMixin):
    """Latent mask prediction from the base's per-block hidden states.

    Args:
        hidden_size: token width D of the base transformer.
        num_blocks: number of hidden-state inputs (the base's blocks).
        mid_channels: channels of each per-block conv (64 in the release).
        out_channels: latent channels of the prediction (16, the VAE's).
        num_groups: GroupNorm groups (16 in the release).
        upsample: bilinear upsampling factor; equal to the base's spatial patch size so the output
            has the latent's height and width.
    """

    @register_to_config
    def __init__(
        self,
        hidden_size: int,
        num_blocks: int,
        mid_channels: int = 64,
        out_channels: int = 16,
        num_groups: int = 16,
        upsample: int = 2,
    ):
        super().__init__()
        self.convs = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(hidden_size, mid_channels, kernel_size=3, padding=1),
                    nn.GroupNorm(num_groups, mid_channels),
                    nn.ReLU(),
                )
                for _ in range(num_blocks)
            ]
        )
        self.conv_out = nn.Conv2d(mid_channels, out_channels, kernel_size=1)

    @classmethod
    def from_transformer(cls, transformer, **kwargs) -> "SegmentHead":
        """A head sized for a Wan or CogVideoX base: D, number of blocks and spatial patch size from it."""
        cfg = transformer.config
        blocks = getattr(transformer, "blocks", None) or getattr(transformer, "transformer_blocks", None)
        if blocks is None:
            raise ModelError(f"{type(transformer).__name__} has no transformer blocks to attach a head to")
        patch = cfg.patch_size
        if isinstance(patch, (tuple, list)) and patch[-1] != patch[-2]:
            raise ModelError(f"{type(transformer).__name__} has a non-square spatial patch {patch[-2]}x{patch[-1]}: "
                             "the segment head upsamples both sides by one factor")
        spatial = patch[-1] if isinstance(patch, (tuple, list)) else patch
        kwargs.setdefault("upsample", int(spatial))
        head = cls(cfg.num_attention_heads * cfg.attention_head_dim, len(blocks), **kwargs)
        return cast_like(head, transformer.device, transformer.dtype)

    def forward(self, hidden_states_list: list[torch.Tensor], grid: tuple[int, int, int]) -> torch.Tensor:
        """Predict the latent of the mask-trajectory video.

        Args:
            hidden_states_list: one (B, L_video, D) tensor per block, L_video = F * h * w, tokens in
                frame-major, then row-major order (as both bases lay them out).
            grid: (F, h, w) token grid.
        Returns:
            (B, F, out_channels, h * upsample, w * upsample).
        """
        if len(hidden_states_list) != len(self.convs):
            raise ModelError(
                f"SegmentHead has {len(self.convs)} block inputs but got {len(hidden_states_list)} hidden states"
            )
        frames, h, w = grid
        batch, length, dim = hidden_states_list[0].shape
        if length != frames * h * w:
            raise ModelError(f"SegmentHead: {length} tokens do not fill the grid {frames}x{h}x{w}")
        total = None
        for hidden, conv in zip(hidden_states_list, self.convs):
            x = hidden.reshape(batch * frames, h, w, dim).permute(0, 3, 1, 2)  # (B*F, D, h, w)
            x = conv(x)
            total = x if total is None else total + x
        scale = self.config.upsample
        if scale != 1:
            total = F.interpolate(total, scale_factor=scale, mode="bilinear", align_corners=False)
        out = self.conv_out(total)
        return out.reshape(batch, frames, *out.shape[1:])
