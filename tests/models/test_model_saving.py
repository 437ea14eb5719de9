"""save_pretrained -> from_pretrained round trips (safetensors) for ControlNets and the segment head."""

from __future__ import annotations

import torch
from models_helpers import build_base, build_inputs, controlnet_class, perturb

from magicmotion.models import MagicMotionTransformer, SegmentHead


def test_round_trip_gives_identical_outputs(family, tmp_path):
    base = build_base(family, num_layers=3)
    cn = perturb(controlnet_class(base).from_transformer(base, num_layers=2))
    head = perturb(SegmentHead.from_transformer(base), seed=3)
    cn.save_pretrained(tmp_path / "controlnet")
    head.save_pretrained(tmp_path / "segment_head")
    assert (tmp_path / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "segment_head" / "diffusion_pytorch_model.safetensors").is_file()

    cn2 = controlnet_class(base).from_pretrained(tmp_path / "controlnet")
    head2 = SegmentHead.from_pretrained(tmp_path / "segment_head")
    assert cn2.config.num_layers == 2 and cn2.config.base_num_layers == 3
    assert cn2.config.base_type == cn.config.base_type

    inputs, trajectory = build_inputs(base, batch=2)
    with torch.no_grad():
        a = MagicMotionTransformer(base, cn, head)(trajectory_latents=trajectory, return_segmentation=True, **inputs)
        b = MagicMotionTransformer(base, cn2, head2)(trajectory_latents=trajectory, return_segmentation=True, **inputs)
    assert torch.equal(a.sample, b.sample)
    assert torch.equal(a.segmentation, b.segmentation)


def test_saved_config_describes_the_base(tmp_path):
    import json

    base = build_base("wan_clip")
    controlnet_class(base).from_transformer(base).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "WanTrajectoryControlNet"
    assert (config["base_type"], config["num_attention_heads"], config["attention_head_dim"]) == ("wan", 2, 8)
    assert config["patch_size"] == [1, 2, 2] and config["image_dim"] == 16 and config["base_in_channels"] == 36
