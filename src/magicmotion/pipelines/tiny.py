"""Tiny random pipeline components built in code (no downloads), for tests, benchmarks and the tiny model.

`tiny_wan_components()` returns the keyword arguments of diffusers' `WanImageToVideoPipeline` (and of
`MagicMotionWanPipeline` without its ControlNet) laid out like Wan2.1 image-to-video without the CLIP image branch:
a word-level tokenizer, a tiny `UMT5EncoderModel`, no CLIP image encoder, a tiny `AutoencoderKLWan`
(16 latent channels, x4 in time, x8 in space), `WanTransformer3DModel(in_channels=36)` from
`magicmotion.models.tiny_wan_transformer` and a flow-matching `UniPCMultistepScheduler` as Wan uses.

`tiny_cogvideox_components()` does the same for `CogVideoXImageToVideoPipeline`: a tiny
`T5EncoderModel`, a tiny `AutoencoderKLCogVideoX` and `CogVideoXDPMScheduler` (v-prediction) with
CogVideoX-5B-I2V's settings.

Weights are random but deterministic (`seed`); the global torch RNG is left untouched. Text width is
16 throughout, matching the tiny transformers' `text_dim` / `text_embed_dim`.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..models.tiny import seeded

# Words for the default vocabulary: enough to write captions of the synthetic world.
DEFAULT_VOCABULARY = (
    "a an the and of on in to with from at is are moves move moving goes slides rolls jumps flies "
    "falls rises turns walks runs left right up down across over under toward away around slowly "
    "quickly fast slow small large big tiny red green blue yellow orange purple pink white black "
    "gray brown cyan magenta square circle disc ball box car dog cat person bird boat plane object "
    "objects background scene video camera static still two three one"
).split()

TEXT_DIM = 16


def tiny_tokenizer(vocabulary: Iterable[str] | None = None, max_length: int = 512):
    """A word-level `PreTrainedTokenizerFast` (lower-cased, split on whitespace and punctuation).

    Ids: 0 `<pad>`, 1 `</s>` (appended to every text, as T5 does), 2 `<unk>`, then the words in order.
    max_length: `model_max_length`; a Wan pipeline pads prompts to it when it is under 512.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys(w.lower() for w in (vocabulary or DEFAULT_VOCABULARY)))
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=max_length
    )


def _text_encoder_config(tokenizer, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The config of the tiny T5 / UMT5 text encoder (one layer, width TEXT_DIM), with `overrides`."""
    config = dict(
        vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    config.update(overrides or {})
    return config


def tiny_wan_components(
    seed: int = 0,
    vocabulary: Iterable[str] | None = None,
    transformer: dict[str, Any] | None = None,
    vae: dict[str, Any] | None = None,
    text_encoder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Components of a tiny Wan2.1 image-to-video pipeline (no CLIP image branch).

    Args:
        seed: weight initialisation seed (each model gets its own offset of it).
        vocabulary: tokenizer words (default `DEFAULT_VOCABULARY`).
        transformer, vae, text_encoder: config overrides for `tiny_wan_transformer`,
            `AutoencoderKLWan` and `UMT5Config`.
    Returns:
        dict(tokenizer, text_encoder, vae, scheduler, transformer, image_encoder=None,
        image_processor=None): `WanImageToVideoPipeline(**components)` works.
    """
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    from ..models.tiny import tiny_wan_transformer

    # Twin of tiny_cogvideox_components (text encoder seed + 1, VAE seed + 2, transformer seed + 3) with
    # Wan's classes and configs; change both
    tokenizer = tiny_tokenizer(vocabulary)
    te_cfg = _text_encoder_config(tokenizer, text_encoder)
    text = seeded(seed + 1, lambda: UMT5EncoderModel(UMT5Config(**te_cfg)).eval())

    vae_cfg = dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 2, 2], num_res_blocks=1,
                   temperal_downsample=[False, True, True])
    vae_cfg.update(vae or {})
    vae_model = seeded(seed + 2, lambda: AutoencoderKLWan(**vae_cfg).eval())

    tr_cfg = dict(text_dim=te_cfg["d_model"])
    tr_cfg.update(transformer or {})
    base = tiny_wan_transformer(seed=seed + 3, **tr_cfg)

    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
    )
    return dict(tokenizer=tokenizer, text_encoder=text, vae=vae_model, scheduler=scheduler, transformer=base,
                image_encoder=None, image_processor=None)


