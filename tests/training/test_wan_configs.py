"""The Wan configs: configs/wan-1.3b (Wan2.1-Fun-1.3B-InP, converted) and configs/wan2.1-14b-480p
(Wan2.1-I2V-14B-480P from the hub, a partial ControlNet) pass the config validator, name a base a
user can have, mirror each other's keys and chain their stages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from magicmotion.training.config import check_config, from_dict

REPO = Path(__file__).resolve().parents[2]
FUN = sorted((REPO / "configs" / "wan-1.3b").glob("*.yaml"))
WAN14 = sorted((REPO / "configs" / "wan2.1-14b-480p").glob("*.yaml"))
FUN_FOLDER = "models/Wan2.1-Fun-1.3B-InP-Diffusers"


def keys(data: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in data.items():
        out |= keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return out


@pytest.mark.parametrize("path", FUN + WAN14, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_wan_config_passes_the_validator(path):
    config = from_dict(yaml.safe_load(path.read_text()), source=str(path))
    check_config(config, files=False)  # datasets, previous stages and the converted folder are not here
    assert config.model == "wan" and config.loop.mixed_precision == "bf16" and config.loop.gradient_checkpointing
    assert config.condition == {1: "mask", 2: "box", 3: "sparse_box"}[config.stage]
    assert config.optim.lr == 1e-5 and config.loop.batch_size == 1  # the paper's


def test_fun_configs_name_the_folder_convert_wan_fun_makes():
    assert {p.name for p in FUN} >= {"stage1.yaml", "stage2.yaml", "stage3.yaml"}
    for path in FUN:
        text = path.read_text()
        assert yaml.safe_load(text)["base"] == FUN_FOLDER, path
        commands = [line.strip("# ").strip() for line in text.splitlines() if "convert wan-fun" in line]
        assert commands == [f"magicmotion convert wan-fun Wan2.1-Fun-1.3B-InP --out {FUN_FOLDER}"], path
        assert "hf download alibaba-pai/Wan2.1-Fun-1.3B-InP --local-dir Wan2.1-Fun-1.3B-InP" in text, path


def test_14b_configs_mirror_the_fun_ones_and_chain_their_stages():
    assert [p.name for p in WAN14] == ["stage1.yaml", "stage2.yaml", "stage3.yaml"]
    known = json.loads((REPO / "src/magicmotion/models/known_configs/wan2.1-i2v-14b-480p.json").read_text())
    base_layers = known["parts"]["transformer"][2]["num_layers"]
    previous = None
    for path in WAN14:
        data = yaml.safe_load(path.read_text())
        fun = yaml.safe_load((REPO / "configs" / "wan-1.3b" / path.name).read_text())
        assert keys(data) == keys(fun), path  # the same keys as configs/wan-1.3b
        config = from_dict(data, source=str(path))
        assert config.base == "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
        assert 1 <= config.controlnet_layers < base_layers  # a partial ControlNet
        assert config.data.precomputed and config.data.size == (832, 480)
        assert config.init_from == previous and config.init_head == (config.stage == 3), path
        assert (config.lambda_seg, config.segment_head) == ((0.0, False) if config.stage == 1 else (0.5, True))
        assert re.search(rf"--config configs/wan2.1-14b-480p/{path.name}\b", path.read_text())
        previous = config.output_dir
