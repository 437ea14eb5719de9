"""Shared fixtures: a tiny synthetic dataset, tiny Wan / CogVideoX base folders, precomputed latents,
and a `make_config` helper. Everything is built once per session, on CPU, at 9 frames x 32 x 32."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_helpers import FRAMES, SIZE, config_dict

@pytest.fixture(autouse=True)
def one_thread():
    """The tiny models here are all overhead: one intra-op thread is several times faster on a shared
    CPU. Restored after each test, so other parts' tests are unaffected."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("training")


@pytest.fixture(scope="session")
def dataset(work) -> Path:
    """4 synthetic clips (9 frames, 32x32): 3 in split train, 1 in split test."""
    from magicmotion.data.dataset import read_index, write_index
    from magicmotion.data.synthetic import synthesize

    root = work / "data"
    synthesize(root, clips=4, frames=FRAMES, size=SIZE, seed=0, test_fraction=0.0, progress=False)
    records = read_index(root)
    records[-1]["split"] = "test"
    write_index(root, records)
    return root


@pytest.fixture(scope="session")
def wan_base(work) -> Path:
    from diffusers import WanImageToVideoPipeline

    from magicmotion.pipelines.tiny import tiny_wan_components

    path = work / "wan-base"
    WanImageToVideoPipeline(**tiny_wan_components(seed=0)).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def cogvideox_base(work) -> Path:
    from diffusers import CogVideoXImageToVideoPipeline

    from magicmotion.pipelines.tiny import tiny_cogvideox_components

    path = work / "cogvideox-base"
    CogVideoXImageToVideoPipeline(**tiny_cogvideox_components(seed=0)).save_pretrained(path)
    return path


@pytest.fixture
def make_config(wan_base, dataset, tmp_path):
    """make_config(model="wan", **dotted_overrides) -> a checked TrainConfig writing under tmp_path."""
    from magicmotion.training.config import check_config, from_dict

    def make(model: str = "wan", base: Path | None = None, output_dir: Path | None = None, **overrides):
        base = base or wan_base
        out = output_dir or tmp_path / "run"
        config = from_dict(config_dict(base, dataset, out, model=model, **overrides), source="test.yaml")
        check_config(config)
        return config

    return make


@pytest.fixture(scope="session")
def wan_precomputed(work, wan_base, dataset) -> Path:
    """Precomputed latents of the train split for the tiny Wan base: all three kinds."""
    from magicmotion.training.config import from_dict
    from magicmotion.training.precompute import precompute

    config = from_dict(config_dict(wan_base, dataset, work / "unused"))
    return precompute(config, work / "wan-precomputed", kinds=["box", "sparse_box"], progress=False)
