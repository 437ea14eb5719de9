"""Wan2.1-Fun (Wan's own layout) -> diffusers: a tiny model saved as the release saves it, converted,
and compared with a reference forward written here from the structure of Wan's model code."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from magicmotion.errors import ModelError
from magicmotion.models.convert_wan_fun import (
    convert_wan_t5,
    convert_wan_transformer,
    read_wan_transformer,
    transformer_key,
)

# Wan's config.json names; 36 input channels and a CLIP branch (1280, fixed in Wan's code) as in Fun-InP.
TINY = {"dim": 32, "ffn_dim": 48, "freq_dim": 16, "in_dim": 36, "out_dim": 16, "num_heads": 2,
        "num_layers": 2, "text_dim": 24, "model_type": "i2v", "eps": 1e-6, "text_len": 512}
IMAGE_TOKENS = 257  # Wan splits the context at 257 image tokens; diffusers takes the last 512 as text


def wan_layout_weights(cfg: dict, seed: int = 0) -> dict:
    """Random weights under Wan's names (WanModel: patch_embedding, blocks.N.self_attn.q, ...)."""
    g = torch.Generator().manual_seed(seed)
    dim, ffn, p = cfg["dim"], cfg["ffn_dim"], (1, 2, 2)

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    sd = {
        "patch_embedding.weight": r(dim, cfg["in_dim"], *p), "patch_embedding.bias": r(dim),
        "text_embedding.0.weight": r(dim, cfg["text_dim"]), "text_embedding.0.bias": r(dim),
        "text_embedding.2.weight": r(dim, dim), "text_embedding.2.bias": r(dim),
        "time_embedding.0.weight": r(dim, cfg["freq_dim"]), "time_embedding.0.bias": r(dim),
        "time_embedding.2.weight": r(dim, dim), "time_embedding.2.bias": r(dim),
        "time_projection.1.weight": r(6 * dim, dim), "time_projection.1.bias": r(6 * dim),
        "head.head.weight": r(math.prod(p) * cfg["out_dim"], dim), "head.head.bias": r(math.prod(p) * cfg["out_dim"]),
        "head.modulation": r(1, 2, dim),
        "img_emb.proj.0.weight": 1 + r(1280), "img_emb.proj.0.bias": r(1280),
        "img_emb.proj.1.weight": r(1280, 1280, scale=0.03), "img_emb.proj.1.bias": r(1280),
        "img_emb.proj.3.weight": r(dim, 1280, scale=0.03), "img_emb.proj.3.bias": r(dim),
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


# ---- reference forward, following the structure of Wan's WanModel (not diffusers') ----

def _linear(sd, name, x):
    return F.linear(x, sd[name + ".weight"], sd[name + ".bias"])


def _rms(sd, name, x, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * sd[name + ".weight"]


def _rope_table(length: int, dim: int) -> torch.Tensor:
    inv = 1.0 / torch.pow(10000, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv)
    return torch.polar(torch.ones_like(angles), angles)


def _rope(x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """x (B, L, n, d): rotate pairs of channels by frame, row and column positions (d split d-4(d//6), 2(d//6), 2(d//6))."""
    f, h, w = grid
    d = x.shape[-1]
    parts = [d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)]
    tf, th, tw = (_rope_table(64, k) for k in parts)
    freqs = torch.cat([tf[:f].view(f, 1, 1, -1).expand(f, h, w, -1), th[:h].view(1, h, 1, -1).expand(f, h, w, -1),
                       tw[:w].view(1, 1, w, -1).expand(f, h, w, -1)], dim=-1).reshape(f * h * w, 1, -1)
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs).flatten(3).to(x.dtype)


def _attention(q, k, v, heads):
    b = q.shape[0]
    split = lambda t: t.view(b, t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).flatten(2)


def wan_reference_forward(sd, cfg, x, t, context, clip):
    """x (B, C_in, F, H, W), t (B,), context (B, L_text, text_dim), clip (B, 257, 1280) -> (B, C_out, F, H, W)."""
    dim, heads, eps = cfg["dim"], cfg["num_heads"], cfg["eps"]
    # embeddings
    x = F.conv3d(x, sd["patch_embedding.weight"], sd["patch_embedding.bias"], stride=(1, 2, 2))
    batch, _, f, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    half = cfg["freq_dim"] // 2
    angles = torch.outer(t.double(), torch.pow(10000, -torch.arange(half, dtype=torch.float64) / half))
    sinus = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).float()
    e = _linear(sd, "time_embedding.2", F.silu(_linear(sd, "time_embedding.0", sinus)))
    e0 = _linear(sd, "time_projection.1", F.silu(e)).unflatten(1, (6, dim))
    text = _linear(sd, "text_embedding.2", F.gelu(_linear(sd, "text_embedding.0", context), approximate="tanh"))
    img = F.layer_norm(clip, (1280,), sd["img_emb.proj.0.weight"], sd["img_emb.proj.0.bias"])
    img = _linear(sd, "img_emb.proj.3", F.gelu(_linear(sd, "img_emb.proj.1", img)))
    img = F.layer_norm(img, (dim,), sd["img_emb.proj.4.weight"], sd["img_emb.proj.4.bias"])
    ctx = torch.cat([img, text], dim=1)
    ctx_img, ctx_text = ctx[:, :IMAGE_TOKENS], ctx[:, IMAGE_TOKENS:]
    norm = lambda y: F.layer_norm(y, (dim,), eps=eps)  # noqa: E731
    # blocks
    for i in range(cfg["num_layers"]):
        b = f"blocks.{i}."
        m = (sd[b + "modulation"] + e0).chunk(6, dim=1)
        y = norm(x) * (1 + m[1]) + m[0]
        q = _rope(_rms(sd, b + "self_attn.norm_q", _linear(sd, b + "self_attn.q", y), eps).view(batch, -1, heads, dim // heads), (f, h, w))
        k = _rope(_rms(sd, b + "self_attn.norm_k", _linear(sd, b + "self_attn.k", y), eps).view(batch, -1, heads, dim // heads), (f, h, w))
        v = _linear(sd, b + "self_attn.v", y)
        x = x + _linear(sd, b + "self_attn.o", _attention(q.flatten(2), k.flatten(2), v, heads)) * m[2]
        y = F.layer_norm(x, (dim,), sd[b + "norm3.weight"], sd[b + "norm3.bias"], eps)
        q = _rms(sd, b + "cross_attn.norm_q", _linear(sd, b + "cross_attn.q", y), eps)
        k = _rms(sd, b + "cross_attn.norm_k", _linear(sd, b + "cross_attn.k", ctx_text), eps)
        k_img = _rms(sd, b + "cross_attn.norm_k_img", _linear(sd, b + "cross_attn.k_img", ctx_img), eps)
        out = _attention(q, k, _linear(sd, b + "cross_attn.v", ctx_text), heads)
        out = out + _attention(q, k_img, _linear(sd, b + "cross_attn.v_img", ctx_img), heads)
        x = x + _linear(sd, b + "cross_attn.o", out)
        y = norm(x) * (1 + m[4]) + m[3]
        x = x + _linear(sd, b + "ffn.2", F.gelu(_linear(sd, b + "ffn.0", y), approximate="tanh")) * m[5]
    # head
    m = (sd["head.modulation"] + e[:, None]).chunk(2, dim=1)
    x = _linear(sd, "head.head", norm(x) * (1 + m[1]) + m[0])
    c = cfg["out_dim"]
    x = x.view(batch, f, h, w, 1, 2, 2, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(batch, c, f, h * 2, w * 2)


def save_release(folder, sd, cfg):
    """As the release: diffusion_pytorch_model.safetensors with Wan's names + Wan's config.json."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"_class_name": "WanModel", **cfg}))


def test_converted_transformer_matches_reference_forward(tmp_path):
    sd = wan_layout_weights(TINY)
    save_release(tmp_path / "release", sd, TINY)
    loaded, cfg = read_wan_transformer(tmp_path / "release")
    model = convert_wan_transformer(loaded, cfg)
    assert model.config.in_channels == 36 and model.config.image_dim == 1280
    assert model.config.added_kv_proj_dim == 32 and model.config.cross_attn_norm
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 36, 3, 4, 6, generator=g)
    t = torch.tensor([999.0, 250.0])
    context = torch.randn(2, TINY["text_len"], TINY["text_dim"], generator=g)
    clip = torch.randn(2, IMAGE_TOKENS, 1280, generator=g)
    with torch.no_grad():
        expected = wan_reference_forward(sd, TINY, x, t, context, clip)
        got = model(x, t, context, encoder_hidden_states_image=clip, return_dict=False)[0]
    assert got.shape == expected.shape == (2, 16, 3, 4, 6)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)


def test_every_key_mapped_once_with_matching_shapes():
    sd = wan_layout_weights(TINY)
    model = convert_wan_transformer(dict(sd), dict(TINY))
    targets = [transformer_key(k) for k in sd]
    assert None not in targets and len(set(targets)) == len(targets) == len(model.state_dict())
    for key, target in zip(sd, targets):
        assert torch.equal(model.state_dict()[target], sd[key]), key


def test_missing_and_extra_keys_are_named():
    sd = wan_layout_weights(TINY)
    missing = dict(sd)
    del missing["blocks.1.cross_attn.k_img.weight"]
    with pytest.raises(ModelError, match=r"missing key.*blocks\.1\.attn2\.add_k_proj\.weight"):
        convert_wan_transformer(missing, dict(TINY))
    extra = {**sd, "blocks.0.self_attn.alpha": torch.zeros(1)}
    with pytest.raises(ModelError, match=r"unexpected key.*blocks\.0\.self_attn\.alpha"):
        convert_wan_transformer(extra, dict(TINY))
    wrong = {**sd, "head.head.weight": torch.zeros(3, 32)}
    with pytest.raises(ModelError, match=r"head\.head\.weight has shape \(3, 32\)"):
        convert_wan_transformer(wrong, dict(TINY))


def test_missing_release_files_are_named(tmp_path):
    with pytest.raises(ModelError, match="config.json: missing"):
        read_wan_transformer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    with pytest.raises(ModelError, match="diffusion_pytorch_model.safetensors: missing"):
        read_wan_transformer(tmp_path)


# ---- text encoder: Wan's T5 layout -> transformers UMT5EncoderModel ----

def wan_t5_weights(vocab=50, dim=16, heads=2, dim_ffn=24, layers=2, buckets=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.3  # noqa: E731
    sd = {"token_embedding.weight": r(vocab, dim), "norm.weight": 1 + r(dim)}
    for i in range(layers):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(dim), b + "norm2.weight": 1 + r(dim),
                   b + "pos_embedding.embedding.weight": r(buckets, heads),
                   b + "ffn.gate.0.weight": r(dim_ffn, dim), b + "ffn.fc1.weight": r(dim_ffn, dim),
                   b + "ffn.fc2.weight": r(dim, dim_ffn)})
        for name in "qkvo":
            sd[f"{b}attn.{name}.weight"] = r(dim, dim)
    return sd


def _t5_bucket(rel, num_buckets, max_dist=128):
    """Wan's bidirectional relative-position bucket."""
    half = num_buckets // 2
    bucket = (rel > 0).long() * half
    rel = rel.abs()
    exact = half // 2
    large = exact + (torch.log(rel.float().clamp(min=1) / exact) / math.log(max_dist / exact) * (half - exact)).long()
    large = large.clamp(max=half - 1)
    return bucket + torch.where(rel < exact, rel, large)


def wan_t5_reference(sd, ids, mask, heads, layers):
    """Wan's T5 encoder: pre-RMS-norm blocks, unscaled attention + per-block relative bias, gated tanh-GELU FFN."""
    x = sd["token_embedding.weight"][ids]
    b, n = ids.shape
    rel = torch.arange(n)[None] - torch.arange(n)[:, None]
    rms = lambda y, w: w * (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6))  # noqa: E731
    for i in range(layers):
        p = f"blocks.{i}."
        buckets = sd[p + "pos_embedding.embedding.weight"].shape[0]
        bias = sd[p + "pos_embedding.embedding.weight"][_t5_bucket(rel, buckets)].permute(2, 0, 1)[None]
        bias = bias.masked_fill(mask[:, None, None, :] == 0, torch.finfo(x.dtype).min)
        y = rms(x, sd[p + "norm1.weight"])
        q, k, v = (F.linear(y, sd[f"{p}attn.{c}.weight"]).view(b, n, heads, -1) for c in "qkv")
        att = torch.softmax(torch.einsum("binc,bjnc->bnij", q, k) + bias, dim=-1)
        x = x + F.linear(torch.einsum("bnij,bjnc->binc", att, v).reshape(b, n, -1), sd[p + "attn.o.weight"])
        y = rms(x, sd[p + "norm2.weight"])
        gate = F.gelu(F.linear(y, sd[p + "ffn.gate.0.weight"]), approximate="tanh")
        x = x + F.linear(F.linear(y, sd[p + "ffn.fc1.weight"]) * gate, sd[p + "ffn.fc2.weight"])
    return rms(x, sd["norm.weight"])


def test_text_encoder_matches_wan_t5_reference():
    sd = wan_t5_weights()
    model = convert_wan_t5(dict(sd))
    assert model.config.num_heads == 2 and model.config.d_kv == 8 and model.config.num_layers == 2
    ids = torch.tensor([[3, 7, 9, 1, 0, 0], [4, 4, 5, 6, 2, 1]])
    mask = (torch.arange(6)[None] < torch.tensor([[4], [6]])).long()
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = wan_t5_reference(sd, ids, mask, heads=2, layers=2)
    valid = mask.bool()
    torch.testing.assert_close(got[valid], expected[valid], atol=1e-4, rtol=1e-4)


def test_text_encoder_extra_key_is_named():
    sd = {**wan_t5_weights(), "blocks.0.attn.extra.weight": torch.zeros(2)}
    with pytest.raises(ModelError, match=r"text encoder: 1 unexpected key.*blocks\.0\.attn\.extra\.weight"):
        convert_wan_t5(sd)
