"""From pixels and captions to the tensors the joint model takes, built the way the pipelines build them.

`LatentEncoder` wraps the frozen VAE, text encoder (and CLIP image encoder, for Wan bases that have
one) of a base and produces a *latent batch*, the one format both the on-the-fly path and the
precomputed path of the trainer feed to `training_step`:

    latents              x0: the video's VAE latent, normalised as the pipeline does
                         (Wan (B, 16, F, h, w): (z - mean) / std; CogVideoX (B, F, 16, h, w): z * scale)
    trajectory_latents   the VAE latent of the condition maps, same layout and normalisation
    mask_latents         the VAE latent of the mask-trajectory maps (the L_seg target), when needed
    image_condition      Wan (B, 20, F, h, w): the 4-channel first-frame mask + the normalised latent of
                         [first frame, zeros...] (`WanImageToVideoPipeline.prepare_latents`);
                         Wan2.2 TI2V (`expand_timesteps`, B, 48, 1, h, w): the normalised latent of the
                         first frame alone, which replaces the noisy first latent frame;
                         CogVideoX (B, F, 16, h, w): the first-frame latent padded with zero frames
                         (`CogVideoXImageToVideoPipeline.prepare_latents`)
    prompt_embeds        (B, S, D) from the pipeline's own `encode_prompt`
    image_embeds         Wan bases with a CLIP image branch: (B, 257, 1280) from `encode_image`

Video and trajectory latents are the posterior mean (`mode()`), so a precomputed latent is exactly
the one the on-the-fly path computes. The image condition is computed by calling the diffusers
pipeline's own `prepare_latents` (the CogVideoX one samples the posterior with a per-sample seed).
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from ..errors import ConfigError, ModelError

LATENT_KEYS = ("latents", "trajectory_latents", "mask_latents", "image_condition", "prompt_embeds", "image_embeds")


# ---------------------------------------------------------------------------------------- loading


TRANSFORMERS = {"wan": "WanTransformer3DModel", "cogvideox": "CogVideoXTransformer3DModel"}


def load_transformer_config(base: str, model: str):
    """The base transformer's config (a FrozenDict with attribute access), without loading weights."""
    import diffusers
    from diffusers.configuration_utils import FrozenDict

    from ..hub import resolve_pretrained

    cls = getattr(diffusers, TRANSFORMERS[model])
    base = str(resolve_pretrained(base, "base model", file="model_index.json"))
    try:
        return FrozenDict(cls.load_config(base, subfolder="transformer"))
    except (OSError, EnvironmentError, ValueError) as e:
        raise ModelError(f"{base}/transformer: no transformer config ({e})") from None


ENCODERS = ("vae", "text_encoder", "tokenizer", "scheduler")


def encoder_names(model: str) -> tuple[str, ...]:
    """The frozen components that turn clips into model inputs (plus CLIP for Wan bases that have it)."""
    return ENCODERS + (("image_encoder", "image_processor") if model == "wan" else ())


def encoder_dtypes(device: torch.device | str) -> dict[str, torch.dtype]:
    """On GPUs the text and image encoders run in bfloat16 (UMT5-XXL is 22 GB in float32), as the
    pipelines are usually run; the VAE stays in float32. On CPU everything is float32."""
    if torch.device(device).type == "cuda":
        return {"text_encoder": torch.bfloat16, "image_encoder": torch.bfloat16}
    return {}


