"""Building Trajectory ControlNets from a base: what is copied, what starts at zero, what is refused."""

from __future__ import annotations

import pytest
import torch
from models_helpers import base_blocks, build_base, build_inputs, control_blocks, controlnet_class, perturb

from magicmotion.errors import ModelError
from magicmotion.models import CogVideoXTrajectoryControlNet, WanTrajectoryControlNet
from magicmotion.models.controlnet_cogvideox import cogvideox_rotary_embedding
from magicmotion.models.controlnet_wan import wan_conditions, wan_unpatchify


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("num_layers", [None, 2])
def test_blocks_are_copied_and_projections_are_zero(family, num_layers):
    base = build_base(family, num_layers=4)
    cn = controlnet_class(base).from_transformer(base, num_layers=num_layers)
    expected = 4 if num_layers is None else num_layers
    assert len(control_blocks(cn)) == len(cn.out_projectors) == cn.config.num_layers == expected
    assert cn.config.base_num_layers == 4
    for i, block in enumerate(control_blocks(cn)):
        assert _same(block, base_blocks(base)[i]), f"block {i}"
    for proj in cn.out_projectors:
        assert proj.weight.shape == (cn.inner_dim, cn.inner_dim)
        assert torch.count_nonzero(proj.weight) == 0 and torch.count_nonzero(proj.bias) == 0
    # a copy, not shared storage
    with torch.no_grad():
        next(control_blocks(cn)[0].parameters()).add_(1.0)
    assert not _same(control_blocks(cn)[0], base_blocks(base)[0])


def test_wan_embeddings_are_copied():
    base = build_base("wan_clip")
    cn = WanTrajectoryControlNet.from_transformer(base)
    assert _same(cn.condition_embedder, base.condition_embedder)
    assert cn.condition_embedder.image_embedder is not None
    w = base.patch_embedding.weight
    assert cn.patch_embedding.weight.shape[1] == 32
    assert torch.equal(cn.patch_embedding.weight[:, :16], w[:, :16])  # noise <- noise channels
    assert torch.equal(cn.patch_embedding.weight[:, 16:], w[:, 20:36])  # trajectory <- image latents
    assert torch.equal(cn.patch_embedding.bias, base.patch_embedding.bias)
    assert (cn.rope.t_dim, cn.rope.h_dim, cn.rope.w_dim, cn.rope.max_seq_len) == (
        base.rope.t_dim, base.rope.h_dim, base.rope.w_dim, base.rope.max_seq_len)
    assert torch.equal(cn.rope.freqs_cos, base.rope.freqs_cos)
    assert cn.config.base_type == "wan" and cn.config.base_in_channels == 36
    assert tuple(cn.config.patch_size) == tuple(base.config.patch_size)


@pytest.mark.parametrize("learned", [False, True])
def test_cogvideox_embeddings_are_copied(learned):
    base = build_base("cogvideox", use_learned_positional_embeddings=learned)
    with torch.no_grad():  # make the learned table differ from its sin-cos initial value
        if learned:
            base.patch_embed.pos_embedding.add_(0.5)
    cn = CogVideoXTrajectoryControlNet.from_transformer(base)
    assert _same(cn.patch_embed, base.patch_embed)  # includes pos_embedding when learned
    assert ("pos_embedding" in cn.patch_embed.state_dict()) == learned
    assert _same(cn.time_embedding, base.time_embedding)
    assert cn.config.base_type == "cogvideox" and cn.config.in_channels == 32


def test_parameter_names_follow_the_released_layout():
    base = build_base("cogvideox", num_layers=2)
    names = set(CogVideoXTrajectoryControlNet.from_transformer(base).state_dict())
    for name in ("patch_embed.proj.weight", "patch_embed.text_proj.weight", "time_embedding.linear_1.weight",
                 "transformer_blocks.1.attn1.to_q.weight", "transformer_blocks.0.norm1.linear.weight",
                 "out_projectors.1.weight", "out_projectors.1.bias"):
        assert name in names
    assert all(n.split(".")[0] in {"patch_embed", "time_embedding", "transformer_blocks", "out_projectors"}
               for n in names)


