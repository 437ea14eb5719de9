"""Wan2.1-Fun (Wan's own layout) -> diffusers: tiny models saved as the release saves them, converted,
and compared with reference forwards written here from the structure of Wan's model code (transformer,
umT5, CLIP vision tower) or with the diffusers model whose weights they are (VAE); the whole release
folder through `magicmotion convert wan-fun`."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from wan_release import TINY, wan_layout_weights, wan_t5_weights

from magicmotion.errors import ModelError
from magicmotion.models.convert_wan_fun import (
    convert_wan_t5,
    convert_wan_transformer,
    read_wan_transformer,
    transformer_key,
)

IMAGE_TOKENS = 257  # Wan splits the context at 257 image tokens; diffusers takes the last 512 as text


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
    assert expected.abs().max() > 0.1  # measured 5.05
    # float32, the same maths in another order: measured 1.3e-5 at |x| up to 5 (was atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


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
    # float32 rounding of the T5 layers in another order: measured 2.1e-6 (was atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[valid], expected[valid], atol=2e-5, rtol=0)


def test_text_encoder_extra_key_is_named():
    sd = {**wan_t5_weights(), "blocks.0.attn.extra.weight": torch.zeros(2)}
    with pytest.raises(ModelError, match=r"text encoder: 1 unexpected key.*blocks\.0\.attn\.extra\.weight"):
        convert_wan_t5(sd)


# ---- image encoder: the vision tower of Wan's open-clip CLIP -> transformers CLIPVisionModel ----

def wan_clip_reference(sd, pixels, heads):
    """Wan's VisionTransformer (pool 'token', pre-norm, exact-GELU MLP) run with `use_31_block`: every
    block but the last, no post-norm. pixels (B, 3, H, W) normalised -> (B, 1 + patches, D)."""
    x = F.conv2d(pixels, sd["visual.patch_embedding.weight"], stride=sd["visual.patch_embedding.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2)
    b, _, dim = x.shape
    x = torch.cat([sd["visual.cls_embedding"].expand(b, -1, -1), x], dim=1) + sd["visual.pos_embedding"]
    ln = lambda y, name: F.layer_norm(y, (dim,), sd[name + ".weight"], sd[name + ".bias"], 1e-5)  # noqa: E731
    x = ln(x, "visual.pre_norm")
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("visual.transformer."))
    for i in range(layers - 1):
        p = f"visual.transformer.{i}."
        q, k, v = _linear(sd, p + "attn.to_qkv", ln(x, p + "norm1")).view(b, -1, 3, heads, dim // heads).unbind(2)
        att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + _linear(sd, p + "attn.proj", att.transpose(1, 2).reshape(b, -1, dim))
        x = x + _linear(sd, p + "mlp.2", F.gelu(_linear(sd, p + "mlp.0", ln(x, p + "norm2"))))
    return x


def test_clip_vision_tower_matches_wan_reference(tmp_path):
    from wan_release import CLIP_FILE, wan_clip_weights

    from magicmotion.models.convert_wan_fun import read_wan_clip

    sd = wan_clip_weights(dim=160, layers=3, patch=14, grid=2)
    torch.save(sd, tmp_path / CLIP_FILE)  # as the release: the whole XLMRobertaCLIP state dict
    encoder, processor = read_wan_clip(tmp_path)
    assert (encoder.config.hidden_size, encoder.config.num_attention_heads, encoder.config.num_hidden_layers,
            encoder.config.image_size, encoder.config.hidden_act) == (160, 2, 3, 28, "gelu")
    pixels = processor(images=torch.rand(2, 3, 40, 56), do_rescale=False, return_tensors="pt").pixel_values
    assert pixels.shape == (2, 3, 28, 28)
    with torch.no_grad():
        got = encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]  # diffusers' encode_image
        expected = wan_clip_reference(sd, pixels, heads=2)
    assert got.shape == expected.shape == (2, 5, 160) and expected.abs().max() > 0.5  # measured 13.4
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)  # measured 0: the same ops in order
    # the last block does run in the full model: its output differs from Wan's 31-block output (by 8.7)
    assert (encoder(pixel_values=pixels).last_hidden_state - expected).abs().max() > 1e-2


def test_clip_bad_weights_are_named():
    from wan_release import wan_clip_weights

    from magicmotion.models.convert_wan_fun import convert_wan_clip

    sd = wan_clip_weights(dim=160, layers=2)
    with pytest.raises(ModelError, match=r"image encoder: 1 unexpected key.*visual\.transformer\.0\.attn\.alpha"):
        convert_wan_clip({**sd, "visual.transformer.0.attn.alpha.weight": torch.zeros(1)})
    missing = {k: v for k, v in sd.items() if k != "visual.transformer.1.mlp.2.bias"}
    with pytest.raises(ModelError, match=r"missing key.*encoder\.layers\.1\.mlp\.fc2\.bias"):
        convert_wan_clip(missing)
    with pytest.raises(ModelError, match=r"width 100.*multiple of 80"):
        convert_wan_clip(wan_clip_weights(dim=100, layers=1))


# ---- VAE: Wan's layout -> AutoencoderKLWan, via diffusers' converter ----

def test_vae_converts_back_to_the_diffusers_model_it_came_from(tmp_path):
    """The reference is the diffusers AutoencoderKLWan whose weights, renamed to Wan's layout (key set and
    shapes checked against Wan's VAE structure in `wan_release.wan_vae_shapes`), were converted."""
    from wan_release import wan_vae_weights

    from magicmotion.models.convert_wan_fun import _read, convert_wan_vae

    sd, source = wan_vae_weights(dim=4)
    torch.save(sd, tmp_path / "Wan2.1_VAE.pth")
    vae = convert_wan_vae(_read(tmp_path / "Wan2.1_VAE.pth"))
    assert vae.config.base_dim == 4 and vae.config.z_dim == 16
    video = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z = source.encode(video).latent_dist.mode()
        torch.testing.assert_close(vae.encode(video).latent_dist.mode(), z, atol=0, rtol=0)
        decoded = source.decode(z).sample
        torch.testing.assert_close(vae.decode(z).sample, decoded, atol=0, rtol=0)
    assert z.shape == (1, 16, 3, 4, 4) and z.std() > 0.01 and decoded.std() > 0.01  # measured 0.15, 0.24
    broken = {k: v for k, v in sd.items() if k != "decoder.upsamples.4.shortcut.weight"}
    with pytest.raises(ModelError, match=r"VAE.*missing key.*decoder\.up_blocks\.1\.resnets\.0\.conv_shortcut\.weight"):
        convert_wan_vae(broken)


