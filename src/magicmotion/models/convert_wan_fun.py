"""Convert alibaba-pai/Wan2.1-Fun-1.3B-InP (VideoX-Fun's release, Wan's own layout) to a diffusers
`WanImageToVideoPipeline` folder.

The release folder holds (names from VideoX-Fun's config/wan2.1/wan_civitai.yaml):

    config.json                                          transformer config, Wan's names (dim, in_dim, ...)
    diffusion_pytorch_model.safetensors[.index.json]     transformer weights, Wan's key names
    Wan2.1_VAE.pth                                       VAE, Wan's key names
    models_t5_umt5-xxl-enc-bf16.pth                      umt5-xxl encoder, Wan's T5 key names
    google/umt5-xxl/                                     tokenizer files (transformers' own format)
    models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth   CLIP, Wan's open-clip layout (visual.*, textual.*)

What is converted and how:

- transformer: key by key onto diffusers' `WanTransformer3DModel` (`transformer_key`); every key of
  the release must map onto exactly one diffusers key and every diffusers key must be filled, with
  the same shape, else `ModelError` naming the key.
- VAE: diffusers' own converter (`diffusers.loaders.single_file_utils.convert_wan_vae_to_diffusers`),
  then a strict load into `AutoencoderKLWan` (the Wan2.1 VAE's layout; widths read from the weights).
- text encoder: key by key onto transformers' `UMT5EncoderModel` (`t5_key`), strict as above.
- tokenizer: copied (already transformers' format).
- image encoder: the visual tower of Wan's CLIP (ViT-H/14: `visual.*`; the text tower, `visual.head`
  and `log_scale` are not used by Wan) key by key onto transformers' `CLIPVisionModel` (`clip_key`;
  the fused `to_qkv` split into q/k/v), strict as above, plus a `CLIPImageProcessor` (bicubic 224,
  OpenAI CLIP mean/std): the kind of `image_encoder/` + `image_processor/` pair that
  Wan-AI/Wan2.1-I2V-14B-480P-Diffusers ships. Wan runs the first 31 of the 32 blocks
  (`use_31_block`), which is the CLIPVisionModel's `hidden_states[-2]` that diffusers'
  `WanImageToVideoPipeline.encode_image` takes. Or `image_encoder=DIR`: an existing
  `CLIPVisionModel` folder with its `image_processor/` beside it, used instead.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from ..errors import ModelError

TRANSFORMER_FILE = "diffusion_pytorch_model.safetensors"
VAE_FILE = "Wan2.1_VAE.pth"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER_DIR = "google/umt5-xxl"
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
# Wan's CLIP vision tower is open-clip's ViT-H/14: 16 heads of 80 at width 1280 (wan/modules/clip.py).
# Head count is not in the weights' shapes, so it is read as width // 80.
CLIP_HEAD_DIM = 80
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# umt5-xxl encoder (VideoX-Fun's text_encoder_kwargs: vocab 256384, dim 4096, dim_ffn 10240, 64 heads,
# 24 layers, 32 buckets, shared_pos False) as a transformers UMT5Config.
UMT5_XXL_CONFIG: dict[str, Any] = {
    "vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6,
    "tie_word_embeddings": False, "is_encoder_decoder": True,
}

# Wan's transformer names -> diffusers' WanTransformer3DModel names. Wan's norm3 (the affine norm
# before cross-attention) is diffusers' norm2; Wan's norm1/norm2 have no weights.
_TOP = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
    "head.head": "proj_out",
}
_ATTN = {"self_attn": "attn1", "cross_attn": "attn2"}
_ATTN_PART = {
    "q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0",
    "norm_q": "norm_q", "norm_k": "norm_k",
    "k_img": "add_k_proj", "v_img": "add_v_proj", "norm_k_img": "norm_added_k",
}
_BLOCK_PART = {"norm3": "norm2", "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2"}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")


def transformer_key(key: str) -> str | None:
    """The diffusers name of one Wan transformer key, or None when it is not a Wan key."""
    if key == "head.modulation":
        return "scale_shift_table"
    m = re.match(r"^blocks\.(\d+)\.modulation$", key)
    if m:
        return f"blocks.{m.group(1)}.scale_shift_table"
    m = _BLOCK.match(key)
    if m:
        index, module, kind = m.groups()
        parts = module.split(".", 1)
        if parts[0] in _ATTN and len(parts) == 2 and parts[1] in _ATTN_PART:
            return f"blocks.{index}.{_ATTN[parts[0]]}.{_ATTN_PART[parts[1]]}.{kind}"
        if module in _BLOCK_PART:
            return f"blocks.{index}.{_BLOCK_PART[module]}.{kind}"
        return None
    module, _, kind = key.rpartition(".")
    if module in _TOP and kind in ("weight", "bias"):
        return f"{_TOP[module]}.{kind}"
    return None


def t5_key(key: str) -> str | None:
    """The transformers `UMT5EncoderModel` name of one key of Wan's T5 encoder, or None."""
    if key == "token_embedding.weight":
        return "shared.weight"
    if key == "norm.weight":
        return "encoder.final_layer_norm.weight"
    m = re.match(r"^blocks\.(\d+)\.(.+)$", key)
    if not m:
        return None
    i, rest = m.groups()
    table = {
        "norm1.weight": "layer.0.layer_norm.weight",
        "attn.q.weight": "layer.0.SelfAttention.q.weight",
        "attn.k.weight": "layer.0.SelfAttention.k.weight",
        "attn.v.weight": "layer.0.SelfAttention.v.weight",
        "attn.o.weight": "layer.0.SelfAttention.o.weight",
        "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
        "norm2.weight": "layer.1.layer_norm.weight",
        "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
        "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
        "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
    }
    return f"encoder.block.{i}.{table[rest]}" if rest in table else None


