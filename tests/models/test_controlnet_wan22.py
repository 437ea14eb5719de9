"""Wan ControlNets at any latent width: Wan2.2 TI2V-5B (48 latent channels, the first frame in the
latents, per-token timesteps) and the per-expert ControlNets of Wan2.2 A14B."""

from __future__ import annotations

import json

import pytest
import torch
from models_helpers import perturb

from magicmotion.errors import ModelError
from magicmotion.models import MagicMotionTransformer, WanTrajectoryControlNet, tiny_wan_transformer


def ti2v_base(**overrides):
    """A tiny TI2V-5B-style base: 48 latent channels in and out (no mask / image-latent channels)."""
    return tiny_wan_transformer(in_channels=48, out_channels=48, **overrides)


def ti2v_inputs(base, frames: int = 3, size: int = 4, seed: int = 0):
    """Base kwargs with one timestep per token (the first latent frame's tokens at 0, as diffusers'
    TI2V path gives them), and trajectory latents."""
    g = torch.Generator().manual_seed(seed)
    tokens_per_frame = (size // 2) ** 2
    t = torch.full((1, frames * tokens_per_frame), 700.0)
    t[:, :tokens_per_frame] = 0
    kwargs = dict(hidden_states=torch.randn(1, 48, frames, size, size, generator=g), timestep=t,
                  encoder_hidden_states=torch.randn(1, 4, base.config.text_dim, generator=g))
    return kwargs, torch.randn(1, 48, frames, size, size, generator=g)


def test_ti2v_controlnet_reads_48_channels_twice():
    base = ti2v_base()
    cn = WanTrajectoryControlNet.from_transformer(base, num_layers=1, expand_timesteps=True)
    w = base.patch_embedding.weight
    assert cn.config.in_channels == 96 and cn.config.base_in_channels == 48
    assert torch.equal(cn.patch_embedding.weight[:, :48], w) and torch.equal(cn.patch_embedding.weight[:, 48:], w)
    assert cn.config.expert is None


def test_ti2v_joint_model_equals_base_at_scale_zero_and_uses_per_token_timesteps():
    base = ti2v_base()
    model = MagicMotionTransformer(base, perturb(WanTrajectoryControlNet.from_transformer(base, expand_timesteps=True)))
    kwargs, trajectory = ti2v_inputs(base)
    with torch.no_grad():
        expected = base(**kwargs, return_dict=False)[0]
        off = model(**kwargs, trajectory_latents=trajectory, conditioning_scale=0.0).sample
        on = model(**kwargs, trajectory_latents=trajectory).sample
        flat = model.controlnet_residuals(**{**kwargs, "timestep": torch.tensor([700.0])},
                                          trajectory_latents=trajectory)
        per_token = model.controlnet_residuals(**kwargs, trajectory_latents=trajectory)
        constant = model.controlnet_residuals(**{**kwargs, "timestep": torch.full_like(kwargs["timestep"], 700.0)},
                                              trajectory_latents=trajectory)
    assert expected.shape == on.shape == (1, 48, 3, 4, 4)
    torch.testing.assert_close(off, expected, atol=1e-6, rtol=1e-6)  # scale 0: measured 0
    assert (on - expected).abs().max() > 1e-3  # measured 0.93
    # one timestep per token: all 700 is the plain timestep 700; the first frame's tokens at 0 change
    # the residuals, most of all on those tokens (the others only through attention)
    torch.testing.assert_close(constant[-1], flat[-1], atol=1e-6, rtol=1e-6)  # measured 6e-8: one float32 ulp at 0.6
    diff = (per_token[0] - flat[0]).abs().amax(dim=-1)[0]
    assert diff[:4].min() > 2 * diff[4:].max() > 0


def test_latent_width_must_match_the_base():
    wan21, ti2v = tiny_wan_transformer(), ti2v_base()
    with pytest.raises(ModelError, match="latent channels 48 vs base 16"):
        MagicMotionTransformer(wan21, WanTrajectoryControlNet.from_transformer(ti2v, expand_timesteps=True))
    with pytest.raises(ModelError, match="latent channels 16 vs base 48"):
        MagicMotionTransformer(ti2v, WanTrajectoryControlNet.from_transformer(wan21))
    with pytest.raises(ModelError, match="20 input and 16 output channels"):
        WanTrajectoryControlNet.from_transformer(tiny_wan_transformer(in_channels=20))
    with pytest.raises(ModelError, match="expand_timesteps=True"):  # a TI2V transformer looks like a T2V one
        WanTrajectoryControlNet.from_transformer(ti2v)
    with pytest.raises(ModelError, match="needs in_channels = out_channels"):
        WanTrajectoryControlNet.from_transformer(wan21, expand_timesteps=True)
    model = MagicMotionTransformer(ti2v, WanTrajectoryControlNet.from_transformer(ti2v, expand_timesteps=True))
    kwargs, _ = ti2v_inputs(ti2v)
    with pytest.raises(ModelError, match="48 channels"):
        model(**kwargs, trajectory_latents=torch.zeros(1, 16, 3, 4, 4))


def test_expert_is_saved_and_checked(tmp_path):
    high, low = tiny_wan_transformer(seed=1), tiny_wan_transformer(seed=2)
    cn_high = WanTrajectoryControlNet.from_transformer(high, num_layers=1, expert="high")
    cn_low = WanTrajectoryControlNet.from_transformer(low, num_layers=1, expert="low")
    assert torch.equal(cn_high.blocks[0].ffn.net[0].proj.weight, high.blocks[0].ffn.net[0].proj.weight)
    assert torch.equal(cn_low.blocks[0].ffn.net[0].proj.weight, low.blocks[0].ffn.net[0].proj.weight)
    cn_low.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["expert"] == "low"
    assert WanTrajectoryControlNet.from_pretrained(tmp_path).config.expert == "low"
    with pytest.raises(ModelError, match="expert must be high, low or null"):
        WanTrajectoryControlNet.from_transformer(high, expert="middle")