# ---- the whole release folder through the CLI ----

def test_convert_wan_fun_cli_writes_a_diffusers_i2v_folder(tmp_path, capsys):
    from diffusers import WanImageToVideoPipeline
    from safetensors.torch import load_file
    from transformers import CLIPImageProcessor, CLIPVisionModel
    from wan_release import write_release

    from magicmotion.cli import main

    src = write_release(tmp_path / "Wan2.1-Fun-1.3B-InP")
    out = tmp_path / "models" / "Wan2.1-Fun-1.3B-InP-Diffusers"
    assert main(["convert", "wan-fun", str(src), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out and not out.with_name(out.name + ".partial").exists()
    pipe = WanImageToVideoPipeline.from_pretrained(out)
    assert isinstance(pipe.image_encoder, CLIPVisionModel) and isinstance(pipe.image_processor, CLIPImageProcessor)
    assert pipe.transformer.config.image_dim == pipe.image_encoder.config.hidden_size == 160
    assert pipe.image_processor.crop_size == {"height": 28, "width": 28}
    release = load_file(str(src / "diffusion_pytorch_model.safetensors"))
    for key, value in release.items():
        assert torch.equal(pipe.transformer.state_dict()[transformer_key(key)], value), key
    clip = torch.load(src / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth", weights_only=True)
    q = pipe.image_encoder.state_dict()["encoder.layers.2.self_attn.q_proj.weight"]
    assert torch.equal(q, clip["visual.transformer.2.attn.to_qkv.weight"][:160])
    assert pipe.scheduler.config.flow_shift == 3.0 and pipe.tokenizer("a red ball").input_ids[-1] == 1

    # an existing CLIPVisionModel folder instead of the release's CLIP file; a width that does not fit
    pipe.image_encoder.save_pretrained(tmp_path / "clip" / "image_encoder")
    pipe.image_processor.save_pretrained(tmp_path / "clip" / "image_processor")
    again = tmp_path / "again"
    assert main(["convert", "wan-fun", str(src), "--out", str(again),
                 "--image-encoder", str(tmp_path / "clip" / "image_encoder")]) == 0
    assert WanImageToVideoPipeline.from_pretrained(again).image_encoder.config.hidden_size == 160
    narrow = CLIPVisionModel(type(pipe.image_encoder.config)(hidden_size=80, intermediate_size=32, num_hidden_layers=1,
                                                             num_attention_heads=1, image_size=28, patch_size=14))
    narrow.save_pretrained(tmp_path / "narrow" / "image_encoder")
    pipe.image_processor.save_pretrained(tmp_path / "narrow" / "image_processor")
    capsys.readouterr()
    assert main(["convert", "wan-fun", str(src), "--out", str(tmp_path / "bad"),
                 "--image-encoder", str(tmp_path / "narrow" / "image_encoder")]) == 2
    assert "width 80, the transformer's image branch takes 160" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

    # a release without its CLIP file: named, nothing written
    (src / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth").unlink()
    assert main(["convert", "wan-fun", str(src), "--out", str(tmp_path / "noclip")]) == 2
    assert "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth: missing" in capsys.readouterr().err
    assert not (tmp_path / "noclip").exists()
    index = json.loads((out / "model_index.json").read_text())
    assert index["image_encoder"] == ["transformers", "CLIPVisionModel"]
    assert index["image_processor"] == ["transformers", "CLIPImageProcessor"]  # as the hub's Wan folders


def test_release_sizes_convert_to_the_published_configs():
    """At the release's real sizes, on the meta device (shapes only, no memory): Wan2.1-Fun-1.3B-InP's
    transformer, VAE, umT5 and CLIP shapes convert to the published diffusers / transformers configs
    (src/magicmotion/models/known_configs/wan2.1-fun-1.3b-inp.json)."""
    from pathlib import Path

    from wan_release import wan_clip_weights, wan_vae_shapes

    from magicmotion.models.convert_wan_fun import convert_wan_clip, convert_wan_vae

    known = json.loads((Path(__file__).resolve().parents[2] / "src/magicmotion/models/known_configs/"
                        "wan2.1-fun-1.3b-inp.json").read_text())["parts"]
    fun = {"dim": 1536, "ffn_dim": 8960, "freq_dim": 256, "in_dim": 36, "out_dim": 16, "num_heads": 12,
           "num_layers": 30, "text_dim": 4096, "model_type": "i2v", "eps": 1e-6, "text_len": 512}
    models = {
        "transformer": convert_wan_transformer(wan_layout_weights(fun, clip_dim=1280, meta=True), fun),
        "vae": convert_wan_vae({k: torch.empty(s, device="meta") for k, s in wan_vae_shapes(96).items()}),
        "text_encoder": convert_wan_t5(wan_t5_weights(vocab=256384, dim=4096, heads=64, dim_ffn=10240, layers=24,
                                                      buckets=32, meta=True)),
        "image_encoder": convert_wan_clip(wan_clip_weights(dim=1280, layers=32, patch=14, grid=16, meta=True)),
    }
    for part, model in models.items():
        library, cls, published = known[part]
        assert type(model).__name__ == cls, part
        config = dict(model.config) if part in ("transformer", "vae") else model.config.to_dict()
        for key, value in published.items():
            if key == "tie_word_embeddings":  # transformers 5 forces True for the T5 family; no LM head here
                continue
            got = config[key]
            assert (list(got) if isinstance(got, (tuple, list)) else got) == value, (part, key, got, value)


def test_a_truncated_clip_file_is_named_and_nothing_is_written(tmp_path, capsys):
    from wan_release import CLIP_FILE, write_release

    from magicmotion.cli import main

    src = write_release(tmp_path / "release")
    data = (src / CLIP_FILE).read_bytes()
    (src / CLIP_FILE).write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert main(["convert", "wan-fun", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert CLIP_FILE in err and "unreadable checkpoint" in err and len(err.splitlines()) == 1
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_convert_of_an_incomplete_release_says_one_line(tmp_path, capsys):
    """Issue 38: an empty folder printed a stray progress line ("transformer") before its error; now every
    missing file is named in the one error line, and nothing is printed before it."""
    from magicmotion.cli import main

    (tmp_path / "release").mkdir()  # empty; the output beside it, not inside (the output guard)
    assert main(["convert", "wan-fun", str(tmp_path / "release"), "--out", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    for name in ("config.json", "diffusion_pytorch_model.safetensors", "Wan2.1_VAE.pth",
                 "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/", "hf download alibaba-pai/Wan2.1-Fun-1.3B-InP"):
        assert name in err, name
    assert not (tmp_path / "out").exists()
