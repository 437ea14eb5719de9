"""Loading a MagicMotion pipeline: a base model (a diffusers folder or hub id) + a Trajectory ControlNet
(our safetensors folder, or a released `.pt`), with diffusers' memory options (memory.py).

`base=None` means the tiny model shipped with the package (`TINY_MODEL_DIR`): `base/` plus the
ControlNet of the stage trained for the trajectory kind (mask -> stage1, box -> stage2,
sparse_box -> stage3).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import magicmotion

from ..errors import ModelError, PipelineError
from ..hub import is_hub_id, resolve_pretrained
from ..trajectory import KINDS
from .memory import (CACHES, LORA_EXPERTS, OFFLOAD, WEIGHTS_DTYPES, cache_config,  # noqa: F401  (loading's API)
                     check_memory_options, enable_memory_options, load_lora)
from .settings import resolve_settings

logger = logging.getLogger(__name__)

TINY_MODEL_DIR = Path(magicmotion.__file__).parent / "assets" / "tiny"
KIND_STAGE = {"mask": "stage1", "box": "stage2", "sparse_box": "stage3"}
# Classifier-free guidance for the shipped tiny model. Its text encoder is random and frozen, so the
# conditional and unconditional predictions differ by little more than noise, and the paper's 6
# amplifies that noise into coloured blotches over the background; 1 (no guidance) keeps the frame.
# What generate uses is the model's own assets/tiny/base/magicmotion.json; these name its value and
# the paper's for `make tiny-model`'s bench and the app's fallback fields.
TINY_GUIDANCE = 1.0
DEFAULT_GUIDANCE = 6.0  # the paper's, for real models
MODELS = ("wan", "cogvideox")
DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "fp32": "float32", "float32": "float32"}


def resolve_dtype(dtype, device: str):
    """"bf16" / "fp16" / "fp32" / a torch dtype / None (bf16 on CUDA, fp32 elsewhere) -> torch.dtype."""
    import torch

    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = DTYPES.get(str(dtype).lower())
    if name is None:
        raise PipelineError(f"unknown dtype {dtype!r}: expected one of bf16, fp16, fp32")
    return getattr(torch, name)


def resolve_device(device) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"device {device!r} asked for but CUDA is not available")
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise PipelineError(f"unknown device {device!r} (cpu, cuda, cuda:N)") from None
    if kind == "meta":  # a valid torch device that holds no values: nothing can run on it
        raise PipelineError(f"device {device!r} holds no values (cpu, cuda, cuda:N)")
    return device


# ---------------------------------------------------------------------------------------- the base


def base_config(base: str | os.PathLike) -> dict[str, Any]:
    """The base's `model_index.json` (local folder, the hub, or the hub's local cache when offline)."""
    from ..limits import read_json
    from ..models.allowed import check_model_index

    where = resolve_pretrained(base, "base model", file="model_index.json")
    if isinstance(where, str):  # a hub id, the hub reachable
        from diffusers import DiffusionPipeline

        try:
            return check_model_index(dict(DiffusionPipeline.load_config(where)), base)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001 - any hub / network failure is a model error here
            raise ModelError(f"{base}: cannot fetch the base model's model_index.json ({e})") from None
    path = where
    if not path.is_dir():
        raise ModelError(f"{path}: base model folder not found")
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelError(f"{path}: not a diffusers pipeline folder (no model_index.json)")
    # the libraries and classes it names are checked before anything is imported from them
    return check_model_index(read_json(index, ModelError, "model_index.json"), path)


def detect_model(base: str | os.PathLike, config: dict | None = None) -> str:
    """"wan" or "cogvideox" from the base's pipeline class."""
    config = config or base_config(base)
    name = str(config.get("_class_name", ""))
    if name.startswith("Wan") or name.startswith("MagicMotionWan"):
        return "wan"
    if name.startswith("CogVideoX") or name.startswith("MagicMotionCogVideoX"):
        return "cogvideox"
    raise ModelError(f"{base}: base pipeline {name or '?'} is neither a Wan nor a CogVideoX image-to-video model")


