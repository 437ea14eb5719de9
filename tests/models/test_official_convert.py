"""Importing checkpoints in the released layout (`.pt`, `{"state_dict": ...}`, 1x1-conv projectors)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from models_helpers import build_base, build_inputs, perturb

from magicmotion.cli import main
from magicmotion.errors import ModelError
from magicmotion.models import (
    COGVIDEOX_5B_I2V_CONFIG,
    CogVideoXTrajectoryControlNet,
    MagicMotionTransformer,
    SegmentHead,
    load_official_checkpoint,
)


def released_layout(controlnet: CogVideoXTrajectoryControlNet, extra_zero_projectors: int = 0) -> dict:
    """A state dict as the release stores it: out_projectors as (D, D, 1, 1) conv weights; optionally
    zero projectors for blocks the file has no weights for (the release instantiates them all)."""
    sd = {}
    for key, value in controlnet.state_dict().items():
        if key.startswith("out_projectors.") and key.endswith(".weight"):
            value = value.reshape(*value.shape, 1, 1)
        sd[key] = value.clone()
    n, d = controlnet.config.num_layers, controlnet.inner_dim
    for i in range(n, n + extra_zero_projectors):
        sd[f"out_projectors.{i}.weight"] = torch.zeros(d, d, 1, 1)
        sd[f"out_projectors.{i}.bias"] = torch.zeros(d)
    return sd


@pytest.fixture
def release(tmp_path):
    """A tiny 'release': base with 4 blocks, ControlNet trained on 2 of them, head; files in tmp_path."""
    base = build_base("cogvideox", num_layers=4, use_learned_positional_embeddings=True)
    cn = perturb(CogVideoXTrajectoryControlNet.from_transformer(base, num_layers=2))
    head = perturb(SegmentHead.from_transformer(base), seed=5)
    torch.save({"state_dict": released_layout(cn, extra_zero_projectors=2)}, tmp_path / "box.pt")
    torch.save({"state_dict": head.state_dict()}, tmp_path / "box_perception_head.pt")
    base.save_config(tmp_path / "base")
    return base, cn, head, tmp_path


def _outputs(base, cn, head):
    inputs, trajectory = build_inputs(base, batch=2)
    with torch.no_grad():
        return MagicMotionTransformer(base, cn, head)(trajectory_latents=trajectory, return_segmentation=True, **inputs)


def test_released_layout_converts_to_identical_outputs(release):
    base, cn, head, tmp = release
    cn2, head2, report = load_official_checkpoint(tmp / "box.pt", tmp / "box_perception_head.pt",
                                                  base_config=tmp / "base" / "config.json")
    assert report.num_control_blocks == 2 and cn2.config.num_layers == 2
    assert report.inner_dim == 32
    assert report.missing == [] and report.head_missing == [] and report.head_unexpected == []
    # projectors of blocks without weights are named, not loaded
    assert report.unexpected == ["out_projectors.2.bias", "out_projectors.2.weight",
                                 "out_projectors.3.bias", "out_projectors.3.weight"]
    assert "out_projectors.3.weight" in str(report)
    assert cn2.config.use_learned_positional_embeddings
    a, b = _outputs(base, cn, head), _outputs(base, cn2, head2)
    assert torch.equal(a.sample, b.sample)
    assert torch.equal(a.segmentation, b.segmentation)


def test_base_config_may_be_a_dict_and_heads_come_from_it(release):
    base, cn, head, tmp = release
    cn2, head2, _ = load_official_checkpoint(tmp / "box.pt", base_config=dict(base.config))
    assert head2 is None
    assert (cn2.config.num_attention_heads, cn2.config.attention_head_dim) == (2, 16)
    with pytest.raises(ModelError, match="not divisible by the base config's 5 heads"):
        load_official_checkpoint(tmp / "box.pt", base_config={**dict(base.config), "num_attention_heads": 5})


def test_a_wan_base_config_is_refused(release, tmp_path):
    _, _, _, tmp = release
    build_base("wan").save_config(tmp_path / "wan")
    with pytest.raises(ModelError, match="the base config is a WanTransformer3DModel"):
        load_official_checkpoint(tmp / "box.pt", base_config=tmp_path / "wan")


def test_default_base_config_is_cogvideox_5b_i2v():
    assert COGVIDEOX_5B_I2V_CONFIG["num_attention_heads"] * COGVIDEOX_5B_I2V_CONFIG["attention_head_dim"] == 3072
    assert COGVIDEOX_5B_I2V_CONFIG["num_layers"] == 42 and COGVIDEOX_5B_I2V_CONFIG["in_channels"] == 32


def test_missing_and_unexpected_keys_are_reported_by_name(release):
    base, cn, head, tmp = release
    sd = released_layout(cn)
    del sd["transformer_blocks.1.attn1.to_q.weight"]
    sd["something_else.weight"] = torch.zeros(3)
    torch.save({"state_dict": sd}, tmp / "odd.pt")
    _, _, report = load_official_checkpoint(tmp / "odd.pt", base_config=dict(base.config))
    assert report.missing == ["transformer_blocks.1.attn1.to_q.weight"]
    assert report.unexpected == ["something_else.weight"]
    text = str(report)
    assert "transformer_blocks.1.attn1.to_q.weight" in text and "something_else.weight" in text


def test_a_wrong_shape_is_an_error_naming_the_key(release):
    base, cn, head, tmp = release
    sd = released_layout(cn)
    sd["transformer_blocks.0.ff.net.2.bias"] = torch.zeros(7)
    torch.save(sd, tmp / "bad.pt")  # also: a bare state dict without the "state_dict" wrapper
    with pytest.raises(ModelError, match=r"bad\.pt: transformer_blocks\.0\.ff\.net\.2\.bias has shape \(7,\)"):
        load_official_checkpoint(tmp / "bad.pt", base_config=dict(base.config))


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_needs_code_is_refused(tmp_path):
    exploit = _Exploit()
    exploit.marker = tmp_path / "pwned"
    torch.save({"state_dict": {"patch_embed.proj.weight": exploit}}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match=r"evil\.pt: refused.*weights_only=True"):
        load_official_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_not_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ModelError, match="checkpoint not found"):
        load_official_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle at all")
    with pytest.raises(ModelError, match=r"junk\.pt"):
        load_official_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {"foo.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="no transformer_blocks.N keys"):
        load_official_checkpoint(tmp_path / "other.pt")


def test_cli_writes_safetensors_folders(release, capsys):
    base, cn, head, tmp = release
    out = tmp / "converted"
    code = main(["convert", "official", str(tmp / "box.pt"), "--out", str(out),
                 "--head", str(tmp / "box_perception_head.pt"), "--base-config", str(tmp / "base")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 control blocks of width 32" in printed and "out_projectors.2.weight" in printed
    for sub in ("controlnet", "segment_head"):
        assert (out / sub / "diffusion_pytorch_model.safetensors").is_file()
        assert json.loads((out / sub / "config.json").read_text())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folders left
    cn2 = CogVideoXTrajectoryControlNet.from_pretrained(out / "controlnet")
    head2 = SegmentHead.from_pretrained(out / "segment_head")
    a, b = _outputs(base, cn, head), _outputs(base, cn2, head2)
    assert torch.equal(a.sample, b.sample) and torch.equal(a.segmentation, b.segmentation)


def test_cli_error_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["convert", "official", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("magicmotion: error: ") and "missing.pt" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_checkpoint_dtype_is_kept(release):
    base, cn, head, tmp = release
    sd = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in released_layout(cn).items()}
    torch.save({"state_dict": sd}, tmp / "bf16.pt")
    torch.save({"state_dict": {k: v.to(torch.bfloat16) for k, v in head.state_dict().items()}}, tmp / "head16.pt")
    cn2, head2, report = load_official_checkpoint(tmp / "bf16.pt", tmp / "head16.pt", base_config=dict(base.config))
    assert cn2.dtype == torch.bfloat16 and head2.dtype == torch.bfloat16
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(cn2.transformer_blocks[1].attn1.to_q.weight, sd["transformer_blocks.1.attn1.to_q.weight"])
    assert torch.equal(cn2.out_projectors[0].weight, sd["out_projectors.0.weight"].reshape(32, 32))


# ------------------------------------------------------------------------- the release's layout


def release_layout(base_config: dict, control_blocks: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a released ControlNet checkpoint's `state_dict`, written out from the release's
    module definitions (quanhaol/MagicMotion, magicmotion/models/trajectory_controlnet.py:
    `TrajectoryControlnet(**base transformer config)`: diffusers' `CogVideoXPatchEmbed`,
    `TimestepEmbedding(inner_dim, time_embed_dim)`, `CogVideoXBlock`s, and per block an
    `InflatedConv3d(inner_dim, inner_dim, kernel_size=1)`, a Conv2d), for a file holding
    `control_blocks` trained blocks. Independent of our model classes: only the base config's numbers."""
    c = base_config
    d, t, heads_dim = c["num_attention_heads"] * c["attention_head_dim"], c["time_embed_dim"], c["attention_head_dim"]
    p = c["patch_size"]
    layout = {
        "patch_embed.proj.weight": (d, c["in_channels"], p, p), "patch_embed.proj.bias": (d,),
        "patch_embed.text_proj.weight": (d, c["text_embed_dim"]), "patch_embed.text_proj.bias": (d,),
        "time_embedding.linear_1.weight": (t, d), "time_embedding.linear_1.bias": (t,),
        "time_embedding.linear_2.weight": (t, t), "time_embedding.linear_2.bias": (t,),
    }
    if c.get("use_learned_positional_embeddings"):  # a persistent buffer then (not saved otherwise)
        frames = (c["sample_frames"] - 1) // c["temporal_compression_ratio"] + 1
        patches = frames * (c["sample_height"] // p) * (c["sample_width"] // p)
        layout["patch_embed.pos_embedding"] = (1, c["max_text_seq_length"] + patches, d)
    for i in range(control_blocks):
        b = f"transformer_blocks.{i}."
        for norm in ("norm1", "norm2"):  # CogVideoXLayerNormZero: Linear(time_embed_dim, 6 D) + LayerNorm(D)
            layout.update({b + f"{norm}.linear.weight": (6 * d, t), b + f"{norm}.linear.bias": (6 * d,),
                           b + f"{norm}.norm.weight": (d,), b + f"{norm}.norm.bias": (d,)})
        for qk in ("norm_q", "norm_k"):  # qk_norm "layer_norm" over one head
            layout.update({b + f"attn1.{qk}.weight": (heads_dim,), b + f"attn1.{qk}.bias": (heads_dim,)})
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            layout.update({b + f"attn1.{proj}.weight": (d, d), b + f"attn1.{proj}.bias": (d,)})
        layout.update({b + "ff.net.0.proj.weight": (4 * d, d), b + "ff.net.0.proj.bias": (4 * d,),  # GELU(tanh)
                       b + "ff.net.2.weight": (d, 4 * d), b + "ff.net.2.bias": (d,)})
        layout.update({f"out_projectors.{i}.weight": (d, d, 1, 1), f"out_projectors.{i}.bias": (d,)})
    return layout


def release_head_layout(base_config: dict) -> dict[str, tuple[int, ...]]:
    """The released perception head's keys (magicmotion/models/latent_segmentation.py: `SemanticFPNHead(
    in_channels=inner_dim, out_channels=in_channels // 2, num_tensors=num_layers)`, hidden 64, per
    block Conv3x3 + GroupNorm(16, 64) + ReLU, then a 1x1 conv)."""
    c = base_config
    d = c["num_attention_heads"] * c["attention_head_dim"]
    layout = {"conv_out.weight": (c["in_channels"] // 2, 64, 1, 1), "conv_out.bias": (c["in_channels"] // 2,)}
    for i in range(c["num_layers"]):
        layout.update({f"convs.{i}.0.weight": (64, d, 3, 3), f"convs.{i}.0.bias": (64,),
                       f"convs.{i}.1.weight": (64,), f"convs.{i}.1.bias": (64,)})
    return layout


def test_a_file_in_the_release_layout_loads_every_tensor_where_it_belongs(tmp_path):
    """Random tensors of the release's key names and shapes: nothing missing or unexpected, each tensor
    lands in the parameter of that name (a projector as its (D, D) matrix), and the shapes are those of
    the real CogVideoX-5B-I2V release where its config gives them."""
    base = build_base("cogvideox", num_layers=4, use_learned_positional_embeddings=True)
    config = dict(base.config)
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(shape, generator=g) for k, shape in release_layout(config, 2).items()}
    head_sd = {k: torch.randn(shape, generator=g) for k, shape in release_head_layout(config).items()}
    torch.save({"state_dict": sd}, tmp_path / "box.pt")
    torch.save({"state_dict": head_sd}, tmp_path / "box_perception_head.pt")
    cn, head, report = load_official_checkpoint(tmp_path / "box.pt", tmp_path / "box_perception_head.pt",
                                                base_config=config)
    assert report.missing == report.unexpected == report.head_missing == report.head_unexpected == []
    assert report.num_control_blocks == 2 and head.config.num_blocks == 4
    ours = cn.state_dict()
    for key, value in sd.items():
        got = ours[key]
        assert torch.equal(got, value.reshape(got.shape)), key
        assert got.numel() == value.numel()
    for name, value in head.state_dict().items():
        assert torch.equal(value, head_sd[name]), name
    assert set(head.state_dict()) == set(head_sd)
    # our ControlNet holds nothing the release's does not (no extra trained tensors)
    assert set(ours) == set(sd)
    # at the real size: the release's 3072-wide projectors (DESIGN: 3072x3072x1x1) and 32 input channels
    real = release_layout(COGVIDEOX_5B_I2V_CONFIG, 21)
    assert real["out_projectors.20.weight"] == (3072, 3072, 1, 1)
    assert real["patch_embed.proj.weight"] == (3072, 32, 2, 2)
    assert release_head_layout(COGVIDEOX_5B_I2V_CONFIG)["conv_out.weight"] == (16, 64, 1, 1)
