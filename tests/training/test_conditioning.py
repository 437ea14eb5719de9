"""The training inputs are built exactly as the pipelines build them at inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicmotion.training.conditioning import LatentEncoder, base_inputs, drop_image_condition
from magicmotion.training.data import frames_to_tensor


@pytest.fixture(scope="module")
def wan():
    from magicmotion.pipelines.tiny import tiny_wan_components

    c = tiny_wan_components(seed=0)
    return c, LatentEncoder("wan", c, c["transformer"].config)


@pytest.fixture(scope="module")
def cogvideox():
    from magicmotion.pipelines.tiny import tiny_cogvideox_components

    c = tiny_cogvideox_components(seed=0)
    return c, LatentEncoder("cogvideox", c, c["transformer"].config)


def frames(batch=2, t=9, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (batch, t, 32, 32, 3), dtype=np.uint8)


def test_wan_image_condition_equals_the_pipeline(wan):
    from diffusers import WanImageToVideoPipeline

    c, enc = wan
    pipe = WanImageToVideoPipeline(**c)
    video = torch.stack([frames_to_tensor(f) for f in frames()])
    ours = enc.image_condition(video[:, :, 0], 9)
    assert ours.shape == (2, 20, 3, 4, 4)
    for i in range(2):
        _, theirs = pipe.prepare_latents(video[i:i + 1, :, 0], 1, 16, 32, 32, 9, torch.float32, torch.device("cpu"),
                                         torch.Generator().manual_seed(0))
        # float32, batch 2 vs 1 through the VAE: measured 3.6e-7
        assert torch.allclose(ours[i:i + 1], theirs, atol=1e-5), (ours[i:i + 1] - theirs).abs().max()
    assert torch.equal(ours[:, :4, 0], torch.ones(2, 4, 4, 4)) and not ours[:, :4, 1:].any()


def test_cogvideox_image_condition_equals_the_pipeline(cogvideox):
    from diffusers import CogVideoXImageToVideoPipeline

    c, enc = cogvideox
    pipe = CogVideoXImageToVideoPipeline(**c)
    video = torch.stack([frames_to_tensor(f) for f in frames()])
    ours = enc.image_condition(video[:, :, 0], 9, seeds=[11, 12])
    assert ours.shape == (2, 3, 16, 4, 4) and not ours[:, 1:].any()
    for i, seed in enumerate([11, 12]):
        _, theirs = pipe.prepare_latents(video[i:i + 1, :, 0], 1, 16, 9, 32, 32, torch.float32, torch.device("cpu"),
                                         [torch.Generator().manual_seed(seed)])
        assert torch.allclose(ours[i:i + 1], theirs, atol=1e-5)  # measured 0


def test_trajectory_latents_equal_the_pipelines(wan, cogvideox):
    from magicmotion.pipelines.pipeline_cogvideox import cogvideox_trajectory_latents
    from magicmotion.pipelines.pipeline_wan import wan_trajectory_latents

    maps = frames(batch=1, seed=3)[0]
    video = frames_to_tensor(maps)[None]
    for (c, enc), theirs in ((wan, wan_trajectory_latents), (cogvideox, cogvideox_trajectory_latents)):
        ours = enc.encode_video(video, trajectory=True)
        assert torch.allclose(ours, theirs(c["vae"], maps), atol=1e-6)  # the same ops: measured 0


def test_prompt_embeddings_equal_the_pipeline(wan):
    from diffusers import WanImageToVideoPipeline

    c, enc = wan
    embeds = enc.encode_prompt(["a red circle", ""])
    assert embeds.shape == (2, 512, 16)
    theirs, _ = WanImageToVideoPipeline(**c).encode_prompt("a red circle", do_classifier_free_guidance=False,
                                                          max_sequence_length=512)
    assert torch.allclose(embeds[:1], theirs)  # default tolerance: float32 of batch 2 vs 1, measured 3e-7


def test_prompt_length_follows_the_tokenizer():
    from diffusers import WanImageToVideoPipeline

    from magicmotion.pipelines.tiny import tiny_tokenizer, tiny_wan_components

    c = tiny_wan_components(seed=0)
    c["tokenizer"] = tiny_tokenizer(max_length=64)
    embeds = LatentEncoder("wan", c, c["transformer"].config).encode_prompt(["a red circle"])
    assert embeds.shape == (1, 64, 16)
    theirs, _ = WanImageToVideoPipeline(**c).encode_prompt("a red circle", do_classifier_free_guidance=False,
                                                          max_sequence_length=64)
    assert torch.allclose(embeds, theirs)  # default tolerance: float32 rounding, measured 3e-7


def test_model_inputs_layout(wan, cogvideox):
    noisy = torch.randn(2, 16, 3, 4, 4)
    cond = torch.randn(2, 20, 3, 4, 4)
    hidden, extra = base_inputs("wan", wan[0]["transformer"].config, noisy, {"image_condition": cond})
    assert hidden.shape == (2, 36, 3, 4, 4) and torch.equal(hidden[:, :16], noisy) and extra == {}
    dropped = drop_image_condition("wan", cond, torch.tensor([True, False]))
    assert torch.equal(dropped[0, :4], cond[0, :4]) and not dropped[0, 4:].any() and torch.equal(dropped[1], cond[1])

    noisy = torch.randn(1, 3, 16, 4, 4)
    cond = torch.randn(1, 3, 16, 4, 4)
    hidden, extra = base_inputs("cogvideox", cogvideox[0]["transformer"].config, noisy, {"image_condition": cond})
    assert hidden.shape == (1, 3, 32, 4, 4) and "image_rotary_emb" in extra
    assert not drop_image_condition("cogvideox", cond, torch.tensor([True])).any()