_CLIP_TOP = {
    "visual.patch_embedding.weight": "embeddings.patch_embedding.weight",
    "visual.pre_norm.weight": "pre_layrnorm.weight", "visual.pre_norm.bias": "pre_layrnorm.bias",
    "visual.post_norm.weight": "post_layernorm.weight", "visual.post_norm.bias": "post_layernorm.bias",
    "visual.cls_embedding": "embeddings.class_embedding",
    "visual.pos_embedding": "embeddings.position_embedding.weight",
}
_CLIP_BLOCK = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.proj": "self_attn.out_proj",
               "mlp.0": "mlp.fc1", "mlp.2": "mlp.fc2"}


def clip_key(key: str) -> str | None:
    """The transformers `CLIPVisionModel` name of one key of Wan's CLIP vision tower after
    `split_clip_qkv` (`attn.to_q` -> `self_attn.q_proj`, ...), or None."""
    if key in _CLIP_TOP:
        return _CLIP_TOP[key]
    m = re.match(r"^visual\.transformer\.(\d+)\.(.+)\.(weight|bias)$", key)
    if not m:
        return None
    i, module, kind = m.groups()
    if module in ("attn.to_q", "attn.to_k", "attn.to_v"):
        return f"encoder.layers.{i}.self_attn.{module[-1]}_proj.{kind}"
    return f"encoder.layers.{i}.{_CLIP_BLOCK[module]}.{kind}" if module in _CLIP_BLOCK else None


def split_clip_qkv(state_dict: dict) -> dict:
    """Wan's CLIP with `to_qkv` split into `to_q`/`to_k`/`to_v` (rows q, k, v in that order, as Wan's
    `SelfAttention` views them: (b, s, 3, heads, head_dim)), the embeddings squeezed to transformers'
    shapes, and only the vision tower kept (the text tower, `visual.head` and `log_scale` are unused)."""
    out = {}
    for key, value in state_dict.items():
        if not key.startswith("visual.") or key == "visual.head":
            continue
        if ".attn.to_qkv." in key:
            for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0)):
                out[key.replace(".to_qkv.", f".to_{name}.")] = part
        elif key in ("visual.cls_embedding", "visual.pos_embedding"):
            out[key] = value.reshape(value.shape[-2:]) if key == "visual.pos_embedding" else value.reshape(-1)
        else:
            out[key] = value
    return out


