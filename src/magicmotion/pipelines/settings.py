"""Recommended settings that travel with a model.

A model folder may carry `magicmotion.json`: the settings its makers recommend (guidance, steps, size
or area, frames, fps, the trajectory palette, how trajectory maps are encoded, how image and maps are
resized, the sampler, VAE tiling). `generate`, `bench run`,
the app and the Python API use them unless told otherwise, whichever way the model was named (no
`--base`, the folder's path, or a hub id), and record where each value came from:

    argument  >  ControlNet folder's magicmotion.json
              >  ControlNet config (the trajectory palette it was trained with; a checkpoint imported
                 from the authors' release: the release's settings)
              >  base folder's magicmotion.json  >  the base family's defaults

The family defaults are the paper's (guidance 6, 50 steps) with each base's own frame rate and size:
Wan2.1 480P and Wan2.2 I2V-A14B (about 832x480 pixels, 81 frames, 16 fps), Wan2.2 TI2V-5B (about
1280x704, 121 frames, 24 fps; told apart by its transformer, whose input is its 48 latent channels),
CogVideoX-5B-I2V (its sample size, 49 frames, 8 fps).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError

SETTINGS_FILE = "magicmotion.json"
PALETTES = ("voc", "release")
MAP_ENCODINGS = ("mode", "sample")
# "cover": image and maps resized to cover the output size and centre-cropped together (ours);
# "stretch": each resized straight to the output size with PIL Lanczos (the authors' release);
# "pad": resized to fit inside the output size, the rest black (nothing cut, nothing distorted).
RESIZES = ("cover", "stretch", "pad")
# `generate --fit`'s names for them
FITS = {"crop": "cover", "pad": "pad", "stretch": "stretch"}
# a default size may differ from the input's aspect ratio by this much (a crop of at most 2% of a side)
ASPECT_SLACK = 0.02
# a sampler other than the base folder's (by class name; diffusers' classes only)
SCHEDULERS = ("CogVideoXDPMScheduler", "CogVideoXDDIMScheduler", "UniPCMultistepScheduler",
              "FlowMatchEulerDiscreteScheduler")

# name -> (check, what it must be)
_FIELDS = {
    "guidance_scale": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "num_inference_steps": (lambda v: _integer(v) and 1 <= v <= 1000, "an integer in 1..1000"),
    "size": (lambda v: isinstance(v, list) and len(v) == 2 and all(_integer(x) and 1 <= x <= 8192 for x in v),
             "[width, height]"),
    "area": (lambda v: _integer(v) and 1 <= v <= 8192 * 8192, "a pixel count"),
    "num_frames": (lambda v: _integer(v) and v >= 1 and (v - 1) % 4 == 0, "an integer 4k + 1"),
    "fps": (lambda v: _number(v) and 0 < v <= 240, "a number in (0, 240]"),
    "trajectory_palette": (lambda v: v in PALETTES, " or ".join(PALETTES)),
    "map_encoding": (lambda v: v in MAP_ENCODINGS, " or ".join(MAP_ENCODINGS)),
    "resize": (lambda v: v in RESIZES, " or ".join(RESIZES)),
    "scheduler": (lambda v: v in SCHEDULERS, " or ".join(SCHEDULERS)),
    "vae_tiling": (lambda v: isinstance(v, bool), "true or false"),
}
FIELDS = tuple(_FIELDS)

FAMILY_DEFAULTS = {
    "wan": {"guidance_scale": 6.0, "num_inference_steps": 50, "area": 832 * 480, "num_frames": 81, "fps": 16.0,
            "trajectory_palette": "voc", "map_encoding": "mode", "resize": "cover", "vae_tiling": False},
    # Wan2.2 TI2V-5B: Wan2.2's ti2v_5B config (720P = 1280x704, 121 frames at 24 fps)
    "wan-ti2v": {"area": 1280 * 704, "num_frames": 121, "fps": 24.0},
    "cogvideox": {"guidance_scale": 6.0, "num_inference_steps": 50, "size": [720, 480], "num_frames": 49,
                  "fps": 8.0, "trajectory_palette": "voc", "map_encoding": "mode", "resize": "cover",
                  "vae_tiling": False},
}


MODELS = ("wan", "cogvideox")


def is_ti2v(transformer_config: dict) -> bool:
    """A Wan2.2 TI2V base: its transformer's input is its latents alone (the first frame in them)."""
    return transformer_config.get("in_channels") == transformer_config.get("out_channels")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class ModelSettings:
    """Settings with the source of each value (`sources[name]`: "argument", a file path, "ControlNet
    config" or "<family> defaults")."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str):
        return self.values.get(name)

    def get(self, name: str, default=None):
        return self.values.get(name, default)

    def update(self, values: dict[str, Any], source: str, override: bool = False) -> None:
        """Take `values` (None values ignored) from `source`; existing values win unless `override`."""
        for k, v in values.items():
            if v is None or k not in _FIELDS or (k in self.values and not override):
                continue
            self.values[k] = v
            self.sources[k] = source

    def with_arguments(self, **given) -> "ModelSettings":
        """A copy where the given (non-None) arguments replace the model's values."""
        out = ModelSettings(dict(self.values), dict(self.sources))
        out.update({k: v for k, v in given.items() if v is not None}, "argument", override=True)
        return out

    def record(self) -> dict[str, Any]:
        """{"values": ..., "sources": ...} for a settings JSON."""
        return {"values": dict(self.values), "sources": dict(self.sources)}


