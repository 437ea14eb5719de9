"""Tiny models in Wan's own key layout, saved as the Wan2.1 / VideoX-Fun releases save them (for the
conversion tests, the CLI tests and README's Wan commands). Key names and shapes follow the structure
of Wan's code (wan/modules/model.py, t5.py, vae.py, clip.py), written out here, not imported."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

# Wan's config.json names; 36 input channels and a CLIP branch as in Fun-InP (Wan fixes the CLIP width
# at 1280; `wan_layout_weights(clip_dim=...)` makes it narrower for tiny pipelines).
TINY = {"dim": 32, "ffn_dim": 48, "freq_dim": 16, "in_dim": 36, "out_dim": 16, "num_heads": 2,
        "num_layers": 2, "text_dim": 24, "model_type": "i2v", "eps": 1e-6, "text_len": 512}
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"


def _randn(seed: int, meta: bool = False):
    """r(*shape, scale=0.2): seeded random values, or (meta) empty tensors on the meta device, for
    checking real sizes without the memory."""
    if meta:
        return lambda *shape, scale=0.2: torch.empty(*shape, device="meta")
    g = torch.Generator().manual_seed(seed)
    return lambda *shape, scale=0.2: torch.randn(*shape, generator=g) * scale


def wan_layout_weights(cfg: dict, seed: int = 0, clip_dim: int = 1280, meta: bool = False) -> dict:
    """Random transformer weights under Wan's names (WanModel: patch_embedding, blocks.N.self_attn.q, ...)."""
    r = _randn(seed, meta)
    dim, ffn, p = cfg["dim"], cfg["ffn_dim"], (1, 2, 2)
    sd = {
        "patch_embedding.weight": r(dim, cfg["in_dim"], *p), "patch_embedding.bias": r(dim),
        "text_embedding.0.weight": r(dim, cfg["text_dim"]), "text_embedding.0.bias": r(dim),
        "text_embedding.2.weight": r(dim, dim), "text_embedding.2.bias": r(dim),
        "time_embedding.0.weight": r(dim, cfg["freq_dim"]), "time_embedding.0.bias": r(dim),
        "time_embedding.2.weight": r(dim, dim), "time_embedding.2.bias": r(dim),
        "time_projection.1.weight": r(6 * dim, dim), "time_projection.1.bias": r(6 * dim),
        "head.head.weight": r(math.prod(p) * cfg["out_dim"], dim), "head.head.bias": r(math.prod(p) * cfg["out_dim"]),
        "head.modulation": r(1, 2, dim),
        "img_emb.proj.0.weight": 1 + r(clip_dim), "img_emb.proj.0.bias": r(clip_dim),
        "img_emb.proj.1.weight": r(clip_dim, clip_dim, scale=0.03), "img_emb.proj.1.bias": r(clip_dim),
        "img_emb.proj.3.weight": r(dim, clip_dim, scale=0.03), "img_emb.proj.3.bias": r(dim),
        "img_emb.proj.4.weight": 1 + r(dim), "img_emb.proj.4.bias": r(dim),
    }
    for i in range(cfg["num_layers"]):
        b = f"blocks.{i}."
        for attn in ("self_attn", "cross_attn"):
            for name in ("q", "k", "v", "o") + (("k_img", "v_img") if attn == "cross_attn" else ()):
                sd[f"{b}{attn}.{name}.weight"] = r(dim, dim)
                sd[f"{b}{attn}.{name}.bias"] = r(dim)
            for norm in ("norm_q", "norm_k") + (("norm_k_img",) if attn == "cross_attn" else ()):
                sd[f"{b}{attn}.{norm}.weight"] = 1 + r(dim)
        sd[f"{b}norm3.weight"], sd[f"{b}norm3.bias"] = 1 + r(dim), r(dim)
        sd[f"{b}ffn.0.weight"], sd[f"{b}ffn.0.bias"] = r(ffn, dim), r(ffn)
        sd[f"{b}ffn.2.weight"], sd[f"{b}ffn.2.bias"] = r(dim, ffn), r(dim)
        sd[f"{b}modulation"] = r(1, 6, dim)
    return sd


def wan_t5_weights(vocab=50, dim=16, heads=2, dim_ffn=24, layers=2, buckets=8, seed=0, meta=False) -> dict:
    """Random umT5 encoder weights under Wan's names (T5Encoder: token_embedding, blocks.N.attn.q, ...)."""
    r = _randn(seed, meta)
    sd = {"token_embedding.weight": r(vocab, dim, scale=0.3), "norm.weight": 1 + r(dim)}
    for i in range(layers):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(dim), b + "norm2.weight": 1 + r(dim),
                   b + "pos_embedding.embedding.weight": r(buckets, heads, scale=0.3),
                   b + "ffn.gate.0.weight": r(dim_ffn, dim, scale=0.3), b + "ffn.fc1.weight": r(dim_ffn, dim, scale=0.3),
                   b + "ffn.fc2.weight": r(dim, dim_ffn, scale=0.3)})
        for name in "qkvo":
            sd[f"{b}attn.{name}.weight"] = r(dim, dim, scale=0.3)
    return sd