def clip_vision_config(state_dict: dict) -> dict:
    """transformers `CLIPVisionConfig` values read from the shapes of Wan's CLIP vision tower."""
    try:
        dim, _, patch, _ = state_dict["visual.patch_embedding.weight"].shape
        positions = state_dict["visual.pos_embedding"].shape[-2]
        mlp = state_dict["visual.transformer.0.mlp.0.weight"].shape[0]
    except KeyError as e:
        raise ModelError(f"image encoder: missing key {e.args[0]} (not Wan's open-clip CLIP?)") from None
    grid = round((positions - 1) ** 0.5)
    if grid * grid != positions - 1 or dim % CLIP_HEAD_DIM:
        raise ModelError(f"image encoder: {positions} positions, width {dim}: not a square grid + class "
                         f"token, or width not a multiple of {CLIP_HEAD_DIM} (ViT-H/14's head size)")
    layers = 1 + max(int(m.group(1)) for k in state_dict if (m := re.match(r"^visual\.transformer\.(\d+)\.", k)))
    return {"hidden_size": int(dim), "intermediate_size": int(mlp), "num_hidden_layers": int(layers),
            "num_attention_heads": int(dim // CLIP_HEAD_DIM), "patch_size": int(patch),
            "image_size": int(grid * patch), "hidden_act": "gelu", "layer_norm_eps": 1e-5, "projection_dim": 1024}


def convert_wan_clip(state_dict: dict):
    """A transformers `CLIPVisionModel` holding the vision tower of Wan's CLIP (sizes read from the weights)."""
    from accelerate import init_empty_weights
    from transformers import CLIPVisionConfig, CLIPVisionModel

    cfg = CLIPVisionConfig(**clip_vision_config(state_dict))
    with init_empty_weights():
        model = CLIPVisionModel(cfg)
    names = model.state_dict()  # un-prefixed in transformers 5, "vision_model."-prefixed before
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in names) else ""
    target = {k[len(prefix):]: v.shape for k, v in names.items()}
    mapped = map_state_dict(split_clip_qkv(state_dict), target, clip_key, "image encoder")
    model.load_state_dict({prefix + k: v for k, v in mapped.items()}, strict=True, assign=True)
    return model.eval()


def clip_image_processor(image_size: int = 224):
    """A `CLIPImageProcessor` for Wan's CLIP: bicubic resize of the short side and a centre crop to
    `image_size`, OpenAI CLIP mean/std, the usual CLIP ViT-H/14 settings. (Wan's own code resizes the
    whole frame to 224 x 224 without a crop; diffusers' pipeline takes what this processor gives.)"""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                              resample=3, do_center_crop=True, do_normalize=True, do_resize=True,
                              image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)


def map_state_dict(source: dict, target_shapes: dict, rename: Callable[[str], str | None], what: str) -> dict:
    """Rename `source` with `rename` and check it fills `target_shapes` exactly: every source key maps
    onto one target key, no two onto the same, every target key filled, shapes equal. `ModelError`
    names the first offending key(s)."""
    out: dict = {}
    origin: dict[str, str] = {}
    unknown = []
    for key, tensor in source.items():
        new = rename(key)
        if new is None or new not in target_shapes:
            unknown.append(key)
            continue
        if new in out:
            raise ModelError(f"{what}: {origin[new]} and {key} both map onto {new}")
        if tuple(tensor.shape) != tuple(target_shapes[new]):
            raise ModelError(f"{what}: {key} has shape {tuple(tensor.shape)}, {new} needs "
                             f"{tuple(target_shapes[new])}")
        out[new] = tensor
        origin[new] = key
    if unknown:
        raise ModelError(f"{what}: {len(unknown)} unexpected key(s), not part of the model: "
                         + ", ".join(sorted(unknown)[:5]))
    missing = sorted(set(target_shapes) - set(out))
    if missing:
        raise ModelError(f"{what}: {len(missing)} missing key(s), the model needs: " + ", ".join(missing[:5]))
    return out


def transformer_config(wan_config: dict, state_dict: dict) -> dict:
    """diffusers `WanTransformer3DModel` config from Wan's config.json (`dim`, `in_dim`, ...) and the
    weights (the image branch and cross-attention norm are read from which keys exist)."""
    get = lambda *names, default=None: next((wan_config[n] for n in names if n in wan_config), default)  # noqa: E731
    dim, heads = get("dim", "hidden_size"), get("num_heads")
    if dim is None or heads is None or dim % heads:
        raise ModelError(f"transformer config: needs dim and num_heads (dim divisible by heads), got {wan_config}")
    image = state_dict.get("img_emb.proj.0.weight")
    return {
        "patch_size": list(get("patch_size", default=(1, 2, 2))),
        "num_attention_heads": heads,
        "attention_head_dim": dim // heads,
        "in_channels": get("in_dim", "in_channels", default=16),
        "out_channels": get("out_dim", default=16),
        "text_dim": get("text_dim", default=4096),
        "freq_dim": get("freq_dim", default=256),
        "ffn_dim": get("ffn_dim"),
        "num_layers": get("num_layers"),
        "cross_attn_norm": "blocks.0.norm3.weight" in state_dict,
        "qk_norm": "rms_norm_across_heads" if get("qk_norm", default=True) else None,
        "eps": get("eps", default=1e-6),
        "image_dim": int(image.shape[0]) if image is not None else None,
        "added_kv_proj_dim": dim if image is not None else None,
        "rope_max_seq_len": 1024,
    }