def load_base_components(base: str, names: tuple[str, ...], dtype: torch.dtype = torch.float32,
                         dtypes: dict[str, torch.dtype] | None = None) -> dict[str, Any]:
    """Load the named components of a diffusers pipeline folder (or hub id), one subfolder each.

    Only what is asked for is loaded, so a run on precomputed latents never loads the VAE or the text
    encoder. Models load in `dtype`, or `dtypes[name]`. Missing optional components
    (image_encoder, image_processor) come back as None.
    """
    from ..hub import resolve_pretrained

    base = str(resolve_pretrained(base, "base model", file="model_index.json"))  # the cache when offline
    index = _model_index(base)
    out: dict[str, Any] = {}
    for name in names:
        entry = index.get(name)
        if not entry or entry[0] is None or entry[1] is None:
            if name in ("image_encoder", "image_processor"):
                out[name] = None
                continue
            raise ModelError(f"{base}: the pipeline has no {name}/ component (model_index.json)")
        library, class_name = entry
        cls = getattr(importlib.import_module(library), class_name)
        kwargs = {"subfolder": name}
        if hasattr(cls, "dtype") and name not in ("scheduler", "tokenizer", "image_processor"):
            kwargs["dtype"] = (dtypes or {}).get(name, dtype)
        try:
            out[name] = cls.from_pretrained(base, **kwargs)
        except (OSError, EnvironmentError, ValueError) as e:
            raise ModelError(f"{base}/{name}: cannot load {class_name} ({e})") from None
    for key, value in out.items():
        if isinstance(value, torch.nn.Module):
            value.requires_grad_(False).eval()
    return out


def _model_index(base: str) -> dict:
    """model_index.json of a local pipeline folder (read directly) or a hub id."""
    from pathlib import Path

    from ..limits import read_json
    from ..models.allowed import check_model_index

    path = Path(base) / "model_index.json"
    try:  # the libraries and classes it names are checked before anything is imported from them
        if path.is_file():
            return check_model_index(read_json(path, ModelError, "model_index.json"), base)
        if Path(base).exists():
            raise ModelError(f"{base}: no model_index.json (not a diffusers pipeline folder)")
        from diffusers import DiffusionPipeline

        return check_model_index(dict(DiffusionPipeline.load_config(base)), base)
    except (OSError, EnvironmentError, ValueError) as e:
        raise ModelError(f"{base}: not a diffusers pipeline folder or hub id ({e})") from None


def base_layout(base: str) -> dict[str, Any]:
    """How a Wan base runs, from its model_index.json (and VAE config), as diffusers'
    `WanImageToVideoPipeline` reads it:

        boundary_ratio   Wan2.2 I2V-A14B: `transformer` (high noise) runs t >= boundary_ratio *
                         num_train_timesteps, `transformer_2` (low noise) the rest; else None
        two_experts      boundary_ratio set and a transformer_2 component present
        expand_timesteps Wan2.2 TI2V: the first frame goes in as clean latents, one timestep per token
        vae_spatial      the VAE's spatial compression (8; the Wan2.2 VAE 16)
        size_multiple    what width and height must be multiples of: vae_spatial x the patch (2)
    """
    from ..hub import resolve_pretrained

    base = str(resolve_pretrained(base, "base model", file="model_index.json"))
    index = _model_index(base)
    entry = index.get("transformer_2")
    ratio = index.get("boundary_ratio")
    two = ratio is not None and bool(entry) and entry[0] is not None
    try:
        from diffusers import AutoencoderKLWan

        vae = AutoencoderKLWan.load_config(base, subfolder="vae")
    except (OSError, EnvironmentError, ValueError) as e:
        raise ModelError(f"{base}/vae: no VAE config ({e})") from None
    spatial = int(vae.get("scale_factor_spatial") or 8)
    return {"boundary_ratio": None if ratio is None else float(ratio), "two_experts": two,
            "expand_timesteps": bool(index.get("expand_timesteps")), "vae_spatial": spatial,
            "size_multiple": spatial * 2}


def flow_shift_of(scheduler_config) -> float:
    """The sampling shift of a Wan scheduler (UniPC `flow_shift` or FlowMatchEuler `shift`)."""
    cfg = dict(scheduler_config)
    if cfg.get("use_flow_sigmas") or "flow_shift" in cfg:
        return float(cfg.get("flow_shift") or 1.0)
    return float(cfg.get("shift") or 1.0)


# ---------------------------------------------------------------------------------------- encoder