def wan_clip_weights(dim=160, layers=3, patch=14, grid=2, text=True, seed=0, meta=False) -> dict:
    """Random XLMRobertaCLIP weights under Wan's names: the vision tower (`visual.*`: a bias-free patch
    conv, class + position embeddings, pre-norm, blocks with a fused `to_qkv`, post-norm, `head`), and
    a token of what the release also holds (a text tower `textual.*`, `log_scale`)."""
    r = _randn(seed, meta)
    mlp = 4 * dim
    sd = {"visual.patch_embedding.weight": r(dim, 3, patch, patch, scale=0.05),
          "visual.cls_embedding": r(1, 1, dim), "visual.pos_embedding": r(1, grid * grid + 1, dim),
          "visual.pre_norm.weight": 1 + r(dim), "visual.pre_norm.bias": r(dim),
          "visual.post_norm.weight": 1 + r(dim), "visual.post_norm.bias": r(dim),
          "visual.head": r(dim, 24)}
    for i in range(layers):
        b = f"visual.transformer.{i}."
        sd.update({b + "norm1.weight": 1 + r(dim), b + "norm1.bias": r(dim),
                   b + "attn.to_qkv.weight": r(3 * dim, dim, scale=0.1), b + "attn.to_qkv.bias": r(3 * dim),
                   b + "attn.proj.weight": r(dim, dim, scale=0.1), b + "attn.proj.bias": r(dim),
                   b + "norm2.weight": 1 + r(dim), b + "norm2.bias": r(dim),
                   b + "mlp.0.weight": r(mlp, dim, scale=0.1), b + "mlp.0.bias": r(mlp),
                   b + "mlp.2.weight": r(dim, mlp, scale=0.1), b + "mlp.2.bias": r(dim)})
    if text:
        sd.update({"textual.token_embedding.weight": r(10, 8), "textual.head.0.weight": r(16, 8),
                   "log_scale": r(())})
    return sd


