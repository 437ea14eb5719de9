"""load_pipeline: bases and ControlNets from disk, the shipped tiny model lookup, mismatches, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pipelines_helpers import RUN, make_image, make_trajectory

from magicmotion.errors import ModelError, PipelineError
from magicmotion.pipelines import MagicMotionCogVideoXPipeline, MagicMotionWanPipeline, load_pipeline
from magicmotion.pipelines import loading


def frames(pipe, seed: int = 0) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(image=make_image(), prompt="a square", trajectory=make_trajectory(),
                generator=torch.Generator().manual_seed(seed), **RUN).frames


def test_loads_wan_and_cogvideox_by_their_model_index(models_dir):
    wan = load_pipeline(models_dir / "wan", models_dir / "wan_cn", device="cpu")
    cog = load_pipeline(models_dir / "cog", models_dir / "cog_cn")
    assert isinstance(wan, MagicMotionWanPipeline) and isinstance(cog, MagicMotionCogVideoXPipeline)
    assert wan.transformer.dtype == torch.float32 and wan.controlnet.dtype == torch.float32  # fp32 on CPU
    assert str(wan._execution_device) == "cpu"
    with pytest.raises(ModelError, match="is a wan model, not cogvideox"):
        load_pipeline(models_dir / "wan", models_dir / "wan_cn", model="cogvideox")


def test_bf16_keeps_the_wan_vae_in_fp32(models_dir):
    pipe = load_pipeline(models_dir / "wan", models_dir / "wan_cn", dtype="bf16")
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.controlnet.dtype == torch.bfloat16
    assert pipe.text_encoder.dtype == torch.bfloat16 and pipe.vae.dtype == torch.float32


@pytest.mark.parametrize(
    "base, controlnet, error, message",
    [
        ("wan", "wan_other_cn", ModelError, "does not fit this base: inner dim 32 vs base 16"),
        ("wan", "cog_cn", ModelError, "a cogvideox ControlNet cannot drive a wan base"),
        ("cog", "wan_cn", ModelError, "a wan ControlNet cannot drive a cogvideox base"),
        ("wan", None, ModelError, "no ControlNet given"),
        ("missing", "wan_cn", ModelError, "base model folder not found"),
        ("wan", "missing", ModelError, "ControlNet folder not found"),
        ("wan/transformer", "wan_cn", ModelError, "no model_index.json"),
        ("wan", "wan/vae", ModelError, "not a Trajectory ControlNet"),
    ],
)
def test_mismatched_or_missing_models_are_model_errors(models_dir, base, controlnet, error, message):
    with pytest.raises(error, match=message):
        load_pipeline(models_dir / base, None if controlnet is None else models_dir / controlnet)


def test_bad_options(models_dir):
    for kw, message in [(dict(offload="disk"), "unknown offload"), (dict(dtype="int8"), "unknown dtype"),
                        (dict(kind="circle"), "unknown kind"), (dict(model="sd"), "unknown model")]:
        with pytest.raises(PipelineError, match=message):
            load_pipeline(models_dir / "wan", models_dir / "wan_cn", **kw)


def test_training_output_folder_and_released_pt_load(models_dir, tmp_path):
    from magicmotion.models import CogVideoXTrajectoryControlNet

    # a training run's final/ holds controlnet/ (and segment_head/)
    trained = CogVideoXTrajectoryControlNet.from_pretrained(models_dir / "cog_cn_trained")
    trained.save_pretrained(tmp_path / "final" / "controlnet")
    from_final = load_pipeline(models_dir / "cog", tmp_path / "final")
    # the released layout: {"state_dict": ...} with 1x1-conv projectors
    sd = {k: (v.reshape(*v.shape, 1, 1) if k.startswith("out_projectors.") and k.endswith(".weight") else v)
          for k, v in trained.state_dict().items()}
    torch.save({"state_dict": sd}, tmp_path / "box.pt")
    from_pt = load_pipeline(models_dir / "cog", tmp_path / "box.pt")
    for key, value in trained.state_dict().items():
        assert torch.equal(from_final.controlnet.state_dict()[key], value)
        assert torch.equal(from_pt.controlnet.state_dict()[key], value), key
    with pytest.raises(ModelError, match="released .pt checkpoints are CogVideoX"):
        load_pipeline(models_dir / "wan", tmp_path / "box.pt")


def test_no_base_means_the_shipped_tiny_model(models_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "TINY_MODEL_DIR", tmp_path / "tiny")
    with pytest.raises(ModelError, match="shipped tiny model is not there"):
        load_pipeline(kind="box")
    (tmp_path / "tiny" / "stage2").mkdir(parents=True)
    (tmp_path / "tiny" / "base").symlink_to(models_dir / "wan", target_is_directory=True)
    (tmp_path / "tiny" / "stage2" / "controlnet").symlink_to(models_dir / "wan_cn_trained", target_is_directory=True)
    pipe = load_pipeline(kind="box")
    assert isinstance(pipe, MagicMotionWanPipeline)
    assert pipe.controlnet.out_projectors[0].weight.abs().sum() > 0  # stage 2's (trained) ControlNet
    with pytest.raises(ModelError, match="stage1"):  # mask -> stage 1, not there
        load_pipeline(kind="mask")


def test_model_offload_gives_the_same_video(models_dir):
    plain = frames(load_pipeline(models_dir / "wan", models_dir / "wan_cn_trained"))
    offloaded = load_pipeline(models_dir / "wan", models_dir / "wan_cn_trained", offload="model", device="cpu")
    assert len(offloaded._all_hooks) == 4  # text encoder -> transformer -> vae, and the ControlNet alone
    np.testing.assert_allclose(frames(offloaded), plain, atol=1e-6)  # the same ops, moved: measured 0


# ------------------------------------------------------------------ issue 34: what the loader's checks say


def test_a_model_object_that_is_no_controlnet_is_a_model_error(models_dir):
    """A module passed as the ControlNet: the base's own transformer (it has a dtype) or a plain module
    (none: that was an AttributeError) -> one ModelError naming its class and the base's family."""
    from magicmotion.pipelines.loading import transformer_config

    from diffusers import WanTransformer3DModel

    transformer = WanTransformer3DModel.from_config(transformer_config(models_dir / "wan"))
    for module, name in ((transformer, "WanTransformer3DModel"), (torch.nn.Linear(2, 2), "Linear")):
        with pytest.raises(ModelError, match=rf"^{name} is not a Trajectory ControlNet for a wan base$"):
            load_pipeline(models_dir / "wan", module)