def read_settings_file(folder: str | os.PathLike) -> dict[str, Any]:
    """A folder's `magicmotion.json` checked field by field ({} when there is none)."""
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: unreadable model settings ({e})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: model settings must be a JSON object")
    for k, v in data.items():
        if k.startswith("_"):
            continue
        if k not in _FIELDS:
            raise ModelError(f"{path}: unknown setting {k!r} (known: {', '.join(FIELDS)})")
        check, what = _FIELDS[k]
        if not check(v):
            raise ModelError(f"{path}: {k} must be {what}, got {v!r}")
    return {k: v for k, v in data.items() if not k.startswith("_")}


def write_settings_file(folder: str | os.PathLike, values: dict[str, Any], note: str | None = None) -> Path:
    """Write a folder's `magicmotion.json` (checked as it would be read)."""
    from ..io import atomic_path

    folder = Path(folder)
    data = ({"_note": note} if note else {}) | {k: v for k, v in values.items() if v is not None}
    path = folder / SETTINGS_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    read_settings_file(folder)
    return path


def _local_folder(name) -> Path | None:
    if name is None or not isinstance(name, (str, os.PathLike)):
        return None
    p = Path(name)
    return p if p.is_dir() else None


def resolve_settings(family: str, base=None, controlnet=None, controlnet_config: dict | None = None,
                     transformer_config: dict | None = None) -> ModelSettings:
    """The recommended settings of a base (folder or hub id) + ControlNet (folder, file or model).

    `controlnet_config`: the loaded ControlNet's config (its `trajectory_palette`);
    `transformer_config`: the base transformer's (a CogVideoX base's sample size)."""
    if family not in MODELS:
        raise ModelError(f"unknown model family {family!r}")
    s = ModelSettings()
    cn_folder = _local_folder(controlnet)
    if cn_folder is not None:
        for folder in (cn_folder, cn_folder.parent):  # stageN/controlnet/ or stageN/
            values = read_settings_file(folder)
            if values:
                s.update(values, str(folder / SETTINGS_FILE))
                break
    elif controlnet is not None and isinstance(controlnet, (str, os.PathLike)) and Path(controlnet).is_file():
        s.update(read_settings_file(Path(controlnet).parent), str(Path(controlnet).parent / SETTINGS_FILE))
    if controlnet_config:
        s.update({"trajectory_palette": controlnet_config.get("trajectory_palette")}, "ControlNet config")
        if str(controlnet_config.get("source") or "").startswith("MagicMotion release"):
            from ..models.convert import release_settings  # a released .pt used as it is

            s.update(release_settings(), "the authors' release (ControlNet config source)")
    base_folder = _local_folder(base)
    if base_folder is not None:
        s.update(read_settings_file(base_folder), str(base_folder / SETTINGS_FILE))
    defaults = dict(FAMILY_DEFAULTS[family])
    if family == "wan" and transformer_config and is_ti2v(transformer_config):
        defaults.update(FAMILY_DEFAULTS["wan-ti2v"])
    if family == "cogvideox" and transformer_config:
        sw, sh = transformer_config.get("sample_width"), transformer_config.get("sample_height")
        if sw and sh:
            defaults["size"] = [int(sw) * 8, int(sh) * 8]
        if transformer_config.get("use_learned_positional_embeddings") and transformer_config.get("sample_frames"):
            defaults["num_frames"] = int(transformer_config["sample_frames"])
    s.update(defaults, f"{family} defaults")
    if "size" in s.values and "area" in s.values and s.sources["area"] != s.sources["size"]:
        # a size given by the model folder wins over a family's area, and the reverse
        if s.sources["area"].endswith("defaults"):
            del s.values["area"], s.sources["area"]
        elif s.sources["size"].endswith("defaults"):
            del s.values["size"], s.sources["size"]
    return s


