"""MagicMotionCogVideoXPipeline against diffusers' CogVideoXImageToVideoPipeline, on tiny components."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pipelines_helpers import RUN, check_trajectory_guidance, make_blob_trajectory, make_image, make_trajectory

from magicmotion.errors import PipelineError
from magicmotion.models import CogVideoXTrajectoryControlNet
from magicmotion.pipelines import MagicMotionCogVideoXPipeline
from magicmotion.pipelines.tiny import tiny_cogvideox_components


def load(models_dir, controlnet: str = "cog_cn") -> MagicMotionCogVideoXPipeline:
    pipe = MagicMotionCogVideoXPipeline.from_pretrained(models_dir / "cog", controlnet=models_dir / controlnet)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, seed: int = 0, **kw) -> np.ndarray:
    args = dict(image=make_image(), prompt="a red square moves right", trajectory=make_trajectory(), kind="box")
    args.update(RUN)
    args.update(kw)
    return pipe(generator=torch.Generator().manual_seed(seed), **args).frames


def test_scale_zero_reproduces_diffusers_cogvideox_i2v(models_dir):
    from diffusers import CogVideoXImageToVideoPipeline

    reference = CogVideoXImageToVideoPipeline.from_pretrained(models_dir / "cog")
    reference.set_progress_bar_config(disable=True)
    expected = reference(image=Image.fromarray(make_image()), prompt="a red square moves right",
                         negative_prompt="blurry", generator=torch.Generator().manual_seed(0), output_type="np",
                         max_sequence_length=8, **RUN).frames
    got = run(load(models_dir, "cog_cn_trained"), negative_prompt="blurry", controlnet_conditioning_scale=0.0)
    assert got.shape == expected.shape == (1, 9, 32, 32, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)  # float32, frames in [0, 1]: measured <= 1e-6


def test_controlnet_follows_the_trajectory_and_batch_works(models_dir):
    pipe = load(models_dir, "cog_cn_trained")
    a = run(pipe)
    np.testing.assert_array_equal(a, run(pipe))  # same seed, same video
    # "> 1e-3": a real change, 1000x the float32 noise of these runs (<= 2e-6 in the equivalences)
    assert np.abs(a - run(pipe, controlnet_conditioning_scale=0.0)).max() > 1e-3
    right = run(pipe, trajectory=make_blob_trajectory(16), kind="mask")
    left = run(pipe, trajectory=make_blob_trajectory(-16), kind="mask")
    assert np.abs(right - left).max() > 1e-3
    batch = run(pipe, prompt=["a red square moves right", "a blue ball"])
    assert batch.shape == (2, 9, 32, 32, 3)
    assert np.abs(batch[0] - batch[1]).max() > 1e-4


def test_trajectory_guidance(models_dir):
    check_trajectory_guidance(load(models_dir, "cog_cn_trained"), run)


def test_learned_positional_embeddings_fix_the_size():
    # CogVideoX-5B-I2V's layout: learned positional embeddings for 64x64 pixels, 9 frames here
    components = tiny_cogvideox_components(transformer=dict(use_learned_positional_embeddings=True))
    controlnet = CogVideoXTrajectoryControlNet.from_transformer(components["transformer"])
    pipe = MagicMotionCogVideoXPipeline(controlnet=controlnet, **components)
    assert pipe.fixed_size == (64, 64, 9)
    assert pipe.default_size() == (64, 64)
    args = dict(image=make_image(), prompt="a square", trajectory=make_trajectory(), kind="box")
    with pytest.raises(PipelineError, match=r"only works at 64x64 with 9 frames; asked for 32x32"):
        pipe(**args, num_frames=9, height=32, width=32)
    with pytest.raises(PipelineError, match="only works at 64x64 with 9 frames; asked for 64x64 with 13"):
        pipe(**{**args, "trajectory": make_trajectory(frames=13)}, height=64, width=64)
    # the default size works (and the 32x32 spec is scaled up with the image)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(**args, num_inference_steps=1, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 9, 64, 64, 3) and out.trajectory_maps.shape == (9, 64, 64, 3)