def wan_vae_shapes(dim: int, z_dim: int = 16) -> dict[str, tuple]:
    """{key: shape} of Wan's WanVAE_ (dim_mult [1, 2, 4, 4], 2 residual blocks, temporal downsampling
    [False, True, True], no attention but the middle's), built from its structure: Encoder3d /
    Decoder3d with flat `downsamples` / `upsamples` lists of ResidualBlock and Resample, `middle`,
    `head`, and the 1x1x1 `conv1` (2z -> 2z) and `conv2` (z -> z) between them."""
    shapes: dict[str, tuple] = {}

    def residual(prefix, i, o):
        shapes.update({prefix + "residual.0.gamma": (i, 1, 1, 1), prefix + "residual.2.weight": (o, i, 3, 3, 3),
                       prefix + "residual.2.bias": (o,), prefix + "residual.3.gamma": (o, 1, 1, 1),
                       prefix + "residual.6.weight": (o, o, 3, 3, 3), prefix + "residual.6.bias": (o,)})
        if i != o:
            shapes.update({prefix + "shortcut.weight": (o, i, 1, 1, 1), prefix + "shortcut.bias": (o,)})

    def middle(prefix, d):
        residual(prefix + "middle.0.", d, d)
        shapes.update({prefix + "middle.1.norm.gamma": (d, 1, 1), prefix + "middle.1.to_qkv.weight": (3 * d, d, 1, 1),
                       prefix + "middle.1.to_qkv.bias": (3 * d,), prefix + "middle.1.proj.weight": (d, d, 1, 1),
                       prefix + "middle.1.proj.bias": (d,)})
        residual(prefix + "middle.2.", d, d)

    mult, temporal = [1, 2, 4, 4], [False, True, True]
    # encoder
    dims = [dim * u for u in [1] + mult]
    shapes.update({"encoder.conv1.weight": (dim, 3, 3, 3, 3), "encoder.conv1.bias": (dim,)})
    n = 0
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        for _ in range(2):
            residual(f"encoder.downsamples.{n}.", a, b)
            a, n = b, n + 1
        if i != len(mult) - 1:
            p = f"encoder.downsamples.{n}."
            shapes.update({p + "resample.1.weight": (b, b, 3, 3), p + "resample.1.bias": (b,)})
            if temporal[i]:
                shapes.update({p + "time_conv.weight": (b, b, 3, 1, 1), p + "time_conv.bias": (b,)})
            n += 1
    middle("encoder.", dims[-1])
    shapes.update({"encoder.head.0.gamma": (dims[-1], 1, 1, 1), "encoder.head.2.weight": (2 * z_dim, dims[-1], 3, 3, 3),
                   "encoder.head.2.bias": (2 * z_dim,), "conv1.weight": (2 * z_dim, 2 * z_dim, 1, 1, 1),
                   "conv1.bias": (2 * z_dim,), "conv2.weight": (z_dim, z_dim, 1, 1, 1), "conv2.bias": (z_dim,)})
    # decoder
    dims = [dim * u for u in [mult[-1]] + mult[::-1]]
    shapes.update({"decoder.conv1.weight": (dims[0], z_dim, 3, 3, 3), "decoder.conv1.bias": (dims[0],)})
    middle("decoder.", dims[0])
    n = 0
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        a = a // 2 if i in (1, 2, 3) else a
        for _ in range(3):
            residual(f"decoder.upsamples.{n}.", a, b)
            a, n = b, n + 1
        if i != len(mult) - 1:
            p = f"decoder.upsamples.{n}."
            shapes.update({p + "resample.1.weight": (b // 2, b, 3, 3), p + "resample.1.bias": (b // 2,)})
            if temporal[::-1][i]:
                shapes.update({p + "time_conv.weight": (2 * b, b, 3, 1, 1), p + "time_conv.bias": (2 * b,)})
            n += 1
    shapes.update({"decoder.head.0.gamma": (dim, 1, 1, 1), "decoder.head.2.weight": (3, dim, 3, 3, 3),
                   "decoder.head.2.bias": (3,)})
    return shapes


_RESNET = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
           "conv_shortcut": "shortcut"}


def wan_vae_name(key: str) -> str:
    """Wan's name of a diffusers `AutoencoderKLWan` key (the inverse of what a converter must do)."""
    import re

    top = {"quant_conv.": "conv1.", "post_quant_conv.": "conv2.", "encoder.conv_in.": "encoder.conv1.",
           "decoder.conv_in.": "decoder.conv1.", "encoder.norm_out.": "encoder.head.0.",
           "encoder.conv_out.": "encoder.head.2.", "decoder.norm_out.": "decoder.head.0.",
           "decoder.conv_out.": "decoder.head.2."}
    for a, b in top.items():
        if key.startswith(a):
            return b + key[len(a):]

    def resnet(rest):
        module, _, tail = rest.partition(".")
        return f"{_RESNET[module]}.{tail}" if module in _RESNET else rest

    m = re.match(r"^(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d)\.(.+)$", key)
    if m:
        side, kind, i, rest = m.groups()
        index = 1 if kind == "attentions" else 2 * int(i)
        return f"{side}.middle.{index}.{rest if kind == 'attentions' else resnet(rest)}"
    m = re.match(r"^encoder\.down_blocks\.(\d+)\.(.+)$", key)
    if m:
        return f"encoder.downsamples.{m.group(1)}.{resnet(m.group(2))}"
    m = re.match(r"^decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.+)$", key)
    if m:
        b, kind, i, rest = m.groups()
        if kind == "upsamplers":
            return f"decoder.upsamples.{4 * int(b) + 3}.{rest}"
        return f"decoder.upsamples.{4 * int(b) + int(i)}.{resnet(rest)}"
    raise KeyError(key)


def wan_vae_weights(dim: int = 4, seed: int = 0):
    """(Wan-layout state dict, the diffusers `AutoencoderKLWan` it was taken from): a random tiny VAE of
    the Wan2.1 layout, its RMS-norm gains randomised too, renamed with `wan_vae_name`; the key set and
    every shape are checked against `wan_vae_shapes` (Wan's structure)."""
    from diffusers import AutoencoderKLWan

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(base_dim=dim, z_dim=16).eval()
        with torch.no_grad():
            for name, p in vae.named_parameters():
                if name.endswith("gamma"):
                    p.add_(torch.randn_like(p) * 0.2)
    sd = {wan_vae_name(k): v.clone() for k, v in vae.state_dict().items()}
    shapes = wan_vae_shapes(dim)
    assert sd.keys() == shapes.keys(), sorted(set(sd) ^ set(shapes))[:5]
    for k, v in sd.items():
        assert tuple(v.shape) == shapes[k], (k, tuple(v.shape), shapes[k])
    return sd, vae


def write_release(folder: Path, cfg: dict | None = None, clip_dim: int = 160, seed: int = 0) -> Path:
    """A tiny Wan2.1-Fun-InP release folder, as alibaba-pai/Wan2.1-Fun-1.3B-InP lays it out: config.json +
    diffusion_pytorch_model.safetensors, Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth, google/umt5-xxl/
    (tokenizer), models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth. Text width 16 (the tiny
    tokenizer's vocabulary), CLIP width `clip_dim`, 9 frames of 32 x 32 run in well under a second."""
    from safetensors.torch import save_file

    from magicmotion.pipelines.tiny import tiny_tokenizer

    cfg = dict(cfg or {**TINY, "text_dim": 16})
    folder.mkdir(parents=True, exist_ok=True)
    sd = wan_layout_weights(cfg, seed=seed, clip_dim=clip_dim)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"_class_name": "WanModel", **cfg}))
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(folder / "google" / "umt5-xxl")
    torch.save(wan_t5_weights(vocab=len(tokenizer), dim=cfg["text_dim"], seed=seed + 1),
               folder / "models_t5_umt5-xxl-enc-bf16.pth")
    torch.save(wan_vae_weights(seed=seed + 2)[0], folder / "Wan2.1_VAE.pth")
    torch.save(wan_clip_weights(dim=clip_dim, seed=seed + 3), folder / CLIP_FILE)
    return folder