@dataclass(frozen=True)
class ModelLimits:
    """What a base can run: sizes a multiple of `multiple`, at most `max_width` x `max_height` pixels
    and `max_frames` frames (None: no limit from the model), or exactly `fixed` = (W, H, frames)."""

    multiple: int
    max_width: int | None = None
    max_height: int | None = None
    max_frames: int | None = None
    fixed: tuple[int, int, int] | None = None

    def check(self, width: int, height: int, num_frames: int) -> None:
        """PipelineError naming the largest size the model can do when (width, height, frames) is beyond it."""
        from ..errors import PipelineError

        if self.fixed is not None:
            if (width, height, num_frames) != self.fixed:
                fw, fh, ff = self.fixed
                raise PipelineError(
                    f"this base has learned positional embeddings and only works at {fw}x{fh} with {ff} frames; "
                    f"asked for {width}x{height} with {num_frames} frames"
                )
            return
        too_big = ((self.max_width is not None and width > self.max_width)
                   or (self.max_height is not None and height > self.max_height))
        if too_big:
            raise PipelineError(
                f"size {width}x{height} is more than this model can run: at most {self.max_width} pixels wide and "
                f"{self.max_height} high (its rotary position table covers {self.max_width // self.multiple} "
                f"tokens per side); pass a smaller --size, or none for the model's own"
            )
        if self.max_frames is not None and num_frames > self.max_frames:
            raise PipelineError(f"{num_frames} frames is more than this model can run: at most {self.max_frames}")


def model_limits(family: str, transformer_config: dict, vae_config: dict | None = None) -> ModelLimits:
    """The limits of a base from its configs alone (no weights): a Wan base's rotary table covers
    `rope_max_seq_len` tokens per axis; a CogVideoX base with learned positional embeddings runs
    only at its sample size."""
    vae_config = vae_config or {}
    if family == "wan":
        # Wan2.2's VAE: x16 (x8 by its stages, x2 by its patchify); configs saved without the factor give it too
        s = vae_config.get("scale_factor_spatial") or 2 ** (len(vae_config.get("dim_mult", [1, 2, 4, 4])) - 1) * int(
            vae_config.get("patch_size") or 1)
        s = int(s)
        t = int(vae_config.get("scale_factor_temporal", 4))
        m = s * int(transformer_config.get("patch_size", (1, 2, 2))[1])
        rope = transformer_config.get("rope_max_seq_len")
        if not rope:
            return ModelLimits(multiple=m)
        rope = int(rope)
        return ModelLimits(multiple=m, max_width=rope * m, max_height=rope * m, max_frames=(rope - 1) * t + 1)
    channels = vae_config.get("block_out_channels")
    s = 2 ** (len(channels) - 1) if channels else 8
    m = s * int(transformer_config.get("patch_size", 2))
    if transformer_config.get("use_learned_positional_embeddings"):
        fixed = (int(transformer_config["sample_width"]) * s, int(transformer_config["sample_height"]) * s,
                 int(transformer_config["sample_frames"]))
        return ModelLimits(multiple=m, fixed=fixed)
    return ModelLimits(multiple=m)


