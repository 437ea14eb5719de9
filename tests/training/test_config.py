"""Training configs: shipped YAMLs parse, bad configs fail with errors naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from magicmotion.errors import ConfigError
from magicmotion.training.config import check_config, from_dict, load_config

from training_helpers import config_dict

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "configs").glob("wan-1.3b/*.yaml")) + sorted((REPO / "configs").glob("cogvideox-5b/*.yaml"))


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_configs_are_valid():
    names = {f"{p.parent.name}/{p.name}" for p in SHIPPED}
    for model in ("wan-1.3b", "cogvideox-5b"):
        for stage in ("stage1", "stage2", "stage3"):
            assert f"{model}/{stage}.yaml" in names
    assert {"wan-1.3b/stage2-from-scratch.yaml", "wan-1.3b/stage2-no-seg.yaml"} <= names
    for path in SHIPPED:
        config = from_dict(yaml.safe_load(path.read_text()), source=str(path))
        check_config(config, files=False)  # their datasets and previous stages do not exist here
        stage = config.stage
        assert config.condition == {1: "mask", 2: "box", 3: "sparse_box"}[stage], path
        assert config.optim.lr == 1e-5 and config.loop.batch_size == 1, path  # the paper's settings
        if "no-seg" in path.name:
            assert config.lambda_seg == 0
        elif stage > 1:
            assert config.lambda_seg == 0.5 and config.segment_head, path
        if "from-scratch" in path.name or stage == 1:
            assert config.init_from is None, path
        else:
            assert config.init_from, path
        assert config.init_head == (stage == 3), path


def test_load_config_with_overrides(tmp_path, wan_base, dataset):
    path = write(tmp_path / "c.yaml", config_dict(wan_base, dataset, tmp_path / "out"))
    config = load_config(path, ["lr=2e-4", "loop.max_steps=7", "data.size=[48, 32]", "condition=box"])
    assert config.optim.lr == 2e-4
    assert config.loop.max_steps == 7
    assert config.data.size == (48, 32)
    assert config.condition == "box"
    assert config.source == str(path)
    data = config_dict(wan_base, dataset, tmp_path / "out")
    data["validation"] = None  # an empty section in YAML
    config = load_config(write(tmp_path / "empty.yaml", data), ["validation.seed=3"])
    assert config.validation.seed == 3 and config.validation.num_inference_steps == 25


def test_unknown_key_names_key_and_file(tmp_path, wan_base, dataset):
    data = config_dict(wan_base, dataset, tmp_path / "out")
    data["optim"]["learning_rate"] = 1e-4
    path = write(tmp_path / "typo.yaml", data)
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown key 'optim\.learning_rate'"):
        load_config(path)
    data = config_dict(wan_base, dataset, tmp_path / "out", lamda_seg=0.5)
    path = write(tmp_path / "typo2.yaml", data)
    with pytest.raises(ConfigError, match=r"unknown key 'lamda_seg' \(did you mean 'lambda_seg'\?\)"):
        load_config(path)
    path = write(tmp_path / "ok.yaml", config_dict(wan_base, dataset, tmp_path / "out"))
    with pytest.raises(ConfigError, match="unknown key 'no_such_key'"):
        load_config(path, ["no_such_key=3"])


def test_wrong_types_and_values(tmp_path, wan_base, dataset):
    path = write(tmp_path / "c.yaml", config_dict(wan_base, dataset, tmp_path / "out"))
    with pytest.raises(ConfigError, match="loop.max_steps must be an integer"):
        load_config(path, ["max_steps=abc"])
    with pytest.raises(ConfigError, match="data.num_frames must be 4k \\+ 1"):
        load_config(path, ["num_frames=8"])
    with pytest.raises(ConfigError, match="condition must be one of"):
        load_config(path, ["condition=points"])
    with pytest.raises(ConfigError, match="lambda_seg is 0.5 but segment_head is false"):
        load_config(path, ["lambda_seg=0.5"])
    with pytest.raises(ConfigError, match="data.sparse_max_keys must be 1..9"):
        load_config(path, ["sparse_max_keys=10"])
    with pytest.raises(ConfigError, match="ambiguous"):
        load_config(path, ["seed=1", "split=val"])  # 'split' is in data and validation


def test_missing_dataset(tmp_path, wan_base, dataset):
    data = config_dict(wan_base, dataset, tmp_path / "out")
    del data["data"]["dataset"]
    with pytest.raises(ConfigError, match=r"nodata\.yaml: data.dataset is missing"):
        load_config(write(tmp_path / "nodata.yaml", data))
    data = config_dict(wan_base, tmp_path / "no-such-dataset", tmp_path / "out")
    with pytest.raises(ConfigError, match="no-such-dataset does not exist"):
        load_config(write(tmp_path / "gone.yaml", data))


def test_stage2_without_stage1_output(tmp_path, wan_base, dataset):
    data = config_dict(wan_base, dataset, tmp_path / "stage2", stage=2, condition="box", segment_head=True,
                       lambda_seg=0.5, init_from=str(tmp_path / "stage1"))
    path = write(tmp_path / "stage2.yaml", data)
    with pytest.raises(ConfigError, match=r"stage 1's output is missing: no ControlNet at .*stage1/final/controlnet"):
        load_config(path)
    # a stage 1 output without a segment head cannot start stage 3's head
    (tmp_path / "stage2" / "final" / "controlnet").mkdir(parents=True)
    (tmp_path / "stage2" / "final" / "controlnet" / "config.json").write_text("{}")
    data = config_dict(wan_base, dataset, tmp_path / "stage3", stage=3, condition="sparse_box", segment_head=True,
                       lambda_seg=0.5, init_from=str(tmp_path / "stage2"), init_head=True)
    with pytest.raises(ConfigError, match="stage 2's output .* has no segment_head"):
        load_config(write(tmp_path / "stage3.yaml", data))


def test_init_head_needs_init_from(tmp_path, wan_base, dataset):
    data = config_dict(wan_base, dataset, tmp_path / "out", stage=3, condition="sparse_box", segment_head=True,
                       lambda_seg=0.5, init_head=True)
    with pytest.raises(ConfigError, match="init_head is true but init_from is null"):
        load_config(write(tmp_path / "c.yaml", data))