def test_transformer_config_errors_name_the_file(models_dir, tmp_path):
    from magicmotion.pipelines.loading import transformer_config

    assert transformer_config(models_dir / "wan")["num_layers"] == 2
    base = tmp_path / "base"
    (base / "transformer").mkdir(parents=True)
    (base / "model_index.json").write_text("{}")
    config = base / "transformer" / "config.json"
    with pytest.raises(ModelError, match=rf"^{config}: base transformer config not found$"):
        transformer_config(base)
    for text, message in (("{", "malformed JSON"), ("[1, 2]", "a transformer config must be a JSON object")):
        config.write_text(text)
        with pytest.raises(ModelError, match=rf"^{config}: {message}"):
            transformer_config(base)
    with open(config, "wb") as f:  # a sparse file: its size says too large, no disk is used
        f.truncate(257 * 2**20)
    with pytest.raises(ModelError, match=rf"^{config}: larger than 256 MiB, not a transformer config$"):
        transformer_config(base)
    with pytest.raises(ModelError, match=rf"^{tmp_path / 'missing'}: base model folder not found$"):
        transformer_config(tmp_path / "missing")


def test_the_default_dtype_follows_the_device():
    from magicmotion.pipelines.loading import resolve_dtype

    for device in ("cuda", "cuda:1", torch.device("cuda", 0)):
        assert resolve_dtype(None, device) == torch.bfloat16
    for device in ("cpu", "mps", None):
        assert resolve_dtype(None, device) == torch.float32
    assert resolve_dtype("FP16", "cpu") == torch.float16 and resolve_dtype(torch.float64, "cuda") == torch.float64


