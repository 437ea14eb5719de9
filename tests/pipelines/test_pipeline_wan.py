"""MagicMotionWanPipeline against diffusers' WanImageToVideoPipeline, on tiny components loaded from disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pipelines_helpers import RUN, check_trajectory_guidance, make_blob_trajectory, make_image, make_trajectory

from magicmotion.errors import PipelineError
from magicmotion.pipelines import MagicMotionWanPipeline
from magicmotion.trajectory import render


def load(models_dir, controlnet: str = "wan_cn") -> MagicMotionWanPipeline:
    pipe = MagicMotionWanPipeline.from_pretrained(models_dir / "wan", controlnet=models_dir / controlnet)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, seed: int = 0, **kw) -> np.ndarray:
    args = dict(image=make_image(), prompt="a red square moves right", trajectory=make_trajectory(), kind="box")
    args.update(RUN)
    args.update(kw)
    return pipe(generator=torch.Generator().manual_seed(seed), **args).frames


def test_scale_zero_reproduces_diffusers_wan_i2v(models_dir):
    from diffusers import WanImageToVideoPipeline

    reference = WanImageToVideoPipeline.from_pretrained(models_dir / "wan")
    reference.set_progress_bar_config(disable=True)
    expected = reference(image=Image.fromarray(make_image()), prompt="a red square moves right",
                         negative_prompt="blurry", generator=torch.Generator().manual_seed(0), **RUN).frames
    # a trained-looking ControlNet, switched off by the scale
    got = run(load(models_dir, "wan_cn_trained"), negative_prompt="blurry", controlnet_conditioning_scale=0.0)
    assert got.shape == expected.shape == (1, 9, 32, 32, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)  # float32, frames in [0, 1]: measured <= 1e-6


def test_controlnet_follows_the_trajectory_and_seed_repeats(models_dir):
    pipe = load(models_dir, "wan_cn_trained")
    a = run(pipe)
    b = run(pipe)
    np.testing.assert_array_equal(a, b)  # same seed, same video
    off = run(pipe, controlnet_conditioning_scale=0.0)
    right = run(pipe, trajectory=make_blob_trajectory(16), kind="mask")
    left = run(pipe, trajectory=make_blob_trajectory(-16), kind="mask")
    # "> 1e-3": a real change, 1000x the float32 noise of these runs (<= 2e-6 in the equivalences)
    assert np.abs(a - off).max() > 1e-3  # the ControlNet changes the video
    assert np.abs(right - left).max() > 1e-3  # ... according to the trajectory
    assert np.abs(a - run(pipe, seed=1)).max() > 1e-3


def test_trajectory_guidance(models_dir):
    check_trajectory_guidance(load(models_dir, "wan_cn_trained"), run)


def test_batch_of_two_prompts_matches_single_runs(models_dir):
    pipe = load(models_dir, "wan_cn_trained")
    prompts = ["a red square moves right", "a blue ball rolls left"]
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    args = dict(image=make_image(), trajectory=make_trajectory(), kind="box", **RUN)
    batch = pipe(prompt=prompts, generator=gens, **args).frames
    assert batch.shape == (2, 9, 32, 32, 3)
    for i, (prompt, seed) in enumerate(zip(prompts, (3, 4))):
        single = pipe(prompt=prompt, generator=torch.Generator().manual_seed(seed), **args).frames
        np.testing.assert_allclose(batch[i], single[0], atol=1e-5)  # float32 of batch 2 vs 1: measured 9e-7 (was 1e-4)


def test_trajectory_forms_agree_and_callback_sees_every_step(models_dir):
    pipe = load(models_dir, "wan_cn_trained")
    traj = make_trajectory()
    maps = render(traj, "box")
    steps = []

    def callback(p, i, t, tensors):
        steps.append((i, tuple(tensors["latents"].shape), tuple(tensors["trajectory_latents"].shape)))
        return {}

    out = pipe(image=make_image(), prompt="a square", trajectory=traj, kind="box", generator=torch.Generator().manual_seed(0),
               callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents", "trajectory_latents"],
               **RUN)
    np.testing.assert_array_equal(out.trajectory_maps, maps)
    assert steps == [(0, (1, 16, 3, 4, 4), (1, 16, 3, 4, 4)), (1, (1, 16, 3, 4, 4), (1, 16, 3, 4, 4))]
    from_maps = pipe(image=make_image(), prompt="a square", trajectory=maps, generator=torch.Generator().manual_seed(0),
                     **RUN).frames
    as_tensor = torch.from_numpy(maps).permute(0, 3, 1, 2).float() / 255
    from_tensor = pipe(image=make_image(), prompt="a square", trajectory=as_tensor,
                       generator=torch.Generator().manual_seed(0), **RUN).frames
    np.testing.assert_allclose(from_maps, out.frames, atol=1e-6)  # measured 0
    np.testing.assert_allclose(from_tensor, out.frames, atol=1e-5)  # measured 0 (uint8 / 255 is exact here)


def test_defaults_come_from_the_trajectory(models_dir):
    pipe = load(models_dir)
    cond, frames, h, w = pipe.prepare_trajectory(make_image(64), make_trajectory(64), "box")
    assert (frames, h, w) == (9, 64, 64) and cond.maps.shape == (9, 64, 64, 3)
    # a large trajectory is brought down to Wan2.1's 480P area, in multiples of 16
    assert pipe.default_size((1280, 720)) == (832, 464)
    assert pipe.default_size((40, 40)) == (32, 32)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(num_frames=8), "divisible by 4"),
        (dict(trajectory=make_trajectory(frames=10), num_frames=None), "10 frames"),
        (dict(num_frames=13), "trajectory has 9 frames"),
        (dict(height=40, width=32), "multiples of 16"),
        (dict(kind="circle"), "unknown kind"),
        (dict(image=make_image(32)[:, :16]), "aspect"),
        (dict(prompt=["a", "b"], negative_prompt=["c"]), "negative prompts"),
        (dict(num_inference_steps=0), "at least 1"),
        (dict(trajectory_guidance_scale=-1.0), "trajectory_guidance_scale"),
    ],
)
def test_bad_inputs_fail_before_any_model_runs(models_dir, kw, message, monkeypatch):
    pipe = load(models_dir)
    monkeypatch.setattr(pipe, "encode_prompt", lambda *a, **k: pytest.fail("a model ran on bad input"))
    args = dict(image=make_image(), prompt="a square", trajectory=make_trajectory(), kind="box", **RUN)
    args.update(kw)
    with pytest.raises(PipelineError, match=message):
        pipe(**args)


def test_text_length_comes_from_the_tokenizer(models_dir):
    from magicmotion.pipelines.pipeline_wan import wan_text_length
    from magicmotion.pipelines.tiny import tiny_tokenizer

    short, full = tiny_tokenizer(max_length=64), tiny_tokenizer()
    assert wan_text_length(short) == 64 and wan_text_length(full) == 512
    assert wan_text_length(short, {"image_dim": 1280}) == 512  # the 14B's image/text split stays at 512

    pipe = load(models_dir, "wan_cn_trained")
    seen = []

    def callback(p, i, t, tensors):
        seen.append(tuple(tensors["prompt_embeds"].shape))
        return {}

    kw = dict(callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["prompt_embeds"])
    default = run(pipe, **kw)
    assert seen[0][1] == 512
    pipe.tokenizer = short  # a base trained on 64 text tokens, as the shipped tiny model
    seen.clear()
    got = run(pipe, **kw)
    assert seen[0][1] == 64
    np.testing.assert_array_equal(got, run(pipe, max_sequence_length=64))
    assert np.abs(got - default).max() > 1e-4  # the padding reaches the model: the length matters