class LatentEncoder:
    """The frozen encoders of a base, turning pixel batches into latent batches.

    Args:
        model: "wan" or "cogvideox".
        components: vae, text_encoder, tokenizer, scheduler, and for Wan bases with a CLIP image
            branch image_encoder / image_processor (see `load_base_components`).
        transformer_config: the base transformer's config (text length, CLIP branch, temporal patch).
        device: where encoding runs.
        expand_timesteps: a Wan2.2 TI2V base (`base_layout`); None: a transformer with as many input as
            output channels is one.
    """

    def __init__(self, model: str, components: dict[str, Any], transformer_config, device: torch.device | str = "cpu",
                 expand_timesteps: bool | None = None):
        self.model = model
        self.device = torch.device(device)
        self.vae = components["vae"]
        self.transformer_config = transformer_config
        # Wan2.2 TI2V (model_index.json's expand_timesteps; by default: a transformer whose input is the
        # latents alone, the first frame in them)
        if expand_timesteps is None:
            expand_timesteps = model == "wan" and transformer_config.get("in_channels") == (
                transformer_config.get("out_channels") or 16)
        self.expand_timesteps = bool(expand_timesteps)
        if model == "wan":
            from diffusers import WanImageToVideoPipeline

            from ..pipelines.pipeline_wan import wan_text_length

            self.pipe = WanImageToVideoPipeline(
                tokenizer=components["tokenizer"], text_encoder=components["text_encoder"], vae=self.vae,
                scheduler=components["scheduler"], image_processor=components.get("image_processor"),
                image_encoder=components.get("image_encoder"), transformer=None,
            )
            self.max_sequence_length = wan_text_length(components["tokenizer"], transformer_config)
            self.uses_image_embeds = transformer_config.get("image_dim") is not None
            if self.uses_image_embeds and components.get("image_encoder") is None:
                raise ModelError("this Wan base has a CLIP image branch but its pipeline has no image_encoder/")
        elif model == "cogvideox":
            from diffusers import CogVideoXImageToVideoPipeline

            if transformer_config.get("patch_size_t"):
                raise ConfigError("training CogVideoX 1.5 (temporal patches) is not supported: use CogVideoX-5B-I2V")
            self.pipe = CogVideoXImageToVideoPipeline(
                tokenizer=components["tokenizer"], text_encoder=components["text_encoder"], vae=self.vae,
                transformer=None, scheduler=components["scheduler"],
            )
            self.max_sequence_length = int(transformer_config["max_text_seq_length"])
            self.uses_image_embeds = False
        else:
            raise ConfigError(f"unknown model {model!r}")
        for m in (self.vae, components.get("text_encoder"), components.get("image_encoder")):
            if m is not None:
                m.to(self.device)

    # ---------------------------------------------------------------------------------- pieces

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor, trajectory: bool = False) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> normalised latents in the base's layout (posterior mean), float32.

        Wan: (z - latents_mean) * (1 / latents_std), (B, 16, F, h, w), the arithmetic of
        `WanImageToVideoPipeline.prepare_latents` and of the MagicMotion pipeline's trajectory latents.
        CogVideoX: z * scaling_factor, (B, F, 16, h, w) (trajectory maps of a VAE with
        `invert_scale_latents`: z / scaling_factor, as the MagicMotion pipeline encodes them).
        """
        video = video.to(self.device, self.vae.dtype)
        z = self.vae.encode(video).latent_dist.mode().float()
        if self.model == "wan":
            mean, inv_std = _wan_stats(self.vae, z)
            return (z - mean) * inv_std
        scale = self.vae.config.scaling_factor
        z = z / scale if trajectory and self.vae.config.get("invert_scale_latents") else z * scale
        return z.permute(0, 2, 1, 3, 4).contiguous()

    @torch.no_grad()
    def encode_prompt(self, captions: list[str]) -> torch.Tensor:
        """Captions -> (B, S, D) float32 with the pipeline's `encode_prompt` (S = `wan_text_length` for
        Wan, the transformer's `max_text_seq_length` (226) for CogVideoX)."""
        embeds, _ = self.pipe.encode_prompt(
            prompt=list(captions), negative_prompt=None, do_classifier_free_guidance=False,
            num_videos_per_prompt=1, max_sequence_length=self.max_sequence_length, device=self.device,
        )
        return embeds.float()

    @torch.no_grad()
    def image_condition(self, first_frames: torch.Tensor, num_frames: int, seeds: list[int] | None = None) -> torch.Tensor:
        """(B, 3, H, W) first frames in [-1, 1] -> the image condition as the I2V pipeline builds it.

        Wan (`WanImageToVideoPipeline.prepare_latents`): the latent (mode) of [first frame, T - 1 black
        frames], normalised, after a mask of 4 channels per latent frame that is 1 on frame 0:
        (B, 4 + 16, F, h, w). Wan2.2 TI2V (`expand_timesteps`): the normalised latent (mode) of the first
        frame alone, (B, 48, 1, h, w). CogVideoX (`CogVideoXImageToVideoPipeline.prepare_latents`): the first
        frame's latent (a posterior sample, seeded per sample by `seeds`) times the scaling factor,
        padded with zero latent frames: (B, F, 16, h, w). Batched; equal to the pipelines' per image.
        """
        b, _, h, w = first_frames.shape
        frames = first_frames.to(self.device, self.vae.dtype).unsqueeze(2)
        latent_frames = (num_frames - 1) // 4 + 1
        if self.expand_timesteps:  # `prepare_latents` with expand_timesteps: the first frame alone
            z = self.vae.encode(frames).latent_dist.mode().float()
            mean, inv_std = _wan_stats(self.vae, z)
            return (z - mean) * inv_std
        if self.model == "wan":
            video = torch.cat([frames, frames.new_zeros(b, 3, num_frames - 1, h, w)], dim=2)
            z = self.vae.encode(video).latent_dist.mode().float()
            mean, inv_std = _wan_stats(self.vae, z)
            z = (z - mean) * inv_std
            lh, lw = z.shape[-2:]
            mask = torch.ones(b, 1, num_frames, lh, lw)
            mask[:, :, 1:] = 0
            mask = torch.cat([mask[:, :, 0:1].repeat_interleave(4, dim=2), mask[:, :, 1:]], dim=2)
            mask = mask.view(b, -1, 4, lh, lw).transpose(1, 2).to(z.device)
            return torch.cat([mask, z], dim=1)
        seeds = seeds if seeds is not None else [0] * b
        latents = []
        for i in range(b):
            generator = torch.Generator(self.device).manual_seed(int(seeds[i]))
            latents.append(self.vae.encode(frames[i:i + 1]).latent_dist.sample(generator))
        z = torch.cat(latents).float().permute(0, 2, 1, 3, 4)  # (B, 1, C, h, w)
        scale = self.vae.config.scaling_factor
        z = z / scale if self.vae.config.get("invert_scale_latents") else z * scale
        return torch.cat([z, z.new_zeros(b, latent_frames - 1, *z.shape[2:])], dim=1)

    @torch.no_grad()
    def image_embeds(self, first_frames: torch.Tensor) -> torch.Tensor | None:
        """Wan bases with a CLIP image branch: (B, 257, 1280) from the pipeline's `encode_image`."""
        if not self.uses_image_embeds:
            return None
        from PIL import Image

        pixels = ((first_frames.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return self.pipe.encode_image([Image.fromarray(p) for p in pixels], device=self.device).float()

    # ---------------------------------------------------------------------------------- batches

    @torch.no_grad()
    def encode(self, batch: dict[str, Any], need_mask: bool = False) -> dict[str, Any]:
        """A pixel batch from `ClipConditions` -> a latent batch (see the module docstring).

        With `need_mask`, `mask_latents` is the latent of `batch["mask"]`, or of the trajectory maps
        themselves when the condition is the mask kind (the batch then has no separate "mask").
        """
        video = batch["video"]
        out: dict[str, Any] = {
            "latents": self.encode_video(video),
            "trajectory_latents": self.encode_video(batch["trajectory"], trajectory=True),
            "image_condition": self.image_condition(video[:, :, 0], video.shape[2], _seeds(batch)),
            "prompt_embeds": self.encode_prompt(batch["caption"]),
        }
        if need_mask:
            out["mask_latents"] = (self.encode_video(batch["mask"], trajectory=True) if "mask" in batch
                                   else out["trajectory_latents"])
        embeds = self.image_embeds(video[:, :, 0])
        if embeds is not None:
            out["image_embeds"] = embeds
        for key in ("drop_image", "id", "seed"):
            if key in batch:
                out[key] = batch[key]
        return out


def _wan_stats(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents_mean, 1 / latents_std) shaped (1, z, 1, 1, 1), built as diffusers' Wan pipelines do."""
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(like.device, like.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(like.device, like.dtype)
    return mean, inv_std


def _seeds(batch: dict[str, Any]) -> list[int] | None:
    seeds = batch.get("seed")
    if seeds is None:
        return None
    return [int(s) for s in (seeds.tolist() if torch.is_tensor(seeds) else seeds)]


# ---------------------------------------------------------------------------------------- model inputs


def drop_image_condition(model: str, image_condition: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
    """Zero the first-frame latents of the samples flagged in `drop` (B,) bool (image-condition dropout,
    as CogVideoX I2V training does). Wan keeps its 4 first-frame-mask channels."""
    if drop is None or not bool(drop.any()):
        return image_condition
    keep = (~drop.bool()).to(image_condition.device, image_condition.dtype)
    keep = keep.view(-1, *([1] * (image_condition.ndim - 1)))
    if model == "wan":
        return torch.cat([image_condition[:, :4], image_condition[:, 4:] * keep], dim=1)
    return image_condition * keep


def first_frame_keep(latents: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
    """Wan2.2 TI2V: (B, 1, F, 1, 1), 0 on the first latent frame (kept clean: the image), 1 on the frames
    that are noised and predicted (diffusers' `first_frame_mask`). A sample flagged in `drop` is a
    text-to-video sample, as the TI2V base runs without an image: every frame noised."""
    b, _, f = latents.shape[:3]
    keep = torch.ones(b, 1, f, 1, 1, device=latents.device, dtype=latents.dtype)
    keep[:, :, 0] = 0
    if drop is not None:
        keep[drop.to(latents.device).bool().view(-1)] = 1
    return keep


def ti2v_inputs(noisy: torch.Tensor, condition: torch.Tensor, keep: torch.Tensor,
                timestep: torch.Tensor, patch_size) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan2.2 TI2V's transformer input as `WanImageToVideoPipeline.__call__` builds it with
    `expand_timesteps`: the first latent frame replaced by the image latents, `(1 - keep) * condition +
    keep * noisy`, and one timestep per token, `keep * t` (0 on the clean frame's tokens): ((B, C, F, h, w),
    (B, F * h/p * w/p))."""
    condition = condition.to(noisy.device, noisy.dtype)
    hidden = (1 - keep) * condition + keep * noisy
    _, p_h, p_w = patch_size
    b, _, f, h, w = noisy.shape
    per_frame = keep.view(b, f, 1) * timestep.to(noisy.device).view(b, 1, 1)
    return hidden, per_frame.expand(b, f, (h // p_h) * (w // p_w)).reshape(b, -1)


def base_inputs(model: str, base_config, noisy: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
    """(hidden_states for the base, extra base kwargs) from noisy latents and a latent batch.

    Wan: cat([x_t, mask (4), image latents (16)], channels) = 36 channels, plus
    `encoder_hidden_states_image` for CLIP bases (Wan2.2 TI2V: `ti2v_inputs` instead). CogVideoX:
    cat([x_t, image latents], channels) (B, F, 32, h, w), plus `image_rotary_emb` and `ofs` (2.0 where
    the base has an ofs embedding), as `CogVideoXImageToVideoPipeline.__call__` passes them.
    """
    condition = batch["image_condition"].to(noisy.device, noisy.dtype)
    if model == "wan":
        kwargs = {}
        if batch.get("image_embeds") is not None:
            kwargs["encoder_hidden_states_image"] = batch["image_embeds"].to(noisy.device, noisy.dtype)
        return torch.cat([noisy, condition], dim=1), kwargs

    from ..models import cogvideox_rotary_embedding

    _, frames, _, height, width = noisy.shape
    kwargs = {}
    if base_config.use_rotary_positional_embeddings:
        kwargs["image_rotary_emb"] = cogvideox_rotary_embedding(base_config, frames, height, width, device=noisy.device)
    if base_config.get("ofs_embed_dim"):
        kwargs["ofs"] = noisy.new_full((1,), fill_value=2.0)
    return torch.cat([noisy, condition], dim=2), kwargs