def test_the_family_comes_from_the_pipeline_class(models_dir, tmp_path):
    """diffusers' own pipeline classes and the ones `save_pretrained` of ours writes; anything else is
    refused naming the base and the class (or "?" when the index names none)."""
    from magicmotion.pipelines.loading import detect_model

    for name, family in (("WanImageToVideoPipeline", "wan"), ("MagicMotionWanPipeline", "wan"),
                         ("CogVideoXImageToVideoPipeline", "cogvideox"),
                         ("MagicMotionCogVideoXPipeline", "cogvideox")):
        assert detect_model("b", {"_class_name": name}) == family
    with pytest.raises(ModelError, match=r"^b: base pipeline \? is neither a Wan nor a CogVideoX image-to-video model$"):
        detect_model("b", {"_diffusers_version": "0.42.1"})
    # a base folder of another pipeline: refused when it loads, naming the folder
    base = tmp_path / "sd"
    base.mkdir()
    (base / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    with pytest.raises(ModelError, match=rf"^{base}: base pipeline StableDiffusionPipeline is neither a Wan"):
        load_pipeline(base, models_dir / "wan_cn")
    with pytest.raises(ModelError, match=rf"^{tmp_path / 'missing'}: base model folder not found$"):
        loading.base_config(tmp_path / "missing")


def test_tiny_model_paths_by_kind_and_their_messages(tmp_path, monkeypatch):
    tiny = loading.TINY_MODEL_DIR
    assert loading.tiny_model_paths() == (tiny / "base", tiny / "stage2" / "controlnet")  # box
    for kind, stage in (("mask", "stage1"), ("box", "stage2"), ("sparse_box", "stage3")):
        assert loading.tiny_model_paths(kind) == (tiny / "base", tiny / stage / "controlnet")
    with pytest.raises(PipelineError, match=r"^unknown kind 'circle': expected one of mask, box, sparse_box$"):
        loading.tiny_model_paths("circle")
    with pytest.raises(PipelineError, match=r"^unknown kind 'circle': expected one of mask, box, sparse_box$"):
        load_pipeline(kind="circle")
    monkeypatch.setattr(loading, "TINY_MODEL_DIR", tmp_path)
    (tmp_path / "base").mkdir()
    missing = tmp_path / "stage1" / "controlnet"
    with pytest.raises(ModelError) as error:
        loading.tiny_model_paths("mask")
    assert str(error.value) == (f"{missing}: the shipped tiny model is not there (not trained yet?); pass --base and "
                                "--controlnet (Python: load_pipeline(base=..., controlnet=...))")


def test_options_and_device_are_checked_before_any_model_is_read(tmp_path):
    for kw, message in ((dict(cache="fast"), "unknown cache 'fast'"), (dict(offload="disk"), "unknown offload"),
                        (dict(weights_dtype="int4"), "unknown weights_dtype"),
                        (dict(device="meta"), "'meta' holds no values"), (dict(device="tpu:x"), "unknown device")):
        with pytest.raises(PipelineError, match=message):
            load_pipeline(tmp_path / "missing", tmp_path / "missing_cn", **kw)


def test_vae_tiling_and_slicing_only_when_asked(models_dir):
    for kw in ({}, dict(vae_tiling=True), dict(vae_slicing=True), dict(vae_tiling=True, vae_slicing=True)):
        vae = load_pipeline(models_dir / "wan", models_dir / "wan_cn", **kw).vae
        assert (vae.use_tiling, vae.use_slicing) == (kw.get("vae_tiling", False), kw.get("vae_slicing", False))


def test_options_reach_the_loaded_pipeline(models_dir):
    """fp8 weights (layerwise casting) and a cache on the base transformer, as asked."""
    plain = load_pipeline(models_dir / "wan", models_dir / "wan_cn")
    assert plain.transformer.blocks[0].attn1.to_q.weight.dtype == torch.float32
    assert not plain.transformer.is_cache_enabled
    pipe = load_pipeline(models_dir / "wan", models_dir / "wan_cn", weights_dtype="fp8", cache="first-block")
    for model in (pipe.transformer, pipe.controlnet):
        assert model.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert pipe.transformer.is_cache_enabled


def test_on_cuda_bf16_is_the_default_and_the_pipeline_goes_to_the_device_named(models_dir, monkeypatch):
    """No GPU is needed: CUDA is said to be there, and the last step (moving the pipeline, the memory
    options) is recorded instead of made."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    seen = {}

    def enable(pipe, device=None, **options):
        seen.update(options, device=device)
        return pipe

    monkeypatch.setattr(loading, "enable_memory_options", enable)
    pipe = load_pipeline(models_dir / "wan", models_dir / "wan_cn", device="cuda:1")
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.controlnet.dtype == torch.bfloat16
    assert pipe.vae.dtype == torch.float32  # Wan's VAE stays in fp32
    assert seen == dict(device="cuda:1", offload="none", weights_dtype="default", cache="none", vae_tiling=False,
                        vae_slicing=False)
    load_pipeline(models_dir / "wan", models_dir / "wan_cn", device="cuda", offload="model", weights_dtype="fp8",
                  cache="taylorseer", vae_tiling=True, vae_slicing=True)
    assert seen == dict(device="cuda", offload="model", weights_dtype="fp8", cache="taylorseer", vae_tiling=True,
                        vae_slicing=True)


def test_a_controlnet_object_is_used_in_the_pipelines_dtype(models_dir):
    from magicmotion.models import WanTrajectoryControlNet

    cn = WanTrajectoryControlNet.from_pretrained(models_dir / "wan_cn_trained")
    expected = {k: v.to(torch.bfloat16) for k, v in cn.state_dict().items()}
    pipe = load_pipeline(models_dir / "wan", cn, dtype="bf16")
    assert pipe.controlnet.dtype == torch.bfloat16
    for key, value in pipe.controlnet.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert load_pipeline(models_dir / "wan", cn, dtype="bf16").controlnet is cn  # already bf16: itself


def test_a_base_whose_weights_cannot_load_is_named(models_dir, tmp_path):
    import shutil

    base = tmp_path / "wan"
    shutil.copytree(models_dir / "wan", base)
    weights = next((base / "transformer").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError, match=rf"^{base}: cannot load the base model \(.+\)$"):
        load_pipeline(base, models_dir / "wan_cn")


def test_base_config_names_the_folder_and_the_file(models_dir, tmp_path):
    import os

    index = models_dir / "wan" / "model_index.json"
    with pytest.raises(ModelError, match=rf"^{index}: base model folder not found$"):  # a file, not a folder
        loading.base_config(index)
    base = tmp_path / "base"
    base.mkdir()
    index = base / "model_index.json"
    index.write_text('{"_class_name": "WanImageToVideoPipeline", "vae": ["mylib", "MyVAE"]}')
    with pytest.raises(ModelError, match=rf"^{base}: model_index.json: component 'vae' is 'mylib'.'MyVAE'"):
        loading.base_config(base)
    index.write_text('{"_class_name": ')
    with pytest.raises(ModelError, match=rf"^{index}: malformed JSON"):
        loading.base_config(base)
    with open(index, "wb") as f:  # a sparse file: its size says too large, no disk is used
        f.truncate(257 * 2**20)
    assert os.path.getsize(index) > 256 * 2**20
    with pytest.raises(ModelError, match=rf"^{index}: larger than 256 MiB, not a model_index.json$"):
        loading.base_config(base)


def test_the_device_default_and_its_checks(monkeypatch):
    from magicmotion.pipelines.loading import resolve_device

    for available in (True, False):  # what this machine has does not matter: CUDA is said to be there or not
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        assert resolve_device(None) == ("cuda" if available else "cpu")
        assert resolve_device("cpu") == "cpu" and resolve_device(torch.device("cpu")) == "cpu"
        with pytest.raises(PipelineError, match=r"^unknown device 'tpu:x' \(cpu, cuda, cuda:N\)$"):
            resolve_device("tpu:x")
        with pytest.raises(PipelineError, match=r"^device 'meta' holds no values \(cpu, cuda, cuda:N\)$"):
            resolve_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PipelineError, match=r"^device 'cuda:1' asked for but CUDA is not available$"):
        resolve_device("cuda:1")


def test_a_second_controlnet_on_a_cogvideox_base_is_refused(models_dir):
    """controlnet_2 is for a two-expert Wan2.2 A14B base; a CogVideoX pipeline dropped it with a warning
    (and `generate --controlnet-2` recorded a ControlNet it never used)."""
    from magicmotion.models import CogVideoXTrajectoryControlNet

    for second in (models_dir / "cog_cn", CogVideoXTrajectoryControlNet.from_pretrained(models_dir / "cog_cn")):
        with pytest.raises(ModelError, match=rf"^{models_dir / 'cog'}: controlnet_2 is the low-noise expert's "
                                             r"ControlNet of a two-expert Wan2.2 A14B base; this cogvideox base "
                                             r"has one transformer$"):
            load_pipeline(models_dir / "cog", models_dir / "cog_cn", controlnet_2=second)


def test_loading_warns_of_nothing(models_dir, capfd):
    """A plain load says nothing on stderr (diffusers warns of every keyword a pipeline does not take)."""
    for base, controlnet in (("cog", "cog_cn"), ("wan", "wan_cn")):
        load_pipeline(models_dir / base, models_dir / controlnet).set_progress_bar_config(disable=True)
        err = capfd.readouterr().err
        assert "not expected" not in err and "ignored" not in err, err


def test_bf16_loads_a_wan_vae_and_image_encoder_stored_in_bf16_in_fp32(tmp_path):
    """Wan recommends its VAE and CLIP image encoder in fp32: a base whose files hold them in bf16 (as
    some copies on the hub do) still gets them in fp32 when the pipeline runs in bf16."""
    from diffusers import WanImageToVideoPipeline
    from safetensors import safe_open
    from test_pipeline_wan_clip import clip_components

    from magicmotion.models import WanTrajectoryControlNet

    parts = clip_components()
    parts["vae"].to(torch.bfloat16)
    parts["image_encoder"].to(torch.bfloat16)
    WanImageToVideoPipeline(**parts).save_pretrained(tmp_path / "wan14")
    for part in ("vae", "image_encoder"):
        with safe_open(next((tmp_path / "wan14" / part).glob("*.safetensors")), "pt") as f:
            assert f.get_tensor(next(iter(f.keys()))).dtype == torch.bfloat16  # stored in bf16
    WanTrajectoryControlNet.from_transformer(parts["transformer"]).save_pretrained(tmp_path / "cn")
    pipe = load_pipeline(tmp_path / "wan14", tmp_path / "cn", dtype="bf16")
    assert pipe.transformer.dtype == pipe.controlnet.dtype == pipe.text_encoder.dtype == torch.bfloat16
    assert pipe.vae.dtype == pipe.image_encoder.dtype == torch.float32


# ---------------------------------------------------------------------------------------- load_controlnet


def released_pt(models_dir, path):
    """The tiny CogVideoX ControlNet saved as the authors' release does ({"state_dict": ...}, 1x1 convs)."""
    from magicmotion.models import CogVideoXTrajectoryControlNet

    cn = CogVideoXTrajectoryControlNet.from_pretrained(models_dir / "cog_cn_trained")
    sd = {k: (v.reshape(*v.shape, 1, 1) if k.startswith("out_projectors.") and k.endswith(".weight") else v)
          for k, v in cn.state_dict().items()}
    torch.save({"state_dict": sd}, path)
    return cn


def same_weights(a, b) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v.to(sb[k].dtype), sb[k]) for k, v in a.state_dict().items())