def test_residuals_have_one_entry_per_block_and_video_token_shape(family):
    base = build_base(family, num_layers=3)
    cn = perturb(controlnet_class(base).from_transformer(base))
    inputs, trajectory = build_inputs(base, batch=2)
    noisy = inputs["hidden_states"][:, :16] if family != "cogvideox" else inputs["hidden_states"][:, :, :16]
    extras = {k: v for k, v in inputs.items() if k in ("encoder_hidden_states_image", "image_rotary_emb")}
    with torch.no_grad():
        res = cn(noisy, trajectory, inputs["timestep"], inputs["encoder_hidden_states"], **extras)
        two = cn(noisy, trajectory, inputs["timestep"], inputs["encoder_hidden_states"], num_blocks=2, **extras)
    tokens = 3 * 4 * 4  # 3 latent frames, 8x8 latents, patch 2
    assert [r.shape for r in res] == [(2, tokens, cn.inner_dim)] * 3
    assert len(two) == 2 and all(torch.equal(a, b) for a, b in zip(two, res))
    # the trajectory matters
    with torch.no_grad():
        other = cn(noisy, torch.zeros_like(trajectory), inputs["timestep"], inputs["encoder_hidden_states"], **extras)
    assert not torch.allclose(other[0], res[0])  # measured 0.65 apart


def test_full_base_input_instead_of_noisy_latents_is_refused(family):
    base = build_base(family)
    cn = controlnet_class(base).from_transformer(base)
    inputs, trajectory = build_inputs(base)
    with pytest.raises(ModelError, match="16-channel noisy and trajectory latents"):
        cn(inputs["hidden_states"], trajectory, inputs["timestep"], inputs["encoder_hidden_states"])


def test_bad_bases_are_refused():
    wan_t2v = build_base("wan", in_channels=16)
    with pytest.raises(ModelError, match="image-to-video base"):
        WanTrajectoryControlNet.from_transformer(wan_t2v)
    cog_t2v = build_base("cogvideox", in_channels=16)
    with pytest.raises(ModelError, match="32 input channels"):
        CogVideoXTrajectoryControlNet.from_transformer(cog_t2v)
    with pytest.raises(ModelError, match="not a WanTransformer3DModel"):
        WanTrajectoryControlNet.from_transformer(build_base("cogvideox"))
    with pytest.raises(ModelError, match="num_layers must be 1..2"):
        WanTrajectoryControlNet.from_transformer(build_base("wan"), num_layers=3)
    with pytest.raises(ModelError, match="num_layers must be 1..2"):
        CogVideoXTrajectoryControlNet.from_transformer(build_base("cogvideox"), num_layers=0)


def test_dtype_follows_the_base_and_fp32_modules_stay_fp32():
    base = build_base("wan").to(torch.bfloat16)
    cn = WanTrajectoryControlNet.from_transformer(base)
    assert cn.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert cn.patch_embedding.weight.dtype == torch.bfloat16
    assert cn.blocks[0].scale_shift_table.dtype == torch.float32
    assert cn.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32


def test_wan_config_values_are_checked_when_built():
    with pytest.raises(ModelError, match="^WanTrajectoryControlNet: base_type must be 'wan', got 'cogvideox'$"):
        WanTrajectoryControlNet(num_layers=1, base_type="cogvideox")
    with pytest.raises(ModelError, match="^WanTrajectoryControlNet: in_channels 33 is not noise \\+ trajectory$"):
        WanTrajectoryControlNet(num_layers=1, in_channels=33)
    with pytest.raises(ModelError, match="^WanTrajectoryControlNet: trajectory_palette must be voc or release, got 'x'$"):
        WanTrajectoryControlNet(num_layers=1, trajectory_palette="x")
    with pytest.raises(ModelError, match="^WanTrajectoryControlNet: expert must be high, low or null, got 'mid'$"):
        WanTrajectoryControlNet(num_layers=1, expert="mid")