def transformer_config(base: str | os.PathLike) -> dict[str, Any]:
    """The base transformer's config.json."""
    from ..limits import read_json

    where = resolve_pretrained(base, "base model", file="model_index.json")
    if isinstance(where, str):
        # the file itself: DiffusionPipeline.load_config(subfolder="transformer") would look for a
        # model_index.json in transformer/, which no base has
        from huggingface_hub import hf_hub_download

        from ..hub import cache_dir

        try:
            path = Path(hf_hub_download(where, "config.json", subfolder="transformer", cache_dir=cache_dir()))
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"{base}: cannot fetch transformer/config.json ({e})") from None
    else:
        path = where / "transformer" / "config.json"
        if not path.is_file():
            raise ModelError(f"{path}: base transformer config not found")
    config = read_json(path, ModelError, "transformer config")
    if not isinstance(config, dict):
        raise ModelError(f"{path}: a transformer config must be a JSON object")
    return config


def empty_transformer(model: str, config: dict[str, Any]):
    """The base transformer built from its config on the meta device (no memory), for checks."""
    from accelerate import init_empty_weights
    from diffusers import CogVideoXTransformer3DModel, WanTransformer3DModel

    cls = WanTransformer3DModel if model == "wan" else CogVideoXTransformer3DModel
    with init_empty_weights():
        return cls.from_config(config)


# ---------------------------------------------------------------------------------------- ControlNet


def load_controlnet(path: str | os.PathLike, model: str | None = None, dtype=None,
                    base: str | os.PathLike | None = None):
    """A Trajectory ControlNet from a folder saved with `save_pretrained` (or a folder holding one in
    `controlnet/`, such as a training output's `final/`), a released `.pt`, or a hub id.

    Args:
        model: "wan" or "cogvideox" when known (a ControlNet of the other kind is a ModelError).
        dtype: torch dtype to load in (default as saved).
        base: the base (folder or id) whose transformer config fills in what a `.pt` does not say.
    """
    from ..limits import check_finite_weights
    from ..models import CogVideoXTrajectoryControlNet, WanTrajectoryControlNet

    classes = {"WanTrajectoryControlNet": ("wan", WanTrajectoryControlNet),
               "CogVideoXTrajectoryControlNet": ("cogvideox", CogVideoXTrajectoryControlNet)}
    if isinstance(dtype, dict):
        dtype = dtype.get("controlnet", dtype.get("default"))
    p = Path(path)
    if p.is_dir() and not (p / "config.json").is_file() and (p / "controlnet" / "config.json").is_file():
        p = p / "controlnet"
    if p.is_dir():
        config = p / "config.json"
        if not config.is_file():
            raise ModelError(f"{p}: not a ControlNet folder (no config.json)")
        try:
            name = json.loads(config.read_text()).get("_class_name", "")
        except (OSError, json.JSONDecodeError) as e:
            raise ModelError(f"{config}: unreadable ({e})") from None
        if name not in classes:
            raise ModelError(f"{p}: {name or 'this model'} is not a Trajectory ControlNet")
        kind, cls = classes[name]
        if model is not None and kind != model:
            raise ModelError(f"{p}: a {kind} ControlNet cannot drive a {model} base")
        try:
            loaded = cls.from_pretrained(p, dtype=dtype).eval()
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelError(f"{p}: cannot load the ControlNet ({e})") from None
        return check_finite_weights(loaded, p, ModelError)
    if p.is_file():
        if p.suffix.lower() not in (".pt", ".pth", ".bin"):
            raise ModelError(f"{p}: expected a ControlNet folder or a released .pt checkpoint")
        if model == "wan":
            raise ModelError(f"{p}: released .pt checkpoints are CogVideoX ControlNets; the base is Wan")
        from ..models import load_official_checkpoint

        cfg = transformer_config(base) if base is not None else None
        controlnet, _, report = load_official_checkpoint(p, base_config=cfg)
        logger.info("%s", report)
        check_finite_weights(controlnet, p, ModelError)
        return (controlnet.to(dtype=dtype) if dtype is not None and controlnet.dtype != dtype else controlnet).eval()
    where = resolve_pretrained(path, "ControlNet")  # a missing path, or a hub id out of reach, fails here
    if isinstance(where, Path):  # the hub id's cached snapshot (the hub out of reach)
        return load_controlnet(where, model=model, dtype=dtype, base=base)
    if model is None:
        raise ModelError(f"{path}: say which base (wan or cogvideox) a hub ControlNet is for")
    cls = dict(classes.values())[model]
    try:
        loaded = cls.from_pretrained(where, dtype=dtype).eval()
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{path}: cannot fetch the ControlNet ({e})") from None
    return check_finite_weights(loaded, path, ModelError)


