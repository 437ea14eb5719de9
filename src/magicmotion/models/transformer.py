"""The joint MagicMotion model: base transformer + Trajectory ControlNet (+ optional segment head).

The base's own forward runs (diffusers' `WanTransformer3DModel` / `CogVideoXTransformer3DModel`), with
one change: a diffusers hook on base block i adds the control residual i to the video tokens the block
returns, times the conditioning scale. With a zero-initialised ControlNet, or with scale 0, the output
equals the base's. Since the base's forward is the one that runs, diffusers' mechanisms work as on the
base alone: `enable_cache` (the block hook is registered innermost, so a block cache such as First
Block Cache treats block + residual as one block), the LoRA scale in `attention_kwargs`, layerwise
casting, group offloading and model offload hooks. `controlnet_residuals` computes the residuals alone and
`forward(..., control_residuals=...)` adds given ones, so a pipeline can reuse them across steps or
guidance branches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.utils import BaseOutput
from torch import nn

from ..errors import ModelError
from .controlnet_cogvideox import CogVideoXTrajectoryControlNet
from .controlnet_wan import WanTrajectoryControlNet
from .segment_head import SegmentHead


CONTROL_HOOK = "magicmotion_control_residual"


class ControlResidualHook(ModelHook):
    """On one base block: adds `scale * residual` to the video tokens the block returns and appends the
    result to `record` (the segment head's inputs), while a MagicMotion forward has set them; passes the
    output through otherwise. A residual with a multiple of the block's batch (FasterCache runs only
    the conditional half of a batched guidance step) gives its last part, the conditional one. Under
    context parallelism block output and residual are the same part of the sequence (both models split
    by their `_cp_plan`); a residual of another length is a ModelError."""

    def __init__(self):
        super().__init__()
        self.residual: torch.Tensor | None = None
        self.scale = 0.0
        self.record: list[torch.Tensor] | None = None

    def post_forward(self, module, output):
        if self.residual is None and self.record is None:
            return output
        x = output[0] if isinstance(output, tuple) else output
        if self.residual is not None:
            r = self.residual
            if r.shape[0] != x.shape[0]:
                r = r[-x.shape[0]:]
            if r.shape[1] != x.shape[1]:  # e.g. a ControlNet left whole beside a split base
                raise ModelError(
                    f"a control residual of {r.shape[1]} tokens for a block output of {x.shape[1]}: under context "
                    "parallelism the ControlNet must be split like the base (magicmotion.pipelines.parallel)")
            x = torch.add(x, r.to(x.dtype), alpha=self.scale)
        if self.record is not None:
            self.record.append(x)
        return (x, *output[1:]) if isinstance(output, tuple) else x


def control_hooks(blocks) -> list[ControlResidualHook]:
    """The `ControlResidualHook` of each base block, registered on first use as the innermost diffusers
    hook of the block (hooks registered before it, e.g. by an earlier `enable_cache`, are re-registered
    around it), so that block caches skip or replay block + residual together."""
    hooks = []
    for block in blocks:
        registry = HookRegistry.check_if_exists_or_initialize(block)
        hook = registry.get_hook(CONTROL_HOOK)
        if hook is None:
            others = [(name, registry.hooks[name]) for name in registry._hook_order]
            for name, _ in reversed(others):
                registry.remove_hook(name, recurse=False)
            hook = ControlResidualHook()
            registry.register_hook(hook, CONTROL_HOOK)
            for name, other in others:
                registry.register_hook(other, name)
        hooks.append(hook)
    return hooks


@dataclass
class MagicMotionTransformerOutput(BaseOutput):
    """Output of `MagicMotionTransformer`.

    sample: the base's prediction (noise / velocity / flow), in the base's layout
        (Wan (B, 16, F, H, W), CogVideoX (B, F, 16, H, W)).
    segmentation: the latent mask prediction in the trajectory-latent layout, or None without a
        segment head or when not asked for.
    """

    sample: torch.Tensor
    segmentation: torch.Tensor | None = None


class MagicMotionTransformer(nn.Module):
    """Base DiT + Trajectory ControlNet (+ segment head), one forward.

    Args:
        transformer: a `WanTransformer3DModel` (I2V: 36 channels; Wan2.2 TI2V: 48, the first frame in
            the latents; one expert of Wan2.2 A14B) or `CogVideoXTransformer3DModel` (I2V, 32 channels).
        controlnet: the matching `WanTrajectoryControlNet` / `CogVideoXTrajectoryControlNet`; may have
            fewer blocks than the base (then only the first base blocks get residuals).
        segment_head: optional `SegmentHead` with one input per base block.
        freeze_base: set `requires_grad=False` on the base (the paper trains ControlNet and head only).
    """

    def __init__(self, transformer, controlnet, segment_head: SegmentHead | None = None, freeze_base: bool = True):
        super().__init__()
        if isinstance(controlnet, WanTrajectoryControlNet):
            self.is_wan = True
        elif isinstance(controlnet, CogVideoXTrajectoryControlNet):
            self.is_wan = False
        else:
            raise ModelError(f"{type(controlnet).__name__} is not a Trajectory ControlNet")
        controlnet.check_compatible(transformer)
        blocks = transformer.blocks if self.is_wan else transformer.transformer_blocks
        if segment_head is not None:
            inner = transformer.config.num_attention_heads * transformer.config.attention_head_dim
            if segment_head.config.hidden_size != inner or segment_head.config.num_blocks != len(blocks):
                raise ModelError(
                    f"the segment head takes {segment_head.config.num_blocks} blocks of width "
                    f"{segment_head.config.hidden_size}; the base has {len(blocks)} blocks of width {inner}"
                )
            if self._temporal_patch(transformer) != 1:
                raise ModelError("the segment head needs a base with temporal patch size 1")
        self.base = transformer
        self.controlnet = controlnet
        self.segment_head = segment_head
        self.hooks = control_hooks(blocks)
        if freeze_base:
            self.base.requires_grad_(False)

    # ------------------------------------------------------------------------------------ helpers

    @staticmethod
    def _temporal_patch(transformer) -> int:
        p = transformer.config.patch_size
        if isinstance(p, (tuple, list)):
            return int(p[0])
        return int(transformer.config.get("patch_size_t") or 1)

    @property
    def config(self):
        """The base transformer's config (pipelines read patch size, channels, ... from it)."""
        return self.base.config

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def num_control_blocks(self) -> int:
        return len(self.controlnet.out_projectors)

    def cache_context(self, name: str):
        """The base's diffusers cache context (diffusers' pipelines wrap each branch's call in it)."""
        return self.base.cache_context(name)

    def enable_cache(self, config) -> None:
        """diffusers' `enable_cache` on the base (FirstBlockCacheConfig, TaylorSeerCacheConfig,
        FasterCacheConfig, ...); the control residuals ride inside the cached blocks."""
        self.base.enable_cache(config)

    @property
    def is_cache_enabled(self) -> bool:
        return self.base.is_cache_enabled

    def enable_gradient_checkpointing(self) -> None:
        """Recompute base and control blocks in the backward pass instead of storing activations."""
        self.base.enable_gradient_checkpointing()
        self.controlnet.enable_gradient_checkpointing()

    def disable_gradient_checkpointing(self) -> None:
        self.base.disable_gradient_checkpointing()
        self.controlnet.disable_gradient_checkpointing()

    def trainable_parameters(self) -> list[nn.Parameter]:
        """ControlNet and head parameters (what the paper trains)."""
        params = list(self.controlnet.parameters())
        if self.segment_head is not None:
            params += list(self.segment_head.parameters())
        return params

    def conditioning_scales(self, conditioning_scale: float | Sequence[float] | torch.Tensor) -> list[float]:
        """One float per control block from a float or a per-block sequence (ModelError on a wrong length)."""
        n = self.num_control_blocks
        if isinstance(conditioning_scale, torch.Tensor) and conditioning_scale.ndim == 0:
            conditioning_scale = float(conditioning_scale)
        if isinstance(conditioning_scale, (int, float)):
            return [float(conditioning_scale)] * n
        scales = [float(s) for s in conditioning_scale]
        if len(scales) != n:
            raise ModelError(
                f"conditioning_scale has {len(scales)} values but the ControlNet has {n} control blocks"
            )
        return scales

    def _segment(self, per_block: list[torch.Tensor], grid: tuple[int, int, int]) -> torch.Tensor:
        """The head on the per-block hidden states, in the head's dtype (float32 beside a bf16 base)."""
        dtype = self.segment_head.dtype
        return self.segment_head([h.to(dtype) for h in per_block], grid)

    # ------------------------------------------------------------------------------------ forward

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        trajectory_latents: torch.Tensor,
        conditioning_scale: float | Sequence[float] = 1.0,
        return_segmentation: bool = False,
        return_dict: bool = True,
        control_residuals: Sequence[torch.Tensor] | None = None,
        **base_kwargs: Any,
    ) -> MagicMotionTransformerOutput | tuple:
        """Prediction of the base with trajectory control.

        Args:
            hidden_states: the base's input: Wan (B, 36, F, H, W) = noise + mask + image latents
                (Wan2.2 TI2V: (B, 48, F, H, W) latents with the clean first frame);
                CogVideoX (B, F, 32, H, W) = noise + image latents.
            timestep: (B,), or Wan2.2 TI2V's (B, L) one per token.
            encoder_hidden_states: (B, S, text_dim) text embeddings.
            trajectory_latents: (B, C, F, H, W) for Wan (C = the VAE's z_dim: 16, TI2V 48),
                (B, F, 16, H, W) for CogVideoX.
            conditioning_scale: a float or one float per control block; 0 skips the ControlNet.
            return_segmentation: also run the segment head (if any).
            control_residuals: residuals from `controlnet_residuals` (perhaps of another step or
                batch) to add instead of running the ControlNet; `trajectory_latents` is then unused
                (may be None). Scaled by `conditioning_scale` as fresh ones are.
            **base_kwargs: the base's extras: Wan `encoder_hidden_states_image`, `attention_kwargs`;
                CogVideoX `image_rotary_emb`, `ofs`, `timestep_cond`, `attention_kwargs`.
        Returns:
            MagicMotionTransformerOutput(sample, segmentation) or, with return_dict=False,
            the tuple (sample, segmentation).
        """
        scales = self.conditioning_scales(conditioning_scale)
        if control_residuals is None:
            residuals = self.controlnet_residuals(hidden_states, timestep, encoder_hidden_states, trajectory_latents,
                                                  scales, **base_kwargs)
        else:
            residuals = list(control_residuals)
            if len(residuals) > len(scales):
                raise ModelError(f"{len(residuals)} control residuals but the ControlNet has {len(scales)} blocks")
        want_seg = return_segmentation and self.segment_head is not None
        if want_seg and getattr(self.base, "_parallel_config", None) is not None:
            raise ModelError("the segment head (training) needs the whole sequence; this base is split by context parallelism")
        record = [] if want_seg else None
        for i, hook in enumerate(self.hooks):
            hook.residual = residuals[i] if i < len(residuals) else None
            hook.scale, hook.record = (scales[i] if i < len(scales) else 0.0), record
        try:  # the base's own forward (and its diffusers hooks), the residuals added by the block hooks
            sample = self.base(hidden_states=hidden_states, timestep=timestep,
                               encoder_hidden_states=encoder_hidden_states, return_dict=False, **base_kwargs)[0]
        finally:
            for hook in self.hooks:
                hook.residual = hook.record = None
        segmentation = None
        if want_seg:  # in the trajectory latents' layout: Wan (B, C, F, H, W), CogVideoX (B, F, C, H, W)
            segmentation = self._segment(record, self._token_grid(hidden_states))
            segmentation = segmentation.permute(0, 2, 1, 3, 4) if self.is_wan else segmentation
        if not return_dict:
            return (sample, segmentation)
        return MagicMotionTransformerOutput(sample=sample, segmentation=segmentation)

    def controlnet_residuals(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        trajectory_latents: torch.Tensor,
        conditioning_scale: float | Sequence[float] = 1.0,
        **base_kwargs: Any,
    ) -> list[torch.Tensor]:
        """The ControlNet's residuals for `forward(..., control_residuals=...)`, unscaled.

        Args as `forward`. Only the control blocks up to the last non-zero scale run (none at scale 0:
        then the list is empty).
        Returns:
            list of (B, L_video, D) residuals, one per control block run, in the ControlNet's dtype.
        """
        scales = self.conditioning_scales(conditioning_scale)
        # control blocks after the last non-zero scale change nothing: do not run them
        num_run = max((i + 1 for i, s in enumerate(scales) if s != 0.0), default=0)
        residuals = self._wan_residuals if self.is_wan else self._cogvideox_residuals
        return residuals(hidden_states, timestep, encoder_hidden_states, trajectory_latents, num_run, **base_kwargs)

    # Twin of _cogvideox_residuals: the same steps on Wan's (B, C, F, H, W) latents and its ControlNet's
    # arguments; kept apart as each base's forward is in diffusers. Change both.
    def _wan_residuals(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        trajectory_latents: torch.Tensor,
        num_run: int,
        encoder_hidden_states_image: torch.Tensor | None = None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> list[torch.Tensor]:
        latent = self.controlnet.config.in_channels // 2
        if trajectory_latents.shape[1] != latent or trajectory_latents.shape[2:] != hidden_states.shape[2:]:
            raise ModelError(
                f"trajectory latents {tuple(trajectory_latents.shape)} do not fit the latents "
                f"{tuple(hidden_states.shape)} (Wan layout (B, C, F, H, W), {latent} channels)"
            )
        if not num_run:
            return []
        dtype = self.controlnet.dtype  # may differ from the base's (float32 trained copy of a bf16 base)
        return self.controlnet(
            hidden_states[:, :latent].to(dtype), trajectory_latents.to(dtype), timestep,
            encoder_hidden_states.to(dtype),
            encoder_hidden_states_image=None if encoder_hidden_states_image is None
            else encoder_hidden_states_image.to(dtype),
            num_blocks=num_run,
        )

    # Twin of _wan_residuals, on CogVideoX's (B, F, C, H, W) latents and its ControlNet's arguments
    def _cogvideox_residuals(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        trajectory_latents: torch.Tensor,
        num_run: int,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        timestep_cond: torch.Tensor | None = None,
        ofs: torch.Tensor | None = None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> list[torch.Tensor]:
        latent = self.controlnet.config.in_channels // 2
        if trajectory_latents.shape[2] != latent or (
            trajectory_latents.shape[:2] + trajectory_latents.shape[3:]
            != hidden_states.shape[:2] + hidden_states.shape[3:]
        ):
            raise ModelError(
                f"trajectory latents {tuple(trajectory_latents.shape)} do not fit the latents "
                f"{tuple(hidden_states.shape)} (CogVideoX layout (B, F, C, H, W), {latent} channels)"
            )
        if not num_run:
            return []
        dtype = self.controlnet.dtype  # may differ from the base's (float32 trained copy of a bf16 base)
        return self.controlnet(
            hidden_states[:, :, :latent].to(dtype), trajectory_latents.to(dtype), timestep,
            encoder_hidden_states.to(dtype), image_rotary_emb=image_rotary_emb,
            timestep_cond=None if timestep_cond is None else timestep_cond.to(dtype), ofs=ofs,
            attention_kwargs=attention_kwargs, num_blocks=num_run,
        )

    def _token_grid(self, hidden_states: torch.Tensor) -> tuple[int, int, int]:
        """(frames, height, width) of the base's token grid for latents `hidden_states`."""
        if self.is_wan:
            p_t, p_h, p_w = self.base.config.patch_size
            return hidden_states.shape[2] // p_t, hidden_states.shape[3] // p_h, hidden_states.shape[4] // p_w
        p = self.base.config.patch_size
        return hidden_states.shape[1], hidden_states.shape[3] // p, hidden_states.shape[4] // p
