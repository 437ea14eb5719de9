"""MagicMotionTransformer: base + Trajectory ControlNet (+ head) in one forward."""

from __future__ import annotations

import pytest
import torch
from models_helpers import base_blocks, build_base, build_inputs, control_blocks, controlnet_class, perturb

from magicmotion.errors import ModelError
from magicmotion.models import MagicMotionTransformer, MagicMotionTransformerOutput, SegmentHead


def joint(family: str, num_layers: int = 3, control_layers: int | None = None, head: bool = False, nonzero=False):
    base = build_base(family, num_layers=num_layers)
    controlnet = controlnet_class(base).from_transformer(base, num_layers=control_layers)
    if nonzero:
        perturb(controlnet)
    segment_head = SegmentHead.from_transformer(base) if head else None
    return MagicMotionTransformer(base, controlnet, segment_head)


def _hidden_and_text(args, kwargs):
    hidden = args[0] if args else kwargs["hidden_states"]
    text = args[1] if len(args) > 1 else kwargs["encoder_hidden_states"]
    return hidden, text


def _as_pair(output):
    return output if isinstance(output, tuple) else (output, None)


@torch.no_grad()
def test_zero_initialised_controlnet_equals_base(family):
    model = joint(family)
    inputs, trajectory = build_inputs(model.base, batch=2)
    expected = model.base(**inputs).sample
    out = model(trajectory_latents=trajectory, **inputs)
    assert isinstance(out, MagicMotionTransformerOutput)
    assert out.sample.shape == expected.shape
    assert torch.allclose(out.sample, expected, atol=0, rtol=0)  # adds exact zeros: measured 0 (was 1e-6)
    assert out.segmentation is None


@torch.no_grad()
def test_scale_zero_equals_base_and_runs_no_control_block(family):
    model = joint(family, nonzero=True)
    inputs, trajectory = build_inputs(model.base)
    calls = []
    for block in control_blocks(model.controlnet):
        block.register_forward_hook(lambda *a: calls.append(1))
    model.controlnet.register_forward_hook(lambda *a: calls.append("controlnet"))

    expected = model.base(**inputs).sample
    for scale in (0.0, [0.0] * model.num_control_blocks, torch.tensor(0.0)):
        out = model(trajectory_latents=trajectory, conditioning_scale=scale, **inputs).sample
        assert torch.allclose(out, expected, atol=0, rtol=0)  # no control block runs: measured 0 (was 1e-6)
    assert calls == []
    # the same model with scale 1 does run them and changes the output
    out = model(trajectory_latents=trajectory, **inputs).sample
    assert len(calls) == model.num_control_blocks + 1
    assert not torch.allclose(out, expected, atol=1e-4)  # measured 1.4 apart


@pytest.mark.parametrize("control_layers, scales", [(2, [0.5, 2.0]), (3, 1.5)])
@torch.no_grad()
def test_residual_i_is_added_after_base_block_i_to_video_tokens_only(family, control_layers, scales):
    """Input of base block i+1 = output of base block i + scale_i * residual_i (video tokens); the
    text stream (CogVideoX) is untouched; blocks beyond the control blocks get nothing."""
    model = joint(family, num_layers=3, control_layers=control_layers, nonzero=True)
    inputs, trajectory = build_inputs(model.base)
    extras = {k: v for k, v in inputs.items() if k in ("encoder_hidden_states_image", "image_rotary_emb")}
    noisy = inputs["hidden_states"][:, :16] if model.is_wan else inputs["hidden_states"][:, :, :16]
    residuals = model.controlnet(noisy, trajectory, inputs["timestep"], inputs["encoder_hidden_states"], **extras)
    assert len(residuals) == control_layers
    scale_list = model.conditioning_scales(scales)

    block_in, block_out = [], []
    for block in base_blocks(model.base):
        block.register_forward_pre_hook(lambda m, a, k: block_in.append(_hidden_and_text(a, k)), with_kwargs=True)
        # the block's own output, before the control hook adds the residual: its class forward again
        block.register_forward_hook(lambda m, a, k, o: block_out.append(_as_pair(type(m).forward(m, *a, **k))),
                                    with_kwargs=True)
    final_norm = model.base.norm_out if model.is_wan else model.base.norm_final
    final_norm.register_forward_pre_hook(lambda m, a: block_in.append((a[0], None)))

    out = model(trajectory_latents=trajectory, conditioning_scale=scales, **inputs).sample
    expected = model.base(**inputs).sample
    assert not torch.allclose(out, expected, atol=1e-4)  # measured 1.8 apart

    num_blocks = len(base_blocks(model.base))
    joint_in, joint_out = block_in[: num_blocks + 1], block_out[:num_blocks]
    for i in range(num_blocks):
        added = joint_in[i + 1][0].float() - joint_out[i][0].float()
        want = scale_list[i] * residuals[i] if i < control_layers else torch.zeros_like(added)
        # float32 rounding of (h + s r) - h: measured 1.2e-7 (one ulp at |h| ~ 2; was 1e-5)
        assert torch.allclose(added, want, atol=2e-6), f"block {i}"
        if not model.is_wan and i + 1 < num_blocks:  # text tokens pass unchanged
            assert torch.equal(joint_in[i + 1][1], joint_out[i][1])
    # the first base block sees exactly what the base model gives it
    base_in = block_in[num_blocks + 1]
    assert torch.equal(joint_in[0][0], base_in[0])
    if not model.is_wan:
        assert torch.equal(joint_in[0][1], base_in[1])


