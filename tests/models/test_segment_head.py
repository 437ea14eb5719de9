"""SegmentHead: the released head's layout and arithmetic, and an output the shape of a VAE latent."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from models_helpers import build_base, build_inputs, controlnet_class, perturb

from magicmotion.errors import ModelError
from magicmotion.models import MagicMotionTransformer, SegmentHead


def test_module_names_match_the_released_head():
    head = SegmentHead(hidden_size=24, num_blocks=3)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes["convs.0.0.weight"] == (64, 24, 3, 3)
    assert shapes["convs.2.1.weight"] == (64,) and shapes["convs.2.1.bias"] == (64,)
    assert shapes["conv_out.weight"] == (16, 64, 1, 1)
    assert not any(k.startswith("convs.3.") for k in shapes)
    assert head.convs[1][1].num_groups == 16


def test_forward_is_per_block_conv_norm_relu_summed_upsampled_and_projected():
    torch.manual_seed(0)
    head = perturb(SegmentHead(hidden_size=8, num_blocks=2, mid_channels=32, out_channels=4, num_groups=8))
    b, f, h, w, d = 2, 3, 4, 5, 8
    hidden = [torch.randn(b, f * h * w, d) for _ in range(2)]
    out = head(hidden, (f, h, w))
    assert out.shape == (b, f, 4, 2 * h, 2 * w)

    total = 0
    for x, conv in zip(hidden, head.convs):
        grid = x.reshape(b, f, h, w, d).permute(0, 1, 4, 2, 3).reshape(b * f, d, h, w)  # frame-major tokens
        y = F.conv2d(grid, conv[0].weight, conv[0].bias, padding=1)
        y = F.relu(F.group_norm(y, 8, conv[1].weight, conv[1].bias, eps=conv[1].eps))
        total = total + y
    total = F.interpolate(total, scale_factor=2, mode="bilinear", align_corners=False)
    ref = F.conv2d(total, head.conv_out.weight, head.conv_out.bias).reshape(b, f, 4, 2 * h, 2 * w)
    assert torch.allclose(out, ref, atol=1e-5)  # float32, the same ops: measured 0


def test_token_layout_is_frame_then_row_then_column():
    """A token's position on the grid decides where its value lands (no transposed frames/rows)."""
    head = SegmentHead(hidden_size=16, num_blocks=1, mid_channels=16, out_channels=16, num_groups=1, upsample=1)
    with torch.no_grad():  # conv = centre tap identity, GN affine -> identity-ish, conv_out identity
        head.convs[0][0].weight.zero_()
        head.convs[0][0].bias.zero_()
        for c in range(16):
            head.convs[0][0].weight[c, c, 1, 1] = 1.0
        head.conv_out.weight.copy_(torch.eye(16).reshape(16, 16, 1, 1))
        head.conv_out.bias.zero_()
    f, h, w = 2, 3, 4
    hidden = torch.zeros(1, f * h * w, 16)
    hidden[0, 1 * h * w + 2 * w + 3, :] = 10.0  # frame 1, row 2, column 3
    with torch.no_grad():
        out = head([hidden], (f, h, w))
    peak = (out[0].sum(1) == out[0].sum(1).max()).nonzero().tolist()
    assert peak == [[1, 2, 3]]


@pytest.mark.parametrize("frames, height, width", [(9, 32, 32), (5, 48, 32), (13, 16, 64)])
def test_wan_joint_model_segmentation_has_the_vae_latent_shape(frames, height, width):
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    with torch.no_grad():
        latent = vae.encode(torch.zeros(1, 3, frames, height, width)).latent_dist.mode()
    assert latent.shape == (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)

    base = build_base("wan", num_layers=2, rope_max_seq_len=64)
    model = MagicMotionTransformer(base, controlnet_class(base).from_transformer(base),
                                   SegmentHead.from_transformer(base))
    _, f, h, w = latent.shape[1:]
    inputs, trajectory = build_inputs(base, frames=f, height=h, width=w)
    with torch.no_grad():
        seg = model(trajectory_latents=trajectory, return_segmentation=True, **inputs).segmentation
    assert seg.shape == latent.shape


@pytest.mark.parametrize("frames, height, width", [(3, 8, 8), (2, 6, 10)])
def test_cogvideox_joint_model_segmentation_has_the_latent_shape(frames, height, width):
    base = build_base("cogvideox", num_layers=2)
    model = MagicMotionTransformer(base, controlnet_class(base).from_transformer(base),
                                   SegmentHead.from_transformer(base))
    inputs, trajectory = build_inputs(base, frames=frames, height=height, width=width)
    with torch.no_grad():
        seg = model(trajectory_latents=trajectory, return_segmentation=True, **inputs).segmentation
    assert seg.shape == (1, frames, 16, height, width) == trajectory.shape


def test_from_transformer_sizes_the_head():
    base = build_base("wan", num_layers=3, patch_size=(1, 4, 4))
    head = SegmentHead.from_transformer(base)
    assert (head.config.hidden_size, head.config.num_blocks, head.config.upsample) == (16, 3, 4)


def test_from_transformer_follows_the_base_dtype_and_device():
    """The head is made in the base's dtype and on its device (the meta device stands in for a GPU:
    moving there is observable on a CPU-only machine)."""
    base = build_base("cogvideox", num_layers=2).to(torch.bfloat16)
    head = SegmentHead.from_transformer(base)
    assert {p.dtype for p in head.parameters()} == {torch.bfloat16} and head.device.type == "cpu"
    meta = build_base("wan", num_layers=2).to("meta")
    assert {p.device.type for p in SegmentHead.from_transformer(meta).parameters()} == {"meta"}


def test_from_transformer_refuses_a_model_without_blocks():
    class NoBlocks(torch.nn.Module):
        config = build_base("wan", num_layers=1).config

    with pytest.raises(ModelError, match="^NoBlocks has no transformer blocks to attach a head to$"):
        SegmentHead.from_transformer(NoBlocks())


def test_from_transformer_refuses_a_non_square_patch():
    """A head upsamples h and w by one factor: a 1x2x4 patch would give a latent of the wrong width."""
    base = build_base("wan", num_layers=1, patch_size=(1, 2, 4))
    with pytest.raises(ModelError, match="^WanTransformer3DModel has a non-square spatial patch 2x4: "):
        SegmentHead.from_transformer(base)


def test_wrong_inputs_are_refused():
    head = SegmentHead(hidden_size=8, num_blocks=2)
    with pytest.raises(ModelError, match="2 block inputs but got 1"):
        head([torch.zeros(1, 12, 8)], (1, 3, 4))
    with pytest.raises(ModelError, match="12 tokens do not fill the grid 2x3x4"):
        head([torch.zeros(1, 12, 8)] * 2, (2, 3, 4))