def tiny_model_paths(kind: str | None = None) -> tuple[Path, Path]:
    """(base folder, ControlNet folder) of the shipped tiny model for `kind` (default box)."""
    kind = kind or "box"
    if kind not in KINDS:
        raise PipelineError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    base = TINY_MODEL_DIR / "base"
    controlnet = TINY_MODEL_DIR / KIND_STAGE[kind] / "controlnet"
    for p in (base, controlnet):
        if not p.is_dir():
            raise ModelError(
                f"{p}: the shipped tiny model is not there (not trained yet?); pass --base and --controlnet "
                "(Python: load_pipeline(base=..., controlnet=...))"
            )
    return base, controlnet


# ---------------------------------------------------------------------------------------- pipeline


def load_pipeline(
    base: str | os.PathLike | None = None,
    controlnet=None,
    kind: str | None = None,
    model: str = "auto",
    device: str | None = None,
    dtype=None,
    offload: str = "none",
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    weights_dtype: str = "default",
    cache: str = "none",
    lora: str | os.PathLike | None = None,
    controlnet_2=None,
    lora_expert: str | None = None,
):
    """A ready MagicMotion pipeline (Wan or CogVideoX) on `device`.

    Args:
        base: a local diffusers pipeline folder or a hub id; None: the shipped tiny model.
        controlnet: a ControlNet folder (saved with `save_pretrained`, or holding `controlnet/`),
            a released `.pt`, a hub id, or a model instance. With `base=None` it defaults to the tiny
            model's stage for `kind`; with a saved MagicMotion pipeline folder, to its `controlnet/`;
            with a plain base it is required. For a two-expert Wan2.2 A14B base: the high-noise
            expert's ControlNet, or one folder holding both (`controlnet/` and `controlnet_2/`).
        controlnet_2: Wan2.2 A14B: the low-noise expert's ControlNet (as `controlnet`).
        kind: "mask", "box" or "sparse_box"; picks the tiny model's stage (mask -> stage1,
            box -> stage2, sparse_box -> stage3).
        model: "auto" (from the base's model_index.json), "wan" or "cogvideox".
        device: default "cuda" when available, else "cpu".
        dtype: "bf16" / "fp16" / "fp32" or a torch dtype; default bf16 on CUDA, fp32 on CPU. A Wan VAE
            (and CLIP image encoder) stays in fp32, as Wan recommends.
        offload: "none" (everything on `device`), "model" (diffusers' model CPU offload: one component
            on the GPU at a time), "group" (diffusers' group offload: one block of each model on the
            GPU at a time) or "sequential" (layer by layer; least memory, slowest).
        vae_tiling, vae_slicing: decode in tiles / one video at a time (less memory).
        weights_dtype, cache: see `enable_memory_options`.
        lora: a LoRA for the base (diffusers' `load_lora_weights`: a folder, file or hub id); its scale
            is the call's `attention_kwargs={"scale": s}` (generate's `lora_scale`). On a two-expert
            Wan2.2 A14B base: see `load_lora` (`lora_expert`: "both", "high" or "low").
    Raises:
        ModelError: a missing or unreadable model, or a ControlNet built for another base.
        PipelineError: an unknown option.
    """
    import torch

    from .pipeline_cogvideox import MagicMotionCogVideoXPipeline
    from .pipeline_wan import MagicMotionWanPipeline

    check_memory_options(offload, weights_dtype, cache)
    if model not in ("auto", *MODELS):
        raise PipelineError(f"unknown model {model!r}: expected auto, wan or cogvideox")
    if kind is not None and kind not in KINDS:
        raise PipelineError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)

    if base is None:
        base, default_cn = tiny_model_paths(kind)
        controlnet = default_cn if controlnet is None else controlnet
    else:
        base = resolve_pretrained(base, "base model", file="model_index.json")  # the cache when offline
        if controlnet is None:
            if (Path(base) / "controlnet" / "config.json").is_file():  # a saved MagicMotion pipeline
                controlnet = Path(base) / "controlnet"
            else:
                raise ModelError(f"{base}: no ControlNet given (a folder saved by training, or a released .pt)")

    index = base_config(base)
    detected = detect_model(base, index)
    if model != "auto" and model != detected:
        raise ModelError(f"{base}: the base is a {detected} model, not {model}")
    model = detected

    if controlnet_2 is not None and model != "wan":  # diffusers would drop it with a warning
        raise ModelError(f"{base}: controlnet_2 is the low-noise expert's ControlNet of a two-expert Wan2.2 A14B "
                         f"base; this {model} base has one transformer")

    # the ControlNet first, and checked against the base's config before the base's weights load
    controlnet_source = None
    if model == "wan" and controlnet_2 is None and isinstance(controlnet, (str, os.PathLike)):
        from .pipeline_wan import expert_controlnet_folders  # A14B: one folder with both experts' ControlNets

        controlnet, controlnet_2 = expert_controlnet_folders(controlnet)
    if isinstance(controlnet_2, (str, os.PathLike)):  # checked against transformer_2 when the pipeline is built
        controlnet_2 = load_controlnet(controlnet_2, model=model, dtype=dtype, base=base)
    elif controlnet_2 is not None and getattr(controlnet_2, "dtype", dtype) != dtype:  # (no dtype: refused below)
        controlnet_2 = controlnet_2.to(dtype=dtype)
    if isinstance(controlnet, torch.nn.Module):
        # a module with no dtype is no ControlNet: refused by the check below, not an AttributeError here
        controlnet = controlnet if getattr(controlnet, "dtype", dtype) == dtype else controlnet.to(dtype=dtype)
    else:
        controlnet = local_controlnet_for_kind(controlnet, kind)
        controlnet_source = controlnet
        controlnet = load_controlnet(controlnet, model=model, dtype=dtype, base=base)
    try:
        controlnet.check_compatible(empty_transformer(model, transformer_config(base)))
    except AttributeError:
        raise ModelError(f"{type(controlnet).__name__} is not a Trajectory ControlNet for a {model} base") from None

    cls = MagicMotionWanPipeline if model == "wan" else MagicMotionCogVideoXPipeline
    dtypes: dict[str, Any] = {"default": dtype}
    if model == "wan":
        dtypes.update(vae=torch.float32, image_encoder=torch.float32)
    try:
        experts = {} if controlnet_2 is None else {"controlnet_2": controlnet_2}
        pipe = cls.from_pretrained(str(base), controlnet=controlnet, dtype=dtypes, **experts)
    except (OSError, ValueError, TypeError) as e:
        raise ModelError(f"{base}: cannot load the base model ({e})") from None
    attach_settings(pipe, model, base, controlnet_source)  # of the base and the ControlNet as named
    if lora is not None:
        load_lora(pipe, lora, lora_expert)
    return enable_memory_options(pipe, device, offload=offload, weights_dtype=weights_dtype, cache=cache,
                                 vae_tiling=vae_tiling, vae_slicing=vae_slicing)