def convert_wan_transformer(state_dict: dict, wan_config: dict):
    """A diffusers `WanTransformer3DModel` holding the Wan-layout `state_dict` (dtype kept)."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    config = transformer_config(wan_config, state_dict)
    with init_empty_weights():
        model = WanTransformer3DModel(**config)
    target = {k: v.shape for k, v in model.state_dict().items()}
    mapped = map_state_dict(state_dict, target, transformer_key, "transformer")
    model.load_state_dict(mapped, strict=True, assign=True)
    return model.eval()


def convert_wan_vae(state_dict: dict):
    """A diffusers `AutoencoderKLWan` (Wan2.1 VAE) from Wan's VAE weights, via diffusers' converter.

    The layout is the Wan2.1 VAE's (`dim_mult` [1, 2, 4, 4], 2 residual blocks, the layout diffusers'
    converter knows); the base width and latent channels are read from the weights (96 and 16 in the
    release), so a narrower VAE of the same layout converts too."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    try:
        base_dim, z_dim = state_dict["encoder.conv1.weight"].shape[0], state_dict["conv2.weight"].shape[0]
    except KeyError as e:
        raise ModelError(f"VAE: missing key {e.args[0]} (not Wan's VAE?)") from None
    if z_dim != 16:
        raise ModelError(f"VAE: {z_dim} latent channels; the Wan2.1 VAE has 16")
    with init_empty_weights():
        vae = AutoencoderKLWan(base_dim=int(base_dim), z_dim=int(z_dim))
    converted = convert_wan_vae_to_diffusers(dict(state_dict))
    target = {k: v.shape for k, v in vae.state_dict().items()}
    mapped = map_state_dict(converted, target, lambda k: k, "VAE (after diffusers' Wan VAE converter)")
    vae.load_state_dict(mapped, strict=True, assign=True)
    return vae.eval()


