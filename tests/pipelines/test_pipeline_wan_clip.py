"""The CLIP image branch of Wan2.1-I2V-14B / Fun-InP bases, end to end on a tiny random base saved as
Wan-AI/Wan2.1-I2V-14B-480P-Diffusers is (image_encoder/ = CLIPVisionModel, image_processor/ =
CLIPImageProcessor, a transformer with `image_dim`): scale 0 equals diffusers' WanImageToVideoPipeline,
the CLIP embeddings reach the base and the ControlNet, and `magicmotion generate` runs on the folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pipelines_helpers import RUN, make_image, make_trajectory, randomize_projectors

from magicmotion.errors import PipelineError
from magicmotion.pipelines import MagicMotionWanPipeline


def tiny_clip(width: int = 16, seed: int = 0):
    """(CLIPVisionModel, CLIPImageProcessor): 2 layers of `width`, 28x28 images in 14x14 patches (5 tokens)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                              num_attention_heads=2, image_size=28, patch_size=14, hidden_act="gelu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = CLIPVisionModel(config).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}, resample=3,
                                   image_mean=[0.48145466, 0.4578275, 0.40821073],
                                   image_std=[0.26862954, 0.26130258, 0.27577711])
    return encoder, processor


def clip_components(seed: int = 0) -> dict:
    """`WanImageToVideoPipeline` components of a tiny 14B-style base (CLIP image branch, image_dim 16)."""
    from magicmotion.pipelines.tiny import tiny_wan_components

    parts = tiny_wan_components(seed=seed, transformer=dict(image_embedding=True))
    parts["image_encoder"], parts["image_processor"] = tiny_clip(parts["transformer"].config.image_dim, seed + 5)
    return parts


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """wan14/ (a diffusers base folder with image_encoder/ and image_processor/) and cn/ (a ControlNet of
    it with random projectors, as if trained)."""
    from diffusers import WanImageToVideoPipeline

    from magicmotion.models import WanTrajectoryControlNet

    root = tmp_path_factory.mktemp("wan14")
    parts = clip_components()
    WanImageToVideoPipeline(**parts).save_pretrained(root / "wan14")
    # the hub's folder names the processor class; transformers 5 without torchvision saves
    # "CLIPImageProcessorPil" (also accepted)
    index = json.loads((root / "wan14" / "model_index.json").read_text())
    assert index["image_processor"][1] in ("CLIPImageProcessor", "CLIPImageProcessorPil")
    index["image_processor"] = ["transformers", "CLIPImageProcessor"]
    (root / "wan14" / "model_index.json").write_text(json.dumps(index))
    randomize_projectors(WanTrajectoryControlNet.from_transformer(parts["transformer"])).save_pretrained(root / "cn")
    return root


def load(root, **kw) -> MagicMotionWanPipeline:
    pipe = MagicMotionWanPipeline.from_pretrained(root / "wan14", controlnet=root / "cn", **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, seed: int = 0, **kw):
    args = dict(image=make_image(), prompt="a red square moves right", trajectory=make_trajectory(), kind="box",
                negative_prompt="blurry", **RUN)
    args.update(kw)
    return pipe(generator=torch.Generator().manual_seed(seed), **args).frames


def test_folder_is_laid_out_like_the_14b_diffusers_release(clip_dir):
    index = json.loads((clip_dir / "wan14" / "model_index.json").read_text())
    assert index["image_encoder"] == ["transformers", "CLIPVisionModel"]
    assert index["image_processor"] == ["transformers", "CLIPImageProcessor"]
    from magicmotion.models.allowed import check_model_index

    check_model_index({**index, "image_processor": ["transformers", "CLIPImageProcessorPil"]}, "saved here")
    pipe = load(clip_dir)
    assert pipe.transformer.config.image_dim == pipe.image_encoder.config.hidden_size == 16
    assert pipe.controlnet.config.image_dim == 16


def test_scale_zero_reproduces_diffusers_wan_i2v_with_clip(clip_dir):
    from diffusers import WanImageToVideoPipeline

    reference = WanImageToVideoPipeline.from_pretrained(clip_dir / "wan14")
    reference.set_progress_bar_config(disable=True)
    expected = reference(image=Image.fromarray(make_image()), prompt="a red square moves right",
                         negative_prompt="blurry", generator=torch.Generator().manual_seed(0), **RUN).frames
    got = run(load(clip_dir), controlnet_conditioning_scale=0.0)
    assert got.shape == expected.shape == (1, 9, 32, 32, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)  # float32, frames in [0, 1]: measured <= 1e-6
    # "> 1e-3": a real change, 1000x the float32 noise of these runs (<= 2e-6 in the equivalences)
    assert np.abs(run(load(clip_dir)) - got).max() > 1e-3  # and the ControlNet, switched on, changes it


def test_clip_embeddings_reach_the_base_and_the_controlnet(clip_dir):
    pipe = load(clip_dir)
    seen = {"base": [], "controlnet": []}
    for name, module in (("base", pipe.transformer), ("controlnet", pipe.controlnet)):
        module.condition_embedder.register_forward_hook(
            lambda m, args, out, name=name: seen[name].append(None if out[3] is None else tuple(out[3].shape)))
    plain = run(pipe)
    # CLS + 4 patch tokens of the 28x28 CLIP input, projected to the width of the base (16), both guidance branches
    assert seen["base"] and set(seen["base"]) == {(2, 5, 16)} and set(seen["controlnet"]) == {(2, 5, 16)}
    # the same first frame's latents, other CLIP embeddings: another video, through base and ControlNet
    with torch.no_grad():
        for p in pipe.image_encoder.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.5)
    other = run(pipe)
    assert np.abs(other - plain).max() > 1e-3
    off_plain = run(load(clip_dir), controlnet_conditioning_scale=0.0)
    off_other = run(pipe, controlnet_conditioning_scale=0.0)
    assert np.abs((other - off_other) - (plain - off_plain)).max() > 1e-4  # the ControlNet's share changed too


def test_a_clip_base_without_its_image_encoder_is_refused(clip_dir):
    pipe = load(clip_dir, image_encoder=None, image_processor=None)
    with pytest.raises(PipelineError, match="image branch .* no image_encoder"):
        run(pipe)


def test_generate_cli_on_a_14b_style_folder(clip_dir, inputs_dir):
    from magicmotion.cli import main
    from magicmotion.io import read_video

    out = inputs_dir / "video.mp4"
    args = ["generate", "--base", str(clip_dir / "wan14"), "--controlnet", str(clip_dir / "cn"),
            "--image", str(inputs_dir / "first.png"), "--trajectory", str(inputs_dir / "spec.json"),
            "--kind", "box", "--prompt", "a red square moves right", "--steps", "2", "--seed", "0", "--out", str(out)]
    assert main(args) == 0
    assert read_video(out)[0].shape == (9, 32, 32, 3)
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["model"] == "MagicMotionWanPipeline" and settings["steps"] == 2