@torch.no_grad()
def test_per_block_scales_match_a_truncated_controlnet(family):
    """Scales [s, 0, 0] = a one-block ControlNet at scale s; only one control block runs."""
    model = joint(family, num_layers=3, nonzero=True)
    inputs, trajectory = build_inputs(model.base)
    calls = []
    for block in control_blocks(model.controlnet):
        block.register_forward_hook(lambda *a: calls.append(1))
    out = model(trajectory_latents=trajectory, conditioning_scale=[0.7, 0.0, 0.0], **inputs).sample
    assert len(calls) == 1

    short = controlnet_class(model.base).from_transformer(model.base, num_layers=1)
    short.load_state_dict(model.controlnet.state_dict(), strict=False)
    short_model = MagicMotionTransformer(model.base, short)
    ref = short_model(trajectory_latents=trajectory, conditioning_scale=0.7, **inputs).sample
    assert torch.allclose(out, ref, atol=1e-6)  # the same ops: measured 0

    same = model(trajectory_latents=trajectory, conditioning_scale=[0.7] * 3, **inputs).sample
    # the same numbers: measured 0
    assert torch.allclose(same, model(trajectory_latents=trajectory, conditioning_scale=0.7, **inputs).sample)


@pytest.mark.parametrize("scale", [[1.0, 1.0], [1.0] * 4, []])
def test_wrong_number_of_scales_is_an_error(scale):
    model = joint("wan", num_layers=3)
    inputs, trajectory = build_inputs(model.base)
    with pytest.raises(ModelError, match="3 control blocks"):
        model(trajectory_latents=trajectory, conditioning_scale=scale, **inputs)


def test_return_dict_false_gives_a_tuple():
    model = joint("cogvideox", head=True, nonzero=True)
    inputs, trajectory = build_inputs(model.base)
    with torch.no_grad():
        sample, seg = model(trajectory_latents=trajectory, return_dict=False, return_segmentation=True, **inputs)
        out = model(trajectory_latents=trajectory, return_segmentation=True, **inputs)
    assert torch.equal(sample, out.sample) and torch.equal(seg, out.segmentation)


@pytest.mark.parametrize("what", ["inner dim", "attention heads"])
def test_controlnet_for_another_base_is_refused(family, what):
    base = build_base(family)
    head_dim = base.config.attention_head_dim
    other = dict(num_attention_heads=4) if what == "inner dim" else dict(num_attention_heads=1, attention_head_dim=2 * head_dim)
    foreign = controlnet_class(base).from_transformer(build_base(family, **other))
    with pytest.raises(ModelError, match=f"does not fit this base: .*{what}"):
        MagicMotionTransformer(base, foreign)