def test_load_controlnet_in_the_dtype_asked(models_dir, tmp_path):
    from magicmotion.pipelines.loading import load_controlnet

    folder = load_controlnet(models_dir / "wan_cn_trained")
    assert folder.dtype == torch.float32 and not folder.training
    for dtype, expected in ((torch.bfloat16, torch.bfloat16), ({"default": torch.bfloat16}, torch.bfloat16),
                            ({"default": torch.bfloat16, "controlnet": torch.float16}, torch.float16)):
        cn = load_controlnet(models_dir / "wan_cn_trained", model="wan", dtype=dtype)
        assert cn.dtype == expected and same_weights(folder, cn), dtype
    trained = released_pt(models_dir, tmp_path / "box.pt")
    plain = load_controlnet(tmp_path / "box.pt", base=models_dir / "cog")
    assert plain.dtype == torch.float32 and not plain.training and same_weights(trained, plain)
    half = load_controlnet(tmp_path / "box.pt", model="cogvideox", dtype=torch.bfloat16, base=models_dir / "cog")
    assert half.dtype == torch.bfloat16 and not half.training and same_weights(half, trained.to(torch.bfloat16))


def test_load_controlnet_messages_name_the_folder_or_file(models_dir, tmp_path):
    import re
    import shutil

    from magicmotion.pipelines.loading import load_controlnet

    def refused(path, message, named=None, **kw):
        with pytest.raises(ModelError, match="^" + re.escape(f"{named or path}: {message}")):
            load_controlnet(path, **kw)

    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, "not a ControlNet folder (no config.json)")
    folder = tmp_path / "cn"
    shutil.copytree(models_dir / "wan_cn", folder)
    config = folder / "config.json"
    good = config.read_text()
    config.write_text("{oops")
    refused(folder, "unreadable (", named=config)
    config.write_text("{}")
    refused(folder, "this model is not a Trajectory ControlNet")
    refused(models_dir / "wan" / "vae", "AutoencoderKLWan is not a Trajectory ControlNet")
    refused(models_dir / "wan_cn", "a wan ControlNet cannot drive a cogvideox base", model="cogvideox")
    config.write_text(good)
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:64])
    refused(folder, "cannot load the ControlNet (")
    # non-finite weights: named, not a black video
    from magicmotion.models import WanTrajectoryControlNet

    broken = WanTrajectoryControlNet.from_pretrained(models_dir / "wan_cn")
    with torch.no_grad():
        broken.out_projectors[0].weight[0, 0] = float("nan")
    broken.save_pretrained(tmp_path / "nan")
    refused(tmp_path / "nan", "tensor out_projectors.0.weight holds 1 NaN or infinite values")
    (tmp_path / "notes.txt").write_text("x")
    refused(tmp_path / "notes.txt", "expected a ControlNet folder or a released .pt checkpoint")
    released_pt(models_dir, tmp_path / "box.pt")
    refused(tmp_path / "box.pt", "released .pt checkpoints are CogVideoX ControlNets; the base is Wan", model="wan")
    refused(tmp_path / "missing", "ControlNet folder not found")