def default_size(settings: ModelSettings, multiple: int, trajectory_wh: tuple[int, int]) -> tuple[int, int]:
    """(W, H) when none is given: the model's `size`, or the input's aspect ratio kept within the
    model's `area` (never above it, never above the input) at multiples of `multiple`.

    Of the sizes (round(h x aspect), h) at multiples of `multiple` within the area, the largest whose
    aspect ratio is within ASPECT_SLACK of the input's; when none is, the nearest in aspect. An 854x480
    photo with the shipped tiny model (area 64x64, multiples of 8) becomes 72x40 (1.2% of the height
    cropped), not 80x40 (11% of the height); a 640x480 one 64x48 (nothing cropped)."""
    size = settings.get("size")
    if size is not None:
        return int(size[0]), int(size[1])
    w, h = trajectory_wh
    area = min(settings.get("area") or w * h, w * h)
    aspect = w / h
    fits = []
    for height in range(multiple, h + multiple, multiple):
        width = max(multiple, round(height * aspect / multiple) * multiple)
        if width * height <= area or height == multiple:
            fits.append((abs(width / height - aspect) / aspect, width, height))
    close = [f for f in fits if f[0] <= ASPECT_SLACK]
    if close:
        _, width, height = max(close, key=lambda f: f[1] * f[2])
    else:
        _, width, height = min(fits, key=lambda f: (f[0], -f[1] * f[2]))
    return width, height


def describe_fit(image_wh: tuple[int, int], size: tuple[int, int], resize: str) -> str | None:
    """One line saying how an image of `image_wh` is brought to `size` = (W, H) with `resize` (cover,
    pad, stretch), or None when it is used as it is."""
    (iw, ih), (w, h) = image_wh, size
    if (iw, ih) == (w, h):
        return None
    head = f"the {iw}x{ih} image is generated at {w}x{h}"
    if resize == "stretch":
        d = abs((w / h) / (iw / ih) - 1)
        return head + (f", stretched (aspect ratio changed {100 * d:.1f}%)" if d > 0.001 else ", resized")
    if resize == "pad":
        s = min(w / iw, h / ih)
        bars = [f"{100 * (1 - iw * s / w):.1f}% of the width" if 1 - iw * s / w > 0.001 else None,
                f"{100 * (1 - ih * s / h):.1f}% of the height" if 1 - ih * s / h > 0.001 else None]
        bars = [b for b in bars if b]
        return head + (f", black bars over {' and '.join(bars)}" if bars else ", resized")
    s = max(w / iw, h / ih)
    cut = [f"{100 * (1 - w / (iw * s)):.1f}% of the width" if 1 - w / (iw * s) > 0.001 else None,
           f"{100 * (1 - h / (ih * s)):.1f}% of the height" if 1 - h / (ih * s) > 0.001 else None]
    cut = [c for c in cut if c]
    return head + (f", {' and '.join(cut)} cropped" if cut else ", resized")


def pipeline_settings(pipe) -> ModelSettings:
    """The settings a loaded pipeline carries (`pipe.model_settings`, set when it loads), or those of
    its family and ControlNet config when it was built by hand."""
    s = getattr(pipe, "model_settings", None)
    if isinstance(s, ModelSettings):
        return s
    family = "cogvideox" if "CogVideoX" in type(pipe).__name__ else "wan"
    cn = getattr(pipe, "controlnet", None)
    cfg = dict(cn.config) if cn is not None and hasattr(cn, "config") else None
    tcfg = dict(pipe.transformer.config) if getattr(pipe, "transformer", None) is not None else None
    return resolve_settings(family, controlnet_config=cfg, transformer_config=tcfg)


__all__ = ["ASPECT_SLACK", "FAMILY_DEFAULTS", "FIELDS", "FITS", "describe_fit", "MAP_ENCODINGS", "PALETTES", "RESIZES", "SCHEDULERS", "SETTINGS_FILE", "ModelLimits",
           "ModelSettings", "default_size", "model_limits", "pipeline_settings", "read_settings_file", "resolve_settings", "write_settings_file"]