@torch.no_grad()
def test_wan_fresh_controlnet_gives_zero_residuals_and_config_round_trips(tmp_path):
    base = build_base("wan", num_layers=3)
    cn = WanTrajectoryControlNet.from_transformer(base, num_layers=2, trajectory_palette="release")
    inputs, trajectory = build_inputs(base)
    res = cn(inputs["hidden_states"][:, :16], trajectory, inputs["timestep"], inputs["encoder_hidden_states"])
    assert len(res) == 2 and all(torch.count_nonzero(r) == 0 for r in res)  # zero-initialised projections
    perturb(cn)
    cn.save_pretrained(tmp_path)
    again = WanTrajectoryControlNet.from_pretrained(tmp_path)
    for key in ("num_layers", "in_channels", "base_in_channels", "base_num_layers", "trajectory_palette",
                "expert", "text_dim", "ffn_dim", "num_attention_heads", "attention_head_dim", "rope_max_seq_len"):
        assert again.config[key] == cn.config[key], key
    assert (again.config.trajectory_palette, again.config.base_num_layers, again.config.num_layers) == ("release", 3, 2)
    args = (inputs["hidden_states"][:, :16], trajectory, inputs["timestep"], inputs["encoder_hidden_states"])
    for a, b in zip(cn(*args), again(*args)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)  # same weights, same arithmetic


def test_wan_residuals_follow_the_blocks_by_hand():
    """The residuals equal a forward written out with the base's own diffusers modules."""
    base = build_base("wan_clip", num_layers=2)
    cn = perturb(WanTrajectoryControlNet.from_transformer(base))
    inputs, trajectory = build_inputs(base, batch=2)
    noisy, t, text, image = (inputs["hidden_states"][:, :16], inputs["timestep"],
                             inputs["encoder_hidden_states"], inputs["encoder_hidden_states_image"])
    with torch.no_grad():
        got = cn(noisy, trajectory, t, text, encoder_hidden_states_image=image)
        x = torch.cat([noisy, trajectory], dim=1)
        rope = base.rope(x)  # same rotary settings as the base
        h = torch.nn.functional.conv3d(x, cn.patch_embedding.weight, cn.patch_embedding.bias, stride=(1, 2, 2))
        h = h.flatten(2).transpose(1, 2)
        _, proj, ctx, ctx_img = cn.condition_embedder(t, text, image)
        proj = proj.unflatten(1, (6, -1))
        ctx = torch.cat([ctx_img, ctx], dim=1)
        for i, (block, out) in enumerate(zip(cn.blocks, cn.out_projectors)):
            h = block(h, ctx, proj, rope)
            torch.testing.assert_close(got[i], out(h), atol=1e-6, rtol=1e-6)  # same ops: measured 0


def test_wan_gradient_checkpointing_gives_the_same_residuals_and_gradients():
    base = build_base("wan", num_layers=2)
    cn = perturb(WanTrajectoryControlNet.from_transformer(base)).train()
    inputs, trajectory = build_inputs(base)
    args = (inputs["hidden_states"][:, :16], trajectory, inputs["timestep"], inputs["encoder_hidden_states"])

    def run():
        cn.zero_grad()
        out = cn(*args)
        sum(r.square().sum() for r in out).backward()
        return [r.detach() for r in out], cn.blocks[0].attn1.to_q.weight.grad.clone()

    plain, grad = run()
    cn.enable_gradient_checkpointing()
    assert cn.gradient_checkpointing
    ckpt, grad_ckpt = run()
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)  # recomputation, same ops: measured 0
    torch.testing.assert_close(grad, grad_ckpt, atol=1e-6, rtol=1e-5)


def test_wan_latents_of_different_shapes_are_refused_with_both_shapes():
    base = build_base("wan")
    cn = WanTrajectoryControlNet.from_transformer(base)
    inputs, trajectory = build_inputs(base)
    noisy = inputs["hidden_states"][:, :16]
    with pytest.raises(ModelError, match=r"^noisy latents \(1, 16, 3, 8, 8\) and trajectory latents "
                                         r"\(1, 16, 2, 8, 8\) differ in shape$"):
        cn(noisy, trajectory[:, :, :2], inputs["timestep"], inputs["encoder_hidden_states"])
    with pytest.raises(ModelError, match=r"^Wan ControlNet takes 16-channel noisy and trajectory latents "
                                         r"\(B, C, F, H, W\); got \(1, 16, 3, 8, 8\) and \(1, 15, 3, 8, 8\)$"):
        cn(noisy, trajectory[:, :15], inputs["timestep"], inputs["encoder_hidden_states"])


