"""What `load_pipeline` and the before-loading checks make of the names a user gives: the device, the
dtype, the base's folder or hub id, its model_index.json and transformer config. Every refusal names
the file or value and says what is wrong; nothing here loads weights."""

from __future__ import annotations

import json

import pytest
import torch

import magicmotion.pipelines.loading as loading
from magicmotion.errors import ModelError, PipelineError
from magicmotion.pipelines.loading import base_config, detect_model, resolve_device, resolve_dtype, transformer_config

WAN_INDEX = {"_class_name": "WanImageToVideoPipeline", "_diffusers_version": "0.35.0",
             "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"]}


def test_dtype_follows_the_device_unless_named():
    assert resolve_dtype(None, "cuda") == resolve_dtype(None, "cuda:1") == torch.bfloat16
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("FP16", "cuda") == torch.float16 and resolve_dtype(torch.float64, "cpu") == torch.float64
    with pytest.raises(PipelineError, match=r"^unknown dtype 'int8': expected one of bf16, fp16, fp32$"):
        resolve_dtype("int8", "cpu")


def test_device_default_is_cuda_where_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == "cuda" and resolve_device("cuda:1") == "cuda:1"


@pytest.mark.parametrize("device, message", [
    ("cuda", "device 'cuda' asked for but CUDA is not available"),
    ("cuda:0", "device 'cuda:0' asked for but CUDA is not available"),
    ("gpu0", "unknown device 'gpu0' (cpu, cuda, cuda:N)"),
    ("meta", "device 'meta' holds no values (cpu, cuda, cuda:N)"),
])
def test_devices_that_cannot_run_are_refused_in_one_line(device, message, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PipelineError) as e:
        resolve_device(device)
    assert str(e.value) == message
    assert resolve_device("cpu") == "cpu"


def write_base(folder, index=WAN_INDEX, transformer: dict | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps(index))
    if transformer is not None:
        (folder / "transformer").mkdir()
        (folder / "transformer" / "config.json").write_text(json.dumps(transformer))
    return folder


def test_base_config_reads_and_checks_the_model_index(tmp_path):
    base = write_base(tmp_path / "base")
    assert base_config(base) == WAN_INDEX
    with pytest.raises(ModelError) as e:
        base_config(tmp_path / "nowhere")
    assert str(e.value) == f"{tmp_path / 'nowhere'}: base model folder not found"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError) as e:
        base_config(tmp_path / "empty")
    assert str(e.value) == f"{tmp_path / 'empty'}: not a diffusers pipeline folder (no model_index.json)"
    # the classes it names are checked before anything imports them, the folder named
    write_base(tmp_path / "odd", {**WAN_INDEX, "transformer": ["evil_lib", "Payload"]})
    with pytest.raises(ModelError) as e:
        base_config(tmp_path / "odd")
    assert str(e.value).startswith(f"{tmp_path / 'odd'}: model_index.json: component 'transformer' is 'evil_lib'")


def test_base_config_refuses_a_model_index_past_the_json_limit(tmp_path):
    """A sparse file: its size is what counts, nothing is read."""
    base = write_base(tmp_path / "base")
    with open(base / "model_index.json", "r+b") as f:
        f.truncate(257 * 2**20)
    with pytest.raises(ModelError) as e:
        base_config(base)
    assert str(e.value) == f"{base / 'model_index.json'}: larger than 256 MiB, not a model_index.json"


def test_a_hub_id_reads_its_configs_from_the_hub(monkeypatch, tmp_path):
    """A hub id (the hub reachable): model_index.json through `DiffusionPipeline.load_config`, checked
    like a local one; the transformer's config.json downloaded as a file; a failure is a ModelError
    naming the id."""
    import huggingface_hub
    from diffusers import DiffusionPipeline

    asked = []

    def load_config(where, subfolder=None):
        asked.append(where)
        if where == "org/broken":
            raise OSError("404")
        return dict(WAN_INDEX)

    def download(repo, filename, subfolder=None, cache_dir=None):
        asked.append((repo, subfolder, filename))
        if repo == "org/broken":
            raise OSError("404")
        (tmp_path / "config.json").write_text(json.dumps({"patch_size": [1, 2, 2]}))
        return str(tmp_path / "config.json")

    monkeypatch.setattr(loading, "resolve_pretrained", lambda name, what, file: str(name))
    monkeypatch.setattr(DiffusionPipeline, "load_config", load_config)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    assert base_config("org/wan") == WAN_INDEX and detect_model("org/wan") == "wan"
    assert transformer_config("org/wan") == {"patch_size": [1, 2, 2]}
    assert asked == ["org/wan", "org/wan", ("org/wan", "transformer", "config.json")]
    with pytest.raises(ModelError) as e:
        base_config("org/broken")
    assert str(e.value) == "org/broken: cannot fetch the base model's model_index.json (404)"
    with pytest.raises(ModelError) as e:
        transformer_config("org/broken")
    assert str(e.value) == "org/broken: cannot fetch transformer/config.json (404)"
    monkeypatch.setattr(DiffusionPipeline, "load_config", lambda where, subfolder=None: {"_class_name": ["m", "C"]})
    with pytest.raises(ModelError, match="^org/x: model_index.json: _class_name .* asks for custom pipeline code"):
        base_config("org/x")


def test_a_missing_base_folder_is_named_the_base_model(tmp_path):
    for read in (base_config, transformer_config):
        with pytest.raises(ModelError) as e:
            read(tmp_path / "gone")
        assert str(e.value) == f"{tmp_path / 'gone'}: base model folder not found"


@pytest.mark.parametrize("name, family", [
    ("WanImageToVideoPipeline", "wan"), ("MagicMotionWanPipeline", "wan"),
    ("CogVideoXImageToVideoPipeline", "cogvideox"), ("MagicMotionCogVideoXPipeline", "cogvideox"),
])
def test_detect_model_by_the_pipeline_class(name, family, tmp_path):
    assert detect_model(tmp_path, {"_class_name": name}) == family
    assert detect_model(write_base(tmp_path / "b", {**WAN_INDEX, "_class_name": name})) == family


def test_detect_model_refuses_other_pipelines_naming_them(tmp_path):
    with pytest.raises(ModelError) as e:
        detect_model(tmp_path, {"_class_name": "StableDiffusionPipeline"})
    assert str(e.value) == (f"{tmp_path}: base pipeline StableDiffusionPipeline is neither a Wan nor a CogVideoX "
                            "image-to-video model")
    with pytest.raises(ModelError) as e:
        detect_model(tmp_path, {"_diffusers_version": "0.35.0"})
    assert str(e.value) == f"{tmp_path}: base pipeline ? is neither a Wan nor a CogVideoX image-to-video model"


def test_transformer_config_of_a_local_base(tmp_path):
    base = write_base(tmp_path / "base", transformer={"num_layers": 2, "patch_size": [1, 2, 2]})
    assert transformer_config(base) == {"num_layers": 2, "patch_size": [1, 2, 2]}
    bare = write_base(tmp_path / "bare")
    with pytest.raises(ModelError) as e:
        transformer_config(bare)
    assert str(e.value) == f"{bare / 'transformer' / 'config.json'}: base transformer config not found"