def test_load_controlnet_by_hub_id(models_dir, tmp_path, monkeypatch):
    """A ControlNet named by hub id: loaded when the hub answers (the base's family must be said), from
    its cached snapshot when the hub is out of reach. The hub's HTTP calls are switched off here: the
    files come from our cache as a download would."""
    import shutil

    import huggingface_hub.constants

    from magicmotion import hub
    from magicmotion.models import WanTrajectoryControlNet
    from magicmotion.pipelines.loading import load_controlnet

    for name in ("HF_HUB_CACHE", "TRANSFORMERS_OFFLINE", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cache = tmp_path / "hf" / "hub"
    repo = cache / "models--some-org--cn"
    shutil.copytree(models_dir / "wan_cn_trained", repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    expected = load_controlnet(models_dir / "wan_cn_trained")

    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no request leaves this machine
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    cn = load_controlnet("some-org/cn", model="wan", dtype=torch.bfloat16)
    assert cn.dtype == torch.bfloat16 and not cn.training and same_weights(cn, expected.to(torch.bfloat16))
    with pytest.raises(ModelError, match=r"^some-org/cn: say which base \(wan or cogvideox\) a hub ControlNet is for$"):
        load_controlnet("some-org/cn")
    with pytest.raises(ModelError, match=r"^some-org/other: cannot fetch the ControlNet \(.+\)$"):
        load_controlnet("some-org/other", model="wan")
    broken = WanTrajectoryControlNet.from_pretrained(models_dir / "wan_cn")
    with torch.no_grad():
        broken.out_projectors[0].weight[0, 0] = float("nan")
    broken.save_pretrained(cache / "models--some-org--nan" / "snapshots" / ("0" * 40))
    (cache / "models--some-org--nan" / "refs").mkdir()
    (cache / "models--some-org--nan" / "refs" / "main").write_text("0" * 40)
    with pytest.raises(ModelError, match=r"^some-org/nan: tensor out_projectors.0.weight holds 1 NaN"):
        load_controlnet("some-org/nan", model="wan")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub out of reach: the cached snapshot, checked as a folder
    cn = load_controlnet("some-org/cn", model="wan", dtype=torch.bfloat16)
    assert cn.dtype == torch.bfloat16 and same_weights(cn, expected.to(torch.bfloat16))
    with pytest.raises(ModelError, match="a wan ControlNet cannot drive a cogvideox base"):
        load_controlnet("some-org/cn", model="cogvideox")


def test_load_controlnet_folders_and_release_files(models_dir, tmp_path, caplog):
    """A folder holding controlnet/ (a training run's final/) and a ControlNet folder (itself, whatever
    it holds); the release's file names (.pt, .pth, .bin), without a base (CogVideoX-5B-I2V's config
    assumed: the tiny weights do not fit its 48 heads), and what the import says."""
    import logging
    import shutil

    from magicmotion.pipelines.loading import load_controlnet

    trained = load_controlnet(models_dir / "cog_cn_trained")
    shutil.copytree(models_dir / "cog_cn_trained", tmp_path / "final" / "controlnet")
    assert same_weights(load_controlnet(tmp_path / "final", model="cogvideox"), trained)
    shutil.copytree(models_dir / "cog_cn_trained", tmp_path / "cn")
    shutil.copytree(models_dir / "cog_cn", tmp_path / "cn" / "controlnet")  # another one inside: not used
    assert same_weights(load_controlnet(tmp_path / "cn"), trained)
    for name in ("box.pt", "box.pth", "box.bin", "BOX.PT"):
        released_pt(models_dir, tmp_path / name)
        with caplog.at_level(logging.INFO, logger="magicmotion.pipelines.loading"):
            caplog.clear()
            assert same_weights(load_controlnet(tmp_path / name, base=models_dir / "cog"), trained), name
        assert [r.getMessage() for r in caplog.records] == [f"{tmp_path / name}: 2 control blocks of width 32"]
    with pytest.raises(ModelError, match=r"box.pt: width 32 is not divisible by the base config's 48 heads"):
        load_controlnet(tmp_path / "box.pt")
    # a release file with broken weights is named
    sd = torch.load(tmp_path / "box.pt", weights_only=True)
    sd["state_dict"]["out_projectors.0.bias"][0] = float("inf")
    torch.save(sd, tmp_path / "inf.pt")
    with pytest.raises(ModelError, match=rf"^{tmp_path / 'inf.pt'}: tensor out_projectors.0.bias holds 1 NaN"):
        load_controlnet(tmp_path / "inf.pt", base=models_dir / "cog")