def test_wan_check_compatible_names_every_difference():
    base = build_base("wan", num_layers=2)
    cn = WanTrajectoryControlNet.from_transformer(base)
    cn.check_compatible(base)  # its own base fits
    cn.check_compatible(build_base("wan", num_layers=3))  # a deeper base fits too
    with pytest.raises(ModelError, match="^a Wan ControlNet does not fit a CogVideoXTransformer3DModel base$"):
        cn.check_compatible(build_base("cogvideox"))
    other = build_base("wan_clip", num_layers=1, in_channels=40, attention_head_dim=4, text_dim=8)
    with pytest.raises(ModelError) as err:
        cn.check_compatible(other)
    assert str(err.value) == (
        "the Wan ControlNet does not fit this base: base input channels 36 vs base 40; inner dim 16 vs base 8; "
        "text dim 16 vs base 8; image dim None vs base 16; 2 control blocks vs base 1 blocks")
    with pytest.raises(ModelError, match=r"^the Wan ControlNet does not fit this base: attention heads 2 vs base 4; "
                                         r"patch size \(1, 2, 2\) vs base \(1, 1, 1\)$"):
        cn.check_compatible(build_base("wan", num_attention_heads=4, attention_head_dim=4, patch_size=(1, 1, 1)))


@pytest.mark.parametrize("patch", [(1, 2, 2), (2, 1, 3)])
def test_wan_unpatchify_puts_every_token_value_back_in_place(patch):
    """Reference written as loops: token (f, h, w) holds its patch's values in (p_t, p_h, p_w, C) order,
    the order of the base's `proj_out` features that `WanTransformer3DModel.forward` unpatchifies."""
    p_t, p_h, p_w = patch
    shape = (2, 3, 2 * p_t, 2 * p_h, 3 * p_w)
    video = torch.arange(torch.Size(shape).numel(), dtype=torch.float32).reshape(shape)
    n_f, n_h, n_w = 2, 2, 3
    tokens = torch.empty(2, n_f * n_h * n_w, p_t * p_h * p_w * 3)
    for f in range(n_f):
        for h in range(n_h):
            for w in range(n_w):
                patch_values = video[:, :, f * p_t:(f + 1) * p_t, h * p_h:(h + 1) * p_h, w * p_w:(w + 1) * p_w]
                tokens[:, (f * n_h + h) * n_w + w] = patch_values.permute(0, 2, 3, 4, 1).reshape(2, -1)
    assert torch.equal(wan_unpatchify(tokens, shape, patch), video)


def test_wan_conditions_return_temb_and_per_token_timesteps():
    base = build_base("wan_clip", num_layers=1)
    inputs, _ = build_inputs(base, batch=2)
    t, text, image = inputs["timestep"], inputs["encoder_hidden_states"], inputs["encoder_hidden_states_image"]
    with torch.no_grad():
        temb, proj, ctx = wan_conditions(base.condition_embedder, t, text, image, return_temb=True)
        proj2, ctx2 = wan_conditions(base.condition_embedder, t, text, image)
        ref_temb, ref_proj, ref_ctx, ref_img = base.condition_embedder(t, text, image)
        per_token = t[:, None].expand(2, 5)  # (B, L): the same timestep on 5 tokens
        temb_l, proj_l, ctx_l = wan_conditions(base.condition_embedder, per_token, text, image, return_temb=True)
    assert temb.shape == (2, 16) and proj.shape == (2, 6, 16) and ctx.shape == (2, 4 + 512, 16)
    assert torch.equal(temb, ref_temb) and torch.equal(proj, ref_proj.unflatten(1, (6, -1)))
    assert torch.equal(ctx, torch.cat([ref_img, ref_ctx], dim=1)) and torch.equal(proj2, proj) and torch.equal(ctx2, ctx)
    assert temb_l.shape == (2, 5, 16) and proj_l.shape == (2, 5, 6, 16) and torch.equal(ctx_l, ctx)
    torch.testing.assert_close(proj_l, proj[:, None].expand_as(proj_l), atol=1e-6, rtol=1e-6)  # float32 rounding
    torch.testing.assert_close(temb_l, temb[:, None].expand_as(temb_l), atol=1e-6, rtol=1e-6)