def t5_config(state_dict: dict) -> dict:
    """UMT5Config values read from the shapes of Wan's T5 weights (umt5-xxl: `UMT5_XXL_CONFIG`)."""
    try:
        vocab, dim = state_dict["token_embedding.weight"].shape
        buckets, heads = state_dict["blocks.0.pos_embedding.embedding.weight"].shape
        dim_attn = state_dict["blocks.0.attn.q.weight"].shape[0]
        dim_ffn = state_dict["blocks.0.ffn.fc1.weight"].shape[0]
    except KeyError as e:
        raise ModelError(f"text encoder: missing key {e.args[0]} (not Wan's umt5 encoder?)") from None
    layers = 1 + max(int(m.group(1)) for k in state_dict if (m := re.match(r"^blocks\.(\d+)\.", k)))
    return {**UMT5_XXL_CONFIG, "vocab_size": int(vocab), "d_model": int(dim), "d_kv": int(dim_attn // heads),
            "d_ff": int(dim_ffn), "num_layers": int(layers), "num_heads": int(heads),
            "relative_attention_num_buckets": int(buckets)}


def convert_wan_t5(state_dict: dict):
    """A transformers `UMT5EncoderModel` from Wan's T5 encoder weights (sizes read from the weights)."""
    from accelerate import init_empty_weights
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(**t5_config(state_dict))
    with init_empty_weights():
        model = UMT5EncoderModel(cfg)
    target = {k: v.shape for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    mapped = map_state_dict(state_dict, target, t5_key, "text encoder")
    mapped["encoder.embed_tokens.weight"] = mapped["shared.weight"]
    model.load_state_dict(mapped, strict=True, assign=True)
    model.tie_weights()
    return model.eval()


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ModelError(f"{path}: missing")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise ModelError(f"{path}: unreadable safetensors file ({e})") from None
    import torch

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise ModelError(f"{path}: unreadable checkpoint, corrupt or truncated? ({type(e).__name__})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ModelError(f"{path}: not a state dict")
    return sd


def read_wan_transformer(src: str | Path) -> tuple[dict, dict]:
    """(state dict, config) of the transformer of a VideoX-Fun release folder."""
    src = Path(src)
    from ..limits import read_json

    config_path = src / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{config_path}: missing (the transformer config of the release)")
    config = read_json(config_path, ModelError, "transformer config")
    index = src / (TRANSFORMER_FILE + ".index.json")
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        sd: dict = {}
        for name in files:
            sd.update(_read(src / name))
    else:
        sd = _read(src / TRANSFORMER_FILE)
    return sd, config


def read_wan_clip(src: Path):
    """(CLIPVisionModel, CLIPImageProcessor) from the CLIP file of a release folder."""
    encoder = convert_wan_clip(_read(Path(src) / CLIP_FILE))
    return encoder, clip_image_processor(encoder.config.image_size)


def load_clip_folder(image_encoder: str | Path):
    """(CLIPVisionModel, CLIPImageProcessor) from a transformers folder, its `image_processor/` inside
    it or beside it (as in Wan-AI/Wan2.1-I2V-14B-480P-Diffusers)."""
    from transformers import CLIPImageProcessor, CLIPVisionModel

    image_encoder = Path(image_encoder)
    try:
        encoder = CLIPVisionModel.from_pretrained(image_encoder)
    except (OSError, ValueError) as e:
        raise ModelError(f"{image_encoder}: not a CLIPVisionModel folder ({e})") from None
    for where in (image_encoder / "image_processor", image_encoder.parent / "image_processor", image_encoder):
        if (where / "preprocessor_config.json").is_file():
            return encoder, CLIPImageProcessor.from_pretrained(where)
    raise ModelError(f"{image_encoder}: no image_processor/ (preprocessor_config.json) beside or inside it")


def _portable_processor_name(index_path: Path) -> None:
    """Name the image processor `CLIPImageProcessor` in model_index.json, as the hub's Wan folders do:
    transformers 5 records the backend it happened to use (`CLIPImageProcessorPil` without
    torchvision), a name older transformers cannot load."""
    index = json.loads(index_path.read_text())
    entry = index.get("image_processor")
    if isinstance(entry, list) and entry[0] == "transformers" and str(entry[1]).startswith("CLIPImageProcessor"):
        index["image_processor"] = ["transformers", "CLIPImageProcessor"]
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def convert_wan_fun(src: str | Path, out: str | Path, image_encoder: str | Path | None = None,
                    flow_shift: float = 3.0, progress: Callable[[str], None] | None = None) -> Path:
    """Write a diffusers `WanImageToVideoPipeline` folder at `out` from the release folder `src`.

    When the transformer has a CLIP image branch (Wan2.1-Fun-1.3B-InP has), the release's CLIP file
    is converted too, or, given `image_encoder`, that transformers `CLIPVisionModel` folder (with
    `image_processor/` inside it or beside it) is used instead.
    The pipeline's scheduler is `UniPCMultistepScheduler` with flow sigmas and `flow_shift` (3.0 for
    480P, Wan's setting). Written to a temporary folder renamed into place at the end.
    """
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline
    from transformers import AutoTokenizer

    say = progress or (lambda line: None)
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise ModelError(f"{src}: not a folder (the Wan2.1-Fun release, e.g. Wan2.1-Fun-1.3B-InP/)")
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"{out}: exists and is not empty")
    # every file the release must hold is checked before anything is read or said
    weights = TRANSFORMER_FILE + ".index.json" if (src / (TRANSFORMER_FILE + ".index.json")).is_file() else TRANSFORMER_FILE
    missing = [name for name in ("config.json", weights, VAE_FILE, T5_FILE) if not (src / name).is_file()]
    missing += [TOKENIZER_DIR + "/"] if not (src / TOKENIZER_DIR).is_dir() else []
    if missing:
        raise ModelError(f"{src}: not a Wan2.1-Fun release folder: missing {', '.join(missing)} "
                         "(hf download alibaba-pai/Wan2.1-Fun-1.3B-InP --local-dir Wan2.1-Fun-1.3B-InP gets one)")

    say("converting the transformer")
    sd, config = read_wan_transformer(src)
    transformer = convert_wan_transformer(sd, config)
    del sd
    encoder = processor = None
    if transformer.config.image_dim is not None:
        say("converting the image encoder")
        encoder, processor = (load_clip_folder(image_encoder) if image_encoder is not None
                              else read_wan_clip(src))
        if encoder.config.hidden_size != transformer.config.image_dim:
            raise ModelError(f"image encoder: width {encoder.config.hidden_size}, the transformer's image branch "
                             f"takes {transformer.config.image_dim}")
    say("converting the VAE")
    vae = convert_wan_vae(_read(src / VAE_FILE))
    say("converting the text encoder")
    text_encoder = convert_wan_t5(_read(src / T5_FILE))
    tokenizer_dir = src / TOKENIZER_DIR
    if not tokenizer_dir.is_dir():
        raise ModelError(f"{tokenizer_dir}: missing (the umt5-xxl tokenizer files)")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=flow_shift)
    pipe = WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                                   image_processor=processor, image_encoder=encoder, transformer=transformer)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    say(f"writing {out}")
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        _portable_processor_name(tmp / "model_index.json")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written output
        raise
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out