def tiny_wan22_components(variant: str, seed: int = 0) -> dict[str, Any]:
    """Components of a tiny Wan2.2 image-to-video pipeline, `WanImageToVideoPipeline(**components)`:

    - "ti2v" (TI2V-5B layout): `expand_timesteps=True`, the Wan2.2 VAE (48 latent channels,
      `is_residual`, patch 2, x16 in space), a transformer with 48 input and output channels.
    - "a14b" (I2V-A14B layout): two experts, `transformer` (high noise) and `transformer_2` (low noise),
      switched at `boundary_ratio=0.9` (A14B's I2V value), on the Wan2.1 VAE and 36 input channels.
    """
    from ..models.tiny import tiny_wan_transformer

    if variant == "ti2v":
        z = 48
        vae = dict(z_dim=z, is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
                   latents_mean=[round(0.05 * (i % 7 - 3), 2) for i in range(z)],
                   latents_std=[round(1.0 + 0.1 * (i % 5), 2) for i in range(z)])
        parts = tiny_wan_components(seed, transformer=dict(in_channels=z, out_channels=z), vae=vae)
        return parts | dict(transformer_2=None, boundary_ratio=None, expand_timesteps=True)
    if variant == "a14b":
        parts = tiny_wan_components(seed)
        low = tiny_wan_transformer(seed=seed + 4, text_dim=TEXT_DIM)
        return parts | dict(transformer_2=low, boundary_ratio=0.9, expand_timesteps=False)
    raise ValueError(f"unknown Wan2.2 variant {variant!r}: expected ti2v or a14b")


def tiny_cogvideox_components(
    seed: int = 0,
    vocabulary: Iterable[str] | None = None,
    transformer: dict[str, Any] | None = None,
    vae: dict[str, Any] | None = None,
    text_encoder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Components of a tiny CogVideoX image-to-video pipeline (5B-I2V layout, rotary embeddings).

    The transformer's text length is `max_text_seq_length` = 8 tokens: call the pipelines with
    `max_sequence_length=8` (MagicMotion's CogVideoX pipeline does this by default).

    Returns:
        dict(tokenizer, text_encoder, vae, transformer, scheduler):
        `CogVideoXImageToVideoPipeline(**components)` works.
    """
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler
    from transformers import T5Config, T5EncoderModel

    from ..models.tiny import tiny_cogvideox_transformer

    # Twin of tiny_wan_components, with CogVideoX's classes and configs
    tokenizer = tiny_tokenizer(vocabulary)
    te_cfg = _text_encoder_config(tokenizer, text_encoder)
    text = seeded(seed + 1, lambda: T5EncoderModel(T5Config(**te_cfg)).eval())

    vae_cfg = dict(
        block_out_channels=(8, 8, 16, 16), latent_channels=16, layers_per_block=1, norm_num_groups=4,
        temporal_compression_ratio=4, sample_height=64, sample_width=64, scaling_factor=0.7,
    )
    vae_cfg.update(vae or {})
    vae_model = seeded(seed + 2, lambda: AutoencoderKLCogVideoX(**vae_cfg).eval())

    tr_cfg = dict(text_embed_dim=te_cfg["d_model"])
    tr_cfg.update(transformer or {})
    base = tiny_cogvideox_transformer(seed=seed + 3, **tr_cfg)

    # CogVideoX-5B-I2V's scheduler settings
    scheduler = CogVideoXDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True,
        snr_shift_scale=1.0, steps_offset=0, timestep_spacing="trailing", num_train_timesteps=1000,
    )
    return dict(tokenizer=tokenizer, text_encoder=text, vae=vae_model, transformer=base, scheduler=scheduler)


__all__ = ["DEFAULT_VOCABULARY", "tiny_cogvideox_components", "tiny_tokenizer", "tiny_wan22_components",
           "tiny_wan_components"]