def test_wan_base_without_out_channels_reads_16_latent_channels():
    base = build_base("wan", out_channels=None)  # diffusers then outputs in_channels; the latents are 16
    cn = WanTrajectoryControlNet.from_transformer(base)
    assert cn.config.in_channels == 32
    cn.check_compatible(base)


def test_wan_refuses_a_non_wan_base_that_has_blocks():
    """Another family's model with a `blocks` list (and no Wan rotary config) is still not a Wan base."""
    wan = WanTrajectoryControlNet.from_transformer(build_base("wan"))
    other = build_base("cogvideox")
    other.blocks = other.transformer_blocks
    with pytest.raises(ModelError, match="^a Wan ControlNet does not fit a CogVideoXTransformer3DModel base$"):
        wan.check_compatible(other)
    with pytest.raises(ModelError, match="^CogVideoXTransformer3DModel is not a WanTransformer3DModel$"):
        WanTrajectoryControlNet.from_transformer(other)


def test_wan_base_needs_at_least_noise_and_image_latent_channels():
    """2C input channels (noise + image latents, no mask) is the least an image-to-video base has."""
    base = build_base("wan", in_channels=32)
    cn = WanTrajectoryControlNet.from_transformer(base)
    w = base.patch_embedding.weight
    # noise <- channels 0..15, trajectory <- the last 16: here the base's embedding as it is
    assert cn.config.base_in_channels == 32 and torch.equal(cn.patch_embedding.weight, w)
    with pytest.raises(ModelError, match="this base has 31 input and 16 output channels$"):
        WanTrajectoryControlNet.from_transformer(build_base("wan", in_channels=31))


def test_cogvideox_config_values_are_checked_when_built():
    with pytest.raises(ModelError, match="^CogVideoXTrajectoryControlNet: base_type must be 'cogvideox', got 'wan'$"):
        CogVideoXTrajectoryControlNet(num_layers=1, base_type="wan")
    with pytest.raises(ModelError, match="^CogVideoXTrajectoryControlNet: trajectory_palette must be one of "
                                         "voc, release, got 'x'$"):
        CogVideoXTrajectoryControlNet(num_layers=1, trajectory_palette="x")
    with pytest.raises(ModelError, match="^CogVideoXTrajectoryControlNet: in_channels 33 is not noise \\+ trajectory$"):
        CogVideoXTrajectoryControlNet(num_layers=1, in_channels=33)


@torch.no_grad()
def test_cogvideox_fresh_controlnet_gives_zero_residuals_and_config_round_trips(tmp_path):
    base = build_base("cogvideox", num_layers=3, ofs_embed_dim=16)
    cn = CogVideoXTrajectoryControlNet.from_transformer(base, num_layers=2)
    inputs, trajectory = build_inputs(base)
    args = (inputs["hidden_states"][:, :, :16], trajectory, inputs["timestep"], inputs["encoder_hidden_states"],
            inputs["image_rotary_emb"])
    assert _same(cn.ofs_embedding, base.ofs_embedding)  # copied from the base, like the time embedding
    res = cn(*args, ofs=torch.tensor([2.0]))
    assert len(res) == 2 and all(torch.count_nonzero(r) == 0 for r in res)  # zero-initialised projections
    perturb(cn)
    cn.register_to_config(trajectory_palette="release", source="MagicMotion release stage2/box.pt")
    cn.save_pretrained(tmp_path)
    again = CogVideoXTrajectoryControlNet.from_pretrained(tmp_path)
    for key in ("num_layers", "in_channels", "base_num_layers", "base_type", "trajectory_palette", "source",
                "num_attention_heads", "attention_head_dim", "time_embed_dim", "ofs_embed_dim", "text_embed_dim",
                "patch_size", "patch_size_t", "sample_width", "sample_height", "sample_frames",
                "max_text_seq_length", "use_rotary_positional_embeddings", "use_learned_positional_embeddings"):
        assert again.config[key] == cn.config[key], key
    assert (again.config.trajectory_palette, again.config.base_num_layers, again.config.num_layers,
            again.config.ofs_embed_dim) == ("release", 3, 2, 16)
    for a, b in zip(cn(*args, ofs=torch.tensor([2.0])), again(*args, ofs=torch.tensor([2.0]))):
        torch.testing.assert_close(a, b, atol=0, rtol=0)  # same weights, same arithmetic


