"""One denoising step's predictions, with the speed options both pipelines share (all off by default).

- `cfg_mode`: "batched" (default) runs the unconditional and conditional branches of classifier-free
  guidance as one batch; "sequential" runs them one after the other (half the activation peak, the
  same result within float rounding).
- `control_every` / `control_dense`: run the ControlNet on every `control_every`-th step only and add
  the residuals of the last step that ran it in between; the first `control_dense` fraction of the
  steps (where the layout forms) runs it on every step. 1 / 0 (default): every step.
- `control_branches`: "both" (default) runs the ControlNet in both guidance branches, each with its
  own text; "cond" runs it once, on the conditional text, and adds its residuals to both branches.

Each call of the base runs in its own diffusers cache context, as diffusers' pipelines do: "cond_uncond"
for a batched step, "uncond" and "cond" for branches one after the other (and without guidance), so a
cache enabled on the base (`transformer.enable_cache`, `load_pipeline(cache=...)`) keeps one state per
branch. FasterCache approximates the unconditional half of a batched step, so it needs guidance and
`cfg_mode="batched"` (PipelineError otherwise).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import PipelineError

CFG_MODES = ("batched", "sequential")
CONTROL_BRANCHES = ("both", "cond")


def check_speed_options(cfg_mode: str, control_every: int, control_dense: float, control_branches: str) -> None:
    """PipelineError naming the option on a value the pipelines cannot run with."""
    if cfg_mode not in CFG_MODES:
        raise PipelineError(f"unknown cfg_mode {cfg_mode!r}: expected one of {', '.join(CFG_MODES)}")
    if control_branches not in CONTROL_BRANCHES:
        raise PipelineError(
            f"unknown control_branches {control_branches!r}: expected one of {', '.join(CONTROL_BRANCHES)}")
    if isinstance(control_every, bool) or not isinstance(control_every, int) or control_every < 1:
        raise PipelineError(f"control_every must be an integer >= 1, got {control_every!r}")
    if not isinstance(control_dense, (int, float)) or not math.isfinite(control_dense) or not 0 <= control_dense <= 1:
        raise PipelineError(f"control_dense must be a fraction in 0..1, got {control_dense!r}")


def control_steps(num_steps: int, control_every: int = 1, control_dense: float = 0.0) -> list[bool]:
    """Which steps run the ControlNet: all of the first ceil(control_dense * num_steps), then the first
    step after them and every `control_every`-th one from there. Step 0 always runs it."""
    dense = math.ceil(control_dense * num_steps)
    return [i < dense or (i - dense) % control_every == 0 for i in range(num_steps)]


def batch_timestep(t: torch.Tensor, batch: int) -> torch.Tensor:
    """A step's timestep for a batch: scalar -> (B,); one per token (1, L) -> (B, L)."""
    return t.expand(batch) if t.ndim == 0 else t.expand(batch, *t.shape[1:])


