"""MagicMotionTransformer.controlnet_residuals and forward(control_residuals=...): the ControlNet apart
from the base, so pipelines can reuse residuals across steps and guidance branches."""

from __future__ import annotations

import pytest
import torch
from models_helpers import build_base, build_inputs, controlnet_class, perturb

from magicmotion.errors import ModelError
from magicmotion.models import MagicMotionTransformer


def joint(family: str, control_layers: int | None = 2) -> MagicMotionTransformer:
    base = build_base(family, num_layers=3)
    return MagicMotionTransformer(base, perturb(controlnet_class(base).from_transformer(base, num_layers=control_layers)))


@torch.no_grad()
@pytest.mark.parametrize("scale, blocks_run", [(1.0, 2), ([0.5, 2.0], 2), ([0.7, 0.0], 1), (0.0, 0)])
def test_given_residuals_equal_the_plain_forward_exactly(family, scale, blocks_run):
    model = joint(family)
    inputs, trajectory = build_inputs(model.base, batch=2)
    expected = model(trajectory_latents=trajectory, conditioning_scale=scale, **inputs).sample
    residuals = model.controlnet_residuals(trajectory_latents=trajectory, conditioning_scale=scale, **inputs)
    # blocks after the last non-zero scale are not run
    assert len(residuals) == blocks_run
    got = model(trajectory_latents=None, conditioning_scale=scale, control_residuals=residuals, **inputs).sample
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


@torch.no_grad()
def test_residuals_of_other_inputs_change_the_output_and_wrong_counts_fail(family):
    model = joint(family)
    inputs, trajectory = build_inputs(model.base)
    other = model.controlnet_residuals(trajectory_latents=trajectory * -1.0, **inputs)
    plain = model(trajectory_latents=trajectory, **inputs).sample
    reused = model(trajectory_latents=None, control_residuals=other, **inputs).sample
    assert (plain - reused).abs().max() > 1e-4  # measured 0.86-1.69
    with pytest.raises(ModelError, match="3 control residuals"):
        model(trajectory_latents=None, control_residuals=other + other[:1], **inputs)