def _cogvideox_patch_embed_by_hand(embed, text, video, p):
    """CogVideoXPatchEmbed without positional tables, written out: text_proj on the text, a stride-p
    convolution per frame on the video, text tokens first."""
    b, f, c, h, w = video.shape
    v = torch.nn.functional.conv2d(video.reshape(b * f, c, h, w), embed.proj.weight, embed.proj.bias, stride=p)
    v = v.flatten(2).transpose(1, 2).reshape(b, f * (h // p) * (w // p), -1)  # tokens in (f, h, w) order
    return torch.cat([embed.text_proj(text), v], dim=1)


@pytest.mark.parametrize("ofs_embed_dim", [None, 16])  # as the base: ofs is added to the time embedding
def test_cogvideox_residuals_follow_the_blocks_by_hand(ofs_embed_dim):
    """The residuals equal a forward written out with the base's own diffusers modules (as
    `CogVideoXTransformer3DModel.forward` runs them), noise and trajectory latents on channels."""
    base = build_base("cogvideox", num_layers=2, ofs_embed_dim=ofs_embed_dim)
    cn = perturb(CogVideoXTrajectoryControlNet.from_transformer(base))
    inputs, trajectory = build_inputs(base, batch=2)
    noisy, t, text, rope = (inputs["hidden_states"][:, :, :16], inputs["timestep"],
                            inputs["encoder_hidden_states"], inputs["image_rotary_emb"])
    ofs = torch.tensor([2.0, 7.0])
    with torch.no_grad():
        got = cn(noisy, trajectory, t, text, image_rotary_emb=rope, ofs=ofs)
        emb = cn.time_embedding(cn.time_proj(t))
        if ofs_embed_dim:
            emb = emb + cn.ofs_embedding(cn.ofs_proj(ofs))
        x = _cogvideox_patch_embed_by_hand(cn.patch_embed, text, torch.cat([noisy, trajectory], dim=2), 2)
        ctx, h = x[:, :text.shape[1]], x[:, text.shape[1]:]
        assert len(got) == 2
        for i, (block, out) in enumerate(zip(cn.transformer_blocks, cn.out_projectors)):
            h, ctx = block(h, ctx, emb, rope)
            torch.testing.assert_close(got[i], out(h), atol=1e-6, rtol=1e-6)  # same ops: measured 0
    if ofs_embed_dim:  # the ofs embedding is used
        with torch.no_grad():
            other = cn(noisy, trajectory, t, text, image_rotary_emb=rope, ofs=ofs + 100)
        assert not torch.allclose(other[0], got[0])


def test_cogvideox_gradient_checkpointing_gives_the_same_residuals_and_gradients():
    base = build_base("cogvideox", num_layers=2)
    cn = perturb(CogVideoXTrajectoryControlNet.from_transformer(base)).train()
    inputs, trajectory = build_inputs(base)
    args = (inputs["hidden_states"][:, :, :16], trajectory, inputs["timestep"], inputs["encoder_hidden_states"],
            inputs["image_rotary_emb"])

    def run():
        cn.zero_grad()
        out = cn(*args)
        sum(r.square().sum() for r in out).backward()
        return [r.detach() for r in out], cn.transformer_blocks[0].attn1.to_q.weight.grad.clone()

    plain, grad = run()
    cn.enable_gradient_checkpointing()
    assert cn.gradient_checkpointing
    ckpt, grad_ckpt = run()
    assert len(ckpt) == 2
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)  # recomputation, same ops: measured 0
    torch.testing.assert_close(grad, grad_ckpt, atol=1e-6, rtol=1e-5)


def test_cogvideox_latents_of_different_shapes_are_refused_with_both_shapes():
    base = build_base("cogvideox")
    cn = CogVideoXTrajectoryControlNet.from_transformer(base)
    inputs, trajectory = build_inputs(base)
    noisy, t, text = inputs["hidden_states"][:, :, :16], inputs["timestep"], inputs["encoder_hidden_states"]
    with pytest.raises(ModelError, match=r"^noisy latents \(1, 3, 16, 8, 8\) and trajectory latents "
                                         r"\(1, 2, 16, 8, 8\) differ in shape$"):
        cn(noisy, trajectory[:, :2], t, text)
    with pytest.raises(ModelError, match=r"^CogVideoX ControlNet takes 16-channel noisy and trajectory latents "
                                         r"\(B, F, C, H, W\); got \(1, 3, 16, 8, 8\) and \(1, 3, 15, 8, 8\)$"):
        cn(noisy, trajectory[:, :, :15], t, text)
    with pytest.raises(ModelError, match=r"got \(1, 3, 15, 8, 8\) and \(1, 3, 16, 8, 8\)$"):
        cn(noisy[:, :, :15], trajectory, t, text)


def test_cogvideox_check_compatible_names_every_difference():
    base = build_base("cogvideox", num_layers=2)
    cn = CogVideoXTrajectoryControlNet.from_transformer(base)
    cn.check_compatible(base)  # its own base fits
    cn.check_compatible(build_base("cogvideox", num_layers=3))  # a deeper base fits too
    other = build_base("cogvideox", num_layers=1, num_attention_heads=4, attention_head_dim=8, patch_size_t=2,
                       time_embed_dim=8, text_embed_dim=8)
    with pytest.raises(ModelError) as err:
        cn.check_compatible(other)
    assert str(err.value) == (
        "the CogVideoX ControlNet does not fit this base: attention heads 2 vs base 4; "
        "patch size (2, None) vs base (2, 2); time embedding dim 16 vs base 8; text embedding dim 16 vs base 8; "
        "2 control blocks vs base 1 blocks")
    with pytest.raises(ModelError, match=r"^the CogVideoX ControlNet does not fit this base: inner dim 32 vs base 48; "
                                         r"attention heads 2 vs base 3$"):
        cn.check_compatible(build_base("cogvideox", num_attention_heads=3))
    with pytest.raises(ModelError, match=r"^the CogVideoX ControlNet does not fit this base: "
                                         r"patch size \(2, None\) vs base \(1, None\)$"):
        cn.check_compatible(build_base("cogvideox", patch_size=1))


def test_cogvideox_refuses_a_non_cogvideox_base():
    """A Wan base, even one given a `transformer_blocks` list, is not a CogVideoX base; nor is a model
    whose config has `time_embed_dim` but that has no `transformer_blocks`."""
    cn = CogVideoXTrajectoryControlNet.from_transformer(build_base("cogvideox"))
    wan = build_base("wan")
    with pytest.raises(ModelError, match="^a CogVideoX ControlNet does not fit a WanTransformer3DModel base$"):
        cn.check_compatible(wan)
    with pytest.raises(ModelError, match="^WanTransformer3DModel is not a CogVideoXTransformer3DModel$"):
        CogVideoXTrajectoryControlNet.from_transformer(wan)
    wan.transformer_blocks = wan.blocks
    with pytest.raises(ModelError, match="^a CogVideoX ControlNet does not fit a WanTransformer3DModel base$"):
        cn.check_compatible(wan)
    with pytest.raises(ModelError, match="^WanTransformer3DModel is not a CogVideoXTransformer3DModel$"):
        CogVideoXTrajectoryControlNet.from_transformer(wan)
    blockless = build_base("cogvideox")
    del blockless.transformer_blocks
    with pytest.raises(ModelError, match="^a CogVideoX ControlNet does not fit a CogVideoXTransformer3DModel base$"):
        cn.check_compatible(blockless)
    with pytest.raises(ModelError, match="^CogVideoXTransformer3DModel is not a CogVideoXTransformer3DModel$"):
        CogVideoXTrajectoryControlNet.from_transformer(blockless)
    with pytest.raises(ModelError, match="^num_layers must be 1..2 \\(the base's blocks\\), got 3$"):
        CogVideoXTrajectoryControlNet.from_transformer(build_base("cogvideox"), num_layers=3)
    with pytest.raises(ModelError, match="^CogVideoX ControlNet needs an image-to-video base with 32 input channels "
                                         "\\(noise 16 \\+ image 16\\); this base has 16$"):
        CogVideoXTrajectoryControlNet.from_transformer(build_base("cogvideox", in_channels=16))


@pytest.mark.parametrize("sample_width, sample_height", [(10, 6), (11, 7)])  # odd: the pipeline floors /p
@pytest.mark.parametrize("patch_size_t", [None, 2])
@pytest.mark.parametrize("frames, height, width", [(3, 6, 10), (4, 4, 6), (13, 2, 10)])
def test_cogvideox_rotary_embedding_matches_the_diffusers_pipeline(patch_size_t, frames, height, width,
                                                                   sample_width, sample_height):
    """Outside truth: `CogVideoXImageToVideoPipeline._prepare_rotary_positional_embeddings` (in pixels, VAE
    factor 8) on the same config; CogVideoX 1.0 (crop region, no temporal patch) and 1.5 (slice grid, p_t 2)."""
    from types import SimpleNamespace

    from diffusers import CogVideoXImageToVideoPipeline

    base = build_base("cogvideox", patch_size_t=patch_size_t, sample_width=sample_width, sample_height=sample_height)
    pipe = SimpleNamespace(vae_scale_factor_spatial=8, transformer=base)
    want = CogVideoXImageToVideoPipeline._prepare_rotary_positional_embeddings(
        pipe, height * 8, width * 8, frames, torch.device("cpu"))
    got = cogvideox_rotary_embedding(base.config, frames, height, width, device="cpu")
    tokens = (frames if patch_size_t is None else (frames + 1) // 2) * (height // 2) * (width // 2)
    assert got[0].shape == got[1].shape == (tokens, 16)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    # made on the device asked for (meta: no memory, still the shapes)
    on_meta = cogvideox_rotary_embedding(base.config, frames, height, width, device="meta")
    assert [t.device.type for t in on_meta] == ["meta", "meta"] and on_meta[0].shape == (tokens, 16)


@pytest.mark.parametrize("ofs_embed_dim", [None, 16])
def test_cogvideox_bfloat16_controlnet_runs_in_bfloat16_close_to_float32(ofs_embed_dim):
    """A ControlNet built from a bf16 base runs on bf16 latents (the sinusoidal time / ofs projections
    come out in float32 and are cast to the latents' dtype, as in the base) and gives the float32 residuals
    up to bf16 rounding."""
    base = build_base("cogvideox", num_layers=2, ofs_embed_dim=ofs_embed_dim)
    cn = perturb(CogVideoXTrajectoryControlNet.from_transformer(base))
    half = perturb(CogVideoXTrajectoryControlNet.from_transformer(build_base(
        "cogvideox", num_layers=2, ofs_embed_dim=ofs_embed_dim).to(torch.bfloat16)))
    assert half.transformer_blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    inputs, trajectory = build_inputs(base)
    noisy, t, text, rope = (inputs["hidden_states"][:, :, :16], inputs["timestep"],
                            inputs["encoder_hidden_states"], inputs["image_rotary_emb"])
    ofs = torch.tensor([2.0])
    with torch.no_grad():
        want = cn(noisy, trajectory, t, text, rope, ofs=ofs)
        got = half(noisy.bfloat16(), trajectory.bfloat16(), t, text.bfloat16(), rope, ofs=ofs)
    for a, b in zip(want, got):
        assert b.dtype == torch.bfloat16
        # bf16 keeps 8 bits (2^-8 = 0.004 relative) through 2 blocks on residuals of size ~1: measured 0.0065
        torch.testing.assert_close(b.float(), a, atol=0.03, rtol=0)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_cogvideox_attention_kwargs_reach_every_control_block_attention(checkpointing):
    """`attention_kwargs` go to each block's attention processor (as in `CogVideoXTransformer3DModel`),
    with gradient checkpointing too."""
    from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0

    seen = []

    class Recording(CogVideoXAttnProcessor2_0):
        def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None,
                     image_rotary_emb=None, tag=None):
            seen.append(tag)
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    base = build_base("cogvideox", num_layers=2)
    cn = CogVideoXTrajectoryControlNet.from_transformer(base).train()
    if checkpointing:
        cn.enable_gradient_checkpointing()
    for block in cn.transformer_blocks:
        block.attn1.set_processor(Recording())
    inputs, trajectory = build_inputs(base)
    cn(inputs["hidden_states"][:, :, :16], trajectory, inputs["timestep"], inputs["encoder_hidden_states"],
       inputs["image_rotary_emb"], attention_kwargs={"tag": 7})
    assert seen == [7, 7]
