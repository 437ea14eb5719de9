"""Pre-computing the frozen encoders' outputs once, so that a training step is the DiT alone.

Encoding dominates a step otherwise: a Wan step encodes the video, the trajectory maps, the mask maps
and the [first frame, zeros...] video through the VAE, plus the caption through UMT5-XXL.

    OUT/
      index.json                 settings (model, base, frames, size, stride, split, kinds, ...) + clips
      settings.json              written first; a re-run with the same settings skips finished clips
      empty_prompt.safetensors   the embedding of "" (caption dropout)
      clips/<id>.safetensors     latents, image_condition, prompt_embeds, [image_embeds],
                                 trajectory.mask, trajectory.box, trajectory.sparse_box.000 ...

The tensors are the base's (`conditioning.py`): a Wan2.2 TI2V base stores 48-channel latents and its
image condition is the first frame's latent alone; a Wan2.2 A14B base's folder serves both experts'
runs (the encoders are shared; only the transformer differs).

Each clip's frame window is fixed at precompute time (epoch 0 of the dataset's `sampling`). Stage 3's
random key frames are drawn per sample when training on pixels; here each clip stores
`sparse_variants` sparse-box latents, each with its own random key frames (1..sparse_max_keys besides
frame 0, drawn from (config seed, clip id, variant)), and training picks one per sample. With several
processes (`accelerate launch`) each encodes every n-th clip.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .config import CONDITIONS, TrainConfig
from .data import PRECOMPUTED_VERSION, frames_to_tensor, stage_maps

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def precompute_kinds(config: TrainConfig, extra: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """All three kinds when `extra` is None (one folder serves the three stages); else mask maps
    (stage 1's condition and the L_seg target), the config's kind, and `extra`."""
    kinds = list(CONDITIONS) if extra is None else ["mask", config.condition, *extra]
    return [k for k in ("mask", "box", "sparse_box") if k in kinds]


def clip_seed(seed: int, clip_id: str) -> int:
    return int(np.random.SeedSequence([seed, zlib.crc32(clip_id.encode())]).generate_state(1)[0] & 0x7FFFFFFF)


def precompute(config: TrainConfig, out: str | os.PathLike, kinds: list[str] | tuple[str, ...] | None = None,
               dtype: str = "float32", batch_size: int = 4, device: str | None = None,
               progress: bool = True) -> Path:
    """Encode every clip of the config's dataset split into `out` (see the module docstring).

    Args:
        kinds: None (default) stores all three trajectory kinds, so one folder serves the three
            stages; a list stores only "mask", the config's condition and these (e.g. [] for one
            stage: stage 3's K sparse variants are K more VAE encodes per clip).
        dtype: stored precision: float32, bfloat16 or float16.
        batch_size: videos per VAE call.
    Returns:
        the output folder.
    """
    from accelerate import PartialState
    from safetensors.torch import save_file
    from tqdm import tqdm

    from ..data.reader import Dataset
    from ..io import atomic_path
    from .conditioning import (LatentEncoder, base_layout, encoder_dtypes, encoder_names, load_base_components,
                               load_transformer_config)

    if dtype not in DTYPES:
        raise ConfigError(f"precompute dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    kinds = precompute_kinds(config, kinds)
    state = PartialState()
    device = device or str(state.device)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file, expected a folder for the precomputed clips")
    if (out / "clips").exists() and not (out / "clips").is_dir():
        raise ConfigError(f"{out / 'clips'}: is a file, expected a folder")
    from ..paths import check_output

    check_output(out, [config.data.dataset, config.base if Path(config.base).is_dir() else None],
                 error=ConfigError, folder=True, make_parents=True)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    d = config.data
    settings = {
        "version": PRECOMPUTED_VERSION, "model": config.model, "base": str(config.base),
        "dataset": str(d.dataset), "split": d.split, "num_frames": d.num_frames, "size": list(d.size),
        "stride": d.stride, "sampling": d.sampling, "pad": d.pad, "kinds": kinds,
        "sparse_variants": d.sparse_variants if "sparse_box" in kinds else 0,
        "sparse_max_keys": d.sparse_max_keys, "seed": config.seed, "dtype": dtype,
        "layout": "B,C,F,H,W" if config.model == "wan" else "B,F,C,H,W",
    }
    settings_path = out / "settings.json"
    if settings_path.is_file() and json.loads(settings_path.read_text()) != settings:
        stale = sorted(out.glob("clips/*.safetensors"))
        for p in stale[state.process_index::state.num_processes]:
            p.unlink(missing_ok=True)
    state.wait_for_everyone()
    if state.is_main_process:
        with atomic_path(settings_path) as tmp:
            tmp.write_text(json.dumps(settings, indent=1))

    clips = Dataset(d.dataset, num_frames=d.num_frames, stride=d.stride, size=tuple(d.size),
                    sampling=d.sampling, split=d.split, seed=config.seed, pad=d.pad)
    if len(clips) == 0:
        raise ConfigError(f"{config.source}: data.dataset {d.dataset} has no clips in split {d.split!r}")
    components = load_base_components(config.base, encoder_names(config.model), dtypes=encoder_dtypes(device))
    expand = config.model == "wan" and base_layout(config.base)["expand_timesteps"]  # Wan2.2 TI2V
    encoder = LatentEncoder(config.model, components, load_transformer_config(config.base, config.model), device,
                            expand_timesteps=expand)
    store = DTYPES[dtype]

    def save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
        with atomic_path(path) as tmp:
            save_file({k: v.detach().to("cpu", store).contiguous() for k, v in tensors.items()}, str(tmp))

    if state.is_main_process:
        save(out / "empty_prompt.safetensors", {"prompt_embeds": encoder.encode_prompt([""])[0]})

    mine = [i for i in range(len(clips)) if i % state.num_processes == state.process_index]
    todo = [i for i in mine if not (out / "clips" / f"{clips.records[i]['id']}.safetensors").is_file()]
    prompt_cache: dict[str, torch.Tensor] = {}
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="precompute", unit="clip",
               disable=not progress or not state.is_main_process)
    for start in range(0, len(todo), batch_size):
        chunk = [clips[i] for i in todo[start:start + batch_size]]
        videos = torch.stack([frames_to_tensor(c.frames) for c in chunk])
        latents = encoder.encode_video(videos)
        seeds = [clip_seed(config.seed, c.id) for c in chunk]
        conditions = encoder.image_condition(videos[:, :, 0], d.num_frames, seeds)
        image_embeds = encoder.image_embeds(videos[:, :, 0])
        new = sorted({c.caption for c in chunk} - set(prompt_cache))
        if new:
            prompt_cache.update(zip(new, encoder.encode_prompt(new)))

        # trajectory maps of every kind (and every sparse variant) of the chunk, encoded together
        names_maps: list[tuple[int, str, np.ndarray]] = []
        for j, c in enumerate(chunk):
            for kind in kinds:
                if kind == "sparse_box":
                    for v in range(d.sparse_variants):
                        rng = np.random.default_rng([config.seed, zlib.crc32(c.id.encode()), v])
                        maps = stage_maps(c.trajectory, kind, rng, d.sparse_max_keys)
                        names_maps.append((j, f"trajectory.sparse_box.{v:03d}", maps))
                else:
                    names_maps.append((j, f"trajectory.{kind}", stage_maps(c.trajectory, kind, None)))
        per_clip: list[dict[str, torch.Tensor]] = [{} for _ in chunk]
        for s in range(0, len(names_maps), batch_size):
            part = names_maps[s:s + batch_size]
            encoded = encoder.encode_video(torch.stack([frames_to_tensor(m) for _, _, m in part]), trajectory=True)
            for (j, name, _), z in zip(part, encoded):
                per_clip[j][name] = z

        for j, c in enumerate(chunk):
            tensors = {"latents": latents[j], "image_condition": conditions[j],
                       "prompt_embeds": prompt_cache[c.caption], **per_clip[j]}
            if image_embeds is not None:
                tensors["image_embeds"] = image_embeds[j]
            save(out / "clips" / f"{c.id}.safetensors", tensors)
            bar.update()
    bar.close()

    state.wait_for_everyone()
    if state.is_main_process:
        index = dict(settings, clips=[{"id": r["id"], "file": f"clips/{r['id']}.safetensors", "caption": r["caption"]}
                                      for r in clips.records])
        missing = [c["file"] for c in index["clips"] if not (out / c["file"]).is_file()]
        if missing:
            raise ConfigError(f"{out}: {len(missing)} clips were not written (first: {missing[0]})")
        with atomic_path(out / "index.json") as tmp:
            tmp.write_text(json.dumps(index, indent=1))
    state.wait_for_everyone()
    return out