def local_controlnet_for_kind(controlnet, kind: str | None):
    """A local folder holding the authors' release (`ckpts/stageN/*.pt`) or its conversion
    (`stageN/controlnet`) -> the stage for `kind` (mask: stage1, box: stage2, sparse_box: stage3);
    anything else as it is."""
    if not isinstance(controlnet, (str, os.PathLike)) or not Path(controlnet).is_dir():
        return controlnet
    from ..models.convert import resolve_controlnet_for_kind

    return resolve_controlnet_for_kind(controlnet, kind or "box")


def attach_settings(pipe, family: str, base, controlnet=None):
    """Give a loaded pipeline its recommended settings (`pipe.model_settings`: the base and ControlNet
    as named, folder or file, and the ControlNet's config) and apply the sampler and VAE tiling they
    ask for. Returns the pipeline."""
    pipe.model_settings = resolve_settings(
        family, base=base, controlnet=controlnet,
        controlnet_config=dict(pipe.controlnet.config) if pipe.controlnet is not None else None,
        transformer_config=dict(pipe.transformer.config))
    apply_sampling_settings(pipe)
    return pipe


def apply_sampling_settings(pipe) -> None:
    """The sampler and VAE tiling a model's settings ask for (the authors' release: CogVideoX's DPM
    sampler, tiling on), set on a loaded pipeline."""
    import diffusers

    from .settings import pipeline_settings

    settings = pipeline_settings(pipe)
    name = settings["scheduler"]
    if name and type(pipe.scheduler).__name__ != name:
        pipe.scheduler = getattr(diffusers, name).from_config(pipe.scheduler.config)
    if settings["vae_tiling"]:
        pipe.vae.enable_tiling()