class GuidedPrediction:
    """The joint model's predictions for one step, with the speed options; holds the control residuals
    of the last step that ran the ControlNet.

    Args:
        model: a `MagicMotionTransformer`.
        num_steps: the denoising steps (for the control schedule).
        conditioning_scale: the ControlNet's scale (a float or one per control block).
        cfg_mode, control_every, control_dense, control_branches: see the module's docstring.
    """

    def __init__(self, model, num_steps: int, conditioning_scale, cfg_mode: str = "batched",
                 control_every: int = 1, control_dense: float = 0.0, control_branches: str = "both"):
        check_speed_options(cfg_mode, control_every, control_dense, control_branches)
        self.model = model
        self.scale = conditioning_scale
        self.control = any(model.conditioning_scales(conditioning_scale))
        self.runs = control_steps(num_steps, control_every, control_dense)
        self.cfg_mode = cfg_mode
        self.control_branches = control_branches
        self.residuals: dict[str, list[torch.Tensor]] = {}

    def _residuals(self, x, trajectory, t, context, per_sample, shared) -> list[torch.Tensor]:
        return self.model.controlnet_residuals(x, batch_timestep(t, x.shape[0]), context, trajectory, self.scale,
                                               **per_sample, **shared)

    def _predict(self, branch, x, t, context, residuals, per_sample, shared) -> torch.Tensor:
        with self.model.cache_context(branch):
            return self.model(hidden_states=x, timestep=batch_timestep(t, x.shape[0]), encoder_hidden_states=context,
                              trajectory_latents=None, conditioning_scale=self.scale, control_residuals=residuals,
                              return_dict=False, **per_sample, **shared)[0]

    def _check_cache(self, batched: bool) -> None:
        """FasterCache drops the unconditional half of a batched step: refuse the modes it cannot work in."""
        registry = getattr(self.model.base, "_diffusers_hook", None)
        if registry is not None and registry.get_hook("faster_cache_denoiser") is not None and not batched:
            raise PipelineError("the FasterCache cache needs classifier-free guidance (guidance_scale > 1) with "
                                "cfg_mode 'batched'; use another cache (first-block, taylorseer) or none")

    def __call__(self, step: int, x: torch.Tensor, trajectory: torch.Tensor, t: torch.Tensor,
                 negative: torch.Tensor | None, positive: torch.Tensor,
                 per_sample: dict[str, torch.Tensor | None] | None = None,
                 shared: dict[str, Any] | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(unconditional, conditional) predictions for step `step` (unconditional None without
        guidance, i.e. `negative` None).

        x, trajectory: one branch's model input and trajectory latents (batch B); t: the timestep
        (a scalar tensor, or (1, L) one per token as Wan2.2 TI2V takes); negative, positive: text
        embeddings (B, S, D); per_sample: the base's extras
        with a batch axis (Wan's `encoder_hidden_states_image`), stacked like the text in a batched
        step; shared: the rest (`attention_kwargs`, CogVideoX's `image_rotary_emb`, `ofs`).
        """
        per_sample = {k: v for k, v in (per_sample or {}).items() if v is not None}
        shared = shared or {}
        cfg = negative is not None
        batched = cfg and self.cfg_mode == "batched"
        if step == 0:
            self._check_cache(batched)

        def stacked(a, b):
            return torch.cat([a, b])

        both = {k: stacked(v, v) for k, v in per_sample.items()}
        # control residuals: fresh on the schedule's steps, else the last ones
        if not self.control:
            self.residuals = {"batch": [], "uncond": [], "cond": []}
        elif self.runs[step] or not self.residuals:
            if not cfg or self.control_branches == "cond":
                cond = self._residuals(x, trajectory, t, positive, per_sample, shared)
                self.residuals = {"cond": cond, "uncond": cond}
                if batched:
                    self.residuals["batch"] = [stacked(r, r) for r in cond]
            elif batched:
                self.residuals = {"batch": self._residuals(stacked(x, x), stacked(trajectory, trajectory), t,
                                                           stacked(negative, positive), both, shared)}
            else:
                self.residuals = {"uncond": self._residuals(x, trajectory, t, negative, per_sample, shared),
                                  "cond": self._residuals(x, trajectory, t, positive, per_sample, shared)}

        # the base, with them
        if not cfg:
            return None, self._predict("cond", x, t, positive, self.residuals["cond"], per_sample, shared)
        if batched:
            pred = self._predict("cond_uncond", stacked(x, x), t, stacked(negative, positive), self.residuals["batch"],
                                 both, shared)
            uncond, cond = pred.chunk(2)
            return uncond, cond
        uncond = self._predict("uncond", x, t, negative, self.residuals["uncond"], per_sample, shared)
        cond = self._predict("cond", x, t, positive, self.residuals["cond"], per_sample, shared)
        return uncond, cond


__all__ = ["CFG_MODES", "CONTROL_BRANCHES", "GuidedPrediction", "batch_timestep", "check_speed_options", "control_steps"]