def test_patch_size_mismatch_and_wrong_family_are_refused():
    wan = build_base("wan")
    other_patch = controlnet_class(wan).from_transformer(build_base("wan", patch_size=(1, 1, 1)))
    with pytest.raises(ModelError, match="patch size"):
        MagicMotionTransformer(wan, other_patch)
    cog = build_base("cogvideox")
    cog_cn = controlnet_class(cog).from_transformer(cog)
    with pytest.raises(ModelError, match="does not fit a WanTransformer3DModel"):
        MagicMotionTransformer(wan, cog_cn)
    with pytest.raises(ModelError, match="does not fit a CogVideoXTransformer3DModel"):
        MagicMotionTransformer(cog, controlnet_class(wan).from_transformer(wan))
    too_deep = controlnet_class(wan).from_transformer(build_base("wan", num_layers=4))
    with pytest.raises(ModelError, match="4 control blocks vs base 2"):
        MagicMotionTransformer(wan, too_deep)


def test_trajectory_latents_of_the_wrong_shape_are_refused(family):
    model = joint(family)
    inputs, trajectory = build_inputs(model.base)
    with pytest.raises(ModelError, match="trajectory latents"):
        model(trajectory_latents=trajectory[..., :-2], **inputs)
    wrong_channels = trajectory[:, :8] if model.is_wan else trajectory[:, :, :8]
    with pytest.raises(ModelError, match="trajectory latents"):
        model(trajectory_latents=wrong_channels, **inputs)


def test_segmentation_has_the_trajectory_latent_layout(family):
    model = joint(family, head=True, nonzero=True)
    inputs, trajectory = build_inputs(model.base, batch=2)
    with torch.no_grad():
        out = model(trajectory_latents=trajectory, return_segmentation=True, **inputs)
        plain = model(trajectory_latents=trajectory, **inputs)
    assert out.segmentation.shape == trajectory.shape
    assert plain.segmentation is None
    assert torch.equal(out.sample, plain.sample)


def test_head_must_fit_the_base():
    base = build_base("wan", num_layers=3)
    cn = controlnet_class(base).from_transformer(base)
    with pytest.raises(ModelError, match="segment head takes 2 blocks"):
        MagicMotionTransformer(base, cn, SegmentHead(hidden_size=16, num_blocks=2))


def test_float32_controlnet_on_a_bfloat16_base(family):
    """Training keeps a float32 ControlNet beside a bf16 base: the joint forward casts between them."""
    base = build_base(family, num_layers=2)
    cn = perturb(controlnet_class(base).from_transformer(base))
    head = perturb(SegmentHead.from_transformer(base))
    inputs, trajectory = build_inputs(base)
    with torch.no_grad():
        ref = MagicMotionTransformer(base, cn, head)(trajectory_latents=trajectory, return_segmentation=True, **inputs)
    base.to(torch.bfloat16)
    low = {k: v.to(torch.bfloat16) if k in ("hidden_states", "encoder_hidden_states",
                                           "encoder_hidden_states_image") else v for k, v in inputs.items()}
    with torch.no_grad():
        out = MagicMotionTransformer(base, cn, head)(
            trajectory_latents=trajectory.to(torch.bfloat16), return_segmentation=True, **low)
    assert out.sample.dtype == torch.bfloat16 and cn.dtype == torch.float32
    assert out.segmentation.dtype == torch.float32
    # Relative L2 against the float32 model: measured bf16 noise (8 mantissa bits) 0.0064 / 0.0037
    # (Wan sample / segmentation), 0.0058 / 0.0029 (CogVideoX). The wrong variant, the control residual
    # at 0.9 of its scale (a lost cast or scale), gives 0.033 / 0.021 and 0.044 / 0.027; dropped, 0.3-0.5.
    bound = 0.015
    assert relative_l2(out.sample, ref.sample) < bound and relative_l2(out.segmentation, ref.segmentation) < bound
    for scale in (0.9, 0.0):
        with torch.no_grad():
            wrong = MagicMotionTransformer(base, cn, head)(trajectory_latents=trajectory.to(torch.bfloat16),
                                                           return_segmentation=True, conditioning_scale=scale, **low)
        assert relative_l2(wrong.sample, ref.sample) > bound and relative_l2(wrong.segmentation, ref.segmentation) > bound


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())