def model_settings(base=None, controlnet=None, kind: str | None = None):
    """(family, `ModelSettings`, `ModelLimits`) of a base + ControlNet as named, from their configs
    alone (no weights load): what `load_pipeline` will recommend and what the base can run, for checks
    that must come before a model loads."""
    from .settings import model_limits

    if base is None:
        base, default_cn = tiny_model_paths(kind)
        controlnet = default_cn if controlnet is None else controlnet
    else:
        base = resolve_pretrained(base, "base model", file="model_index.json")
        if controlnet is None and (Path(base) / "controlnet" / "config.json").is_file():
            controlnet = Path(base) / "controlnet"
    family = detect_model(base)
    tcfg = transformer_config(base)
    controlnet = local_controlnet_for_kind(controlnet, kind)
    cn_cfg = None
    if controlnet is not None and not isinstance(controlnet, (str, os.PathLike)):
        cn_cfg = dict(controlnet.config) if hasattr(controlnet, "config") else None
        controlnet = None
    elif controlnet is not None and Path(controlnet).is_file():  # a released .pt: imported on load
        from ..models.convert import release_name

        cn_cfg = {"trajectory_palette": "release", "source": f"MagicMotion release {release_name(controlnet)}"}
    elif controlnet is not None:
        p = Path(controlnet)
        for cfg in (p / "config.json", p / "controlnet" / "config.json"):
            if cfg.is_file():
                try:
                    cn_cfg = json.loads(cfg.read_text())
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise ModelError(f"{cfg}: unreadable ({e})") from None
                break
    vae_cfg = None
    vae_file = Path(base) / "vae" / "config.json"
    if vae_file.is_file():
        try:
            vae_cfg = json.loads(vae_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelError(f"{vae_file}: unreadable ({e})") from None
    settings = resolve_settings(family, base=base, controlnet=controlnet, controlnet_config=cn_cfg,
                                transformer_config=tcfg)
    return family, settings, model_limits(family, tcfg, vae_cfg)

__all__ = [
    "DEFAULT_GUIDANCE", "KIND_STAGE", "MODELS", "OFFLOAD", "TINY_GUIDANCE", "TINY_MODEL_DIR", "base_config",
    "detect_model", "is_hub_id", "load_controlnet", "load_lora", "load_pipeline", "LORA_EXPERTS", "model_settings",
    "apply_sampling_settings", "attach_settings", "resolve_device",
    "resolve_dtype", "tiny_model_paths", "CACHES", "WEIGHTS_DTYPES", "cache_config", "check_memory_options",
    "enable_memory_options", "transformer_config",
]
