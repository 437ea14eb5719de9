"""`magicmotion plan`: real-size parts on the meta device, counts checked against published sizes."""

from __future__ import annotations

import glob
import time

import pytest

from magicmotion.cli import main
from magicmotion.errors import ModelError
from magicmotion.models.plan import known_bases, plan


def _within(value, figure, tol=0.02):
    return abs(value - figure) <= tol * figure


def _image_branch(dim: int, layers: int) -> int:
    """Wan's I2V additions: k_img, v_img (+ biases) and norm_k_img per block, img_emb MLPProj(1280, dim)."""
    per_block = 2 * (dim * dim + dim) + dim
    img_emb = 2 * 1280 + (1280 * 1280 + 1280) + (1280 * dim + dim) + 2 * dim
    return layers * per_block + img_emb


def test_transformer_counts_match_published_sizes():
    known = known_bases()
    cog = plan("cogvideox-5b-i2v", (720, 480), 49).params["transformer"]
    low, high = known["cogvideox-5b-i2v"]["published"]["transformer"]
    assert low <= cog <= high  # 5.57B
    # Wan2.1 1.3B: backbone 1.42B (2.84 GB bf16); Fun-InP = backbone + 20 input channels + CLIP branch
    fun = plan("wan2.1-fun-1.3b-inp", (832, 480), 49).params["transformer"]
    backbone = fun - _image_branch(1536, 30) - 20 * 1536 * 4
    assert _within(backbone, known["wan2.1-fun-1.3b-inp"]["published"]["backbone"])
    # Wan2.1 14B: backbone 14.3B (28.6 GB bf16); I2V = backbone + 20 input channels + CLIP branch
    i2v = plan("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", (832, 480), 81).params["transformer"]
    backbone = i2v - _image_branch(5120, 40) - 20 * 5120 * 4
    assert _within(backbone, known["wan2.1-i2v-14b-480p"]["published"]["backbone"])
    ti2v = plan("wan2.2-ti2v-5b", (1280, 704), 121).params["transformer"]
    assert _within(ti2v, known["wan2.2-ti2v-5b"]["published"]["transformer"])


def test_controlnet_and_memory_rows():
    p = plan("cogvideox-5b-i2v", (720, 480), 49, controlnet_layers=21, segment_head=True, gpus=4)
    assert p.control_layers == 21 and p.tokens == 13 * 30 * 45
    assert 2.5e9 < p.params["controlnet"] < 3.2e9 and "segment_head" in p.params
    ddp, zero2, zero3, zero3_all = p.training.values()
    assert ddp > zero2 > zero3 > zero3_all
    assert p.inference["bf16, all on GPU"] > p.inference["bf16, model offload"]
    assert p.inference["fp8, all on GPU"] < p.inference["bf16, all on GPU"]


def test_every_shipped_config_prints_a_table(capsys):
    configs = sorted(glob.glob("configs/*/stage*.yaml"))
    assert len(configs) >= 13
    for path in configs:
        start = time.perf_counter()
        assert main(["plan", path]) == 0, path
        out = capsys.readouterr().out
        assert time.perf_counter() - start < 20, path
        assert "base transformer" in out and "ZeRO-3/FSDP" in out and "smallest GPU" in out, path


def test_plan_with_base_and_errors(capsys):
    assert main(["plan", "--base", "wan2.1-fun-1.3b-inp", "--size", "832x480", "--frames", "81", "--batch", "1"]) == 0
    assert "image encoder" in capsys.readouterr().out
    assert main(["plan", "--base", "some/unknown-model"]) == 2
    assert "not a known base" in capsys.readouterr().err
    with pytest.raises(ModelError):
        plan("wan2.2-ti2v-5b", (0, 480), 49)
