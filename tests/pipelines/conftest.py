"""Fixtures for the pipeline tests: tiny Wan and CogVideoX bases + ControlNets built in code, saved once
per session with `save_pretrained` and loaded back with `from_pretrained` (no downloads); a first frame
and a trajectory spec at 32x32, 9 frames (runs: 2 steps, ~1 s each)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipelines_helpers import REAL, make_image, make_trajectory, randomize_projectors

from magicmotion.trajectory import save


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors run fastest on one thread; two threads on a busy 2-core machine are 10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """wan/ and cog/ (diffusers base folders), wan_cn/, wan_cn_trained/, cog_cn/, cog_cn_trained/
    (ControlNet folders; *_trained with random projectors) and wan_other_cn/ (a Wan ControlNet for a
    wider base)."""
    from diffusers import CogVideoXImageToVideoPipeline, WanImageToVideoPipeline

    from magicmotion.models import CogVideoXTrajectoryControlNet, WanTrajectoryControlNet, tiny_wan_transformer
    from magicmotion.pipelines.tiny import tiny_cogvideox_components, tiny_wan_components

    root = tmp_path_factory.mktemp("models")
    wan = tiny_wan_components(seed=0)
    WanImageToVideoPipeline(**wan).save_pretrained(root / "wan")
    WanTrajectoryControlNet.from_transformer(wan["transformer"]).save_pretrained(root / "wan_cn")
    randomize_projectors(WanTrajectoryControlNet.from_transformer(wan["transformer"])).save_pretrained(
        root / "wan_cn_trained")
    other = tiny_wan_transformer(attention_head_dim=16, text_dim=16)
    WanTrajectoryControlNet.from_transformer(other).save_pretrained(root / "wan_other_cn")

    cog = tiny_cogvideox_components(seed=0)
    CogVideoXImageToVideoPipeline(**cog).save_pretrained(root / "cog")
    CogVideoXTrajectoryControlNet.from_transformer(cog["transformer"]).save_pretrained(root / "cog_cn")
    randomize_projectors(CogVideoXTrajectoryControlNet.from_transformer(cog["transformer"])).save_pretrained(
        root / "cog_cn_trained")
    return root


@pytest.fixture
def inputs_dir(tmp_path) -> Path:
    """first.png (32x32) and spec.json (32x32, 9 frames) in tmp_path."""
    from PIL import Image

    Image.fromarray(make_image()).save(tmp_path / "first.png")
    save(make_trajectory(), tmp_path / "spec.json")
    return tmp_path


@pytest.fixture
def real_samples() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"real samples not found at {REAL}")
    return REAL
