"""Training samples: clips with the trajectory conditions of a stage, and their precomputed latents.

Every sample is addressed by a `SampleKey` (index, epoch, seed): the clip, the epoch (which picks the
clip's random frame window) and a seed for all per-sample randomness (stage 3's key frames, image and
caption dropout, the CogVideoX image-latent sample). `ResumableSampler` makes the keys a function of
(seed, epoch, position), so a resumed run sees exactly the samples the interrupted one would have.

Conditions per stage (rendered with `magicmotion.trajectory.render`):
    mask        mask maps on every frame                                   (stage 1)
    box         box outlines on every frame, frame 0 the filled mask      (stage 2)
    sparse_box  frame 0 the filled mask, boxes on 1..sparse_max_keys random key frames, the other
                frames black                                               (stage 3)
and, whenever the segmentation loss is on, the mask maps as well (their latent is the L_seg target).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np
import torch

from ..errors import ConfigError, DatasetError
from ..limits import read_json

PRECOMPUTED_VERSION = 1


class SampleKey(NamedTuple):
    index: int  # clip index in the dataset
    epoch: int  # picks the random frame window (Dataset.set_epoch)
    seed: int  # per-sample randomness


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 31-bit seed for the sample at `position` of `epoch` (independent of batch size and workers)."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0] & 0x7FFFFFFF)


def epoch_order(num_samples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled clip order of one epoch: a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, 7]).generate_state(1)[0]))
    return torch.randperm(num_samples, generator=g).tolist()


class ResumableSampler(torch.utils.data.Sampler):
    """Yields `SampleKey`s epoch after epoch, forever, from a given (epoch, position).

    Each process takes every `world_size`-th sample of the shared epoch order (DDP sharding without
    accelerate's dataloader wrapper); `position` counts the samples this process has consumed in the
    current epoch, so `start(epoch, position)` resumes exactly.
    """

    def __init__(self, num_samples: int, seed: int, rank: int = 0, world_size: int = 1):
        if num_samples < 1:
            raise DatasetError("no clips to train on")
        self.num_samples, self.seed = num_samples, int(seed)
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0

    def per_epoch(self) -> int:
        """Samples each process sees per epoch (the order is cut to a multiple of the world size)."""
        return max(1, self.num_samples // self.world_size)

    def start(self, epoch: int, position: int) -> None:
        self.epoch, self.position = int(epoch), int(position)

    def __iter__(self) -> Iterator[SampleKey]:
        epoch, position = self.epoch, self.position
        while True:
            order = epoch_order(self.num_samples, self.seed, epoch)
            mine = order[self.rank::self.world_size][: self.per_epoch()]
            for p in range(position, len(mine)):
                yield SampleKey(mine[p], epoch, sample_seed(self.seed, epoch, p * self.world_size + self.rank))
            epoch, position = epoch + 1, 0

    def __len__(self) -> int:  # a DataLoader over an endless sampler still asks
        return 2**62


# ---------------------------------------------------------------------------------------- pixels


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, T, H, W) in [-1, 1] (x / 255 * 2 - 1, as the pipelines)."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 255.0
    return video * 2.0 - 1.0


def stage_maps(trajectory, kind: str, rng: np.random.Generator, sparse_max_keys: int = 9) -> np.ndarray:
    """Trajectory maps of `kind` for one sample, uint8 (T, H, W, 3); sparse_box draws its key frames."""
    from ..trajectory import render, sparsify

    if kind == "sparse_box":
        trajectory = sparsify(trajectory, num_keys=None, max_keys=sparse_max_keys, mode="random",
                              seed=int(rng.integers(0, 2**31 - 1)))
    return render(trajectory, kind)


class ClipConditions(torch.utils.data.Dataset):
    """Clips of a `magicmotion.data.reader.Dataset` as pixel samples for one stage.

    Item (for a `SampleKey`): dict with
        video       float (3, T, H, W) in [-1, 1]
        trajectory  float (3, T, H, W) in [-1, 1], the maps of `kind`
        mask        float (3, T, H, W), the mask maps (only when `need_mask` and kind != "mask")
        caption     str ("" when dropped)
        drop_image  bool tensor: drop the first-frame condition for this sample
        seed        int, id  str
    """

    def __init__(self, clips, kind: str, need_mask: bool = False, sparse_max_keys: int = 9,
                 image_dropout: float = 0.0, caption_dropout: float = 0.0):
        self.clips, self.kind, self.need_mask = clips, kind, need_mask
        self.sparse_max_keys = sparse_max_keys
        self.image_dropout, self.caption_dropout = image_dropout, caption_dropout

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key) -> dict[str, Any]:
        key = _as_key(key)
        rng = np.random.default_rng(key.seed)
        drop_image, drop_caption = _dropouts(rng, self.image_dropout, self.caption_dropout)
        self.clips.set_epoch(key.epoch)
        clip = self.clips[key.index]
        item = {
            "video": frames_to_tensor(clip.frames),
            "trajectory": frames_to_tensor(stage_maps(clip.trajectory, self.kind, rng, self.sparse_max_keys)),
            "caption": "" if drop_caption else clip.caption,
            "drop_image": torch.tensor(drop_image),
            "seed": key.seed,
            "id": clip.id,
        }
        if self.need_mask and self.kind != "mask":
            item["mask"] = frames_to_tensor(stage_maps(clip.trajectory, "mask", rng))
        return item


def _as_key(key) -> SampleKey:
    if isinstance(key, SampleKey):
        return key
    if isinstance(key, (tuple, list)):
        return SampleKey(*(int(k) for k in key))
    return SampleKey(int(key), 0, int(key))


def _dropouts(rng: np.random.Generator, p_image: float, p_caption: float) -> tuple[bool, bool]:
    u = rng.random(2)  # always drawn, so the rest of the sample's randomness does not depend on p
    return bool(u[0] < p_image), bool(u[1] < p_caption)


# ---------------------------------------------------------------------------------------- precomputed


@dataclass
class PrecomputedIndex:
    """`index.json` of a precomputed folder (written by `magicmotion.training.precompute`)."""

    folder: Path
    meta: dict

    @classmethod
    def read(cls, folder: str | Path) -> "PrecomputedIndex":
        folder = Path(folder)
        path = folder / "index.json"
        if not path.is_file():
            raise ConfigError(f"{folder}: no index.json (run `magicmotion train precompute` first)")
        meta = read_json(path, ConfigError, "precomputed index")
        if meta.get("version") != PRECOMPUTED_VERSION:
            raise ConfigError(f"{path}: version {meta.get('version')}, expected {PRECOMPUTED_VERSION}")
        return cls(folder, meta)

    @property
    def clips(self) -> list[dict]:
        return self.meta["clips"]

    def check_fits(self, config) -> None:
        """ConfigError when the latents were computed for other settings than `config` needs."""
        m, d = self.meta, config.data
        want = {"model": config.model, "base": str(config.base), "num_frames": d.num_frames,
                "size": list(d.size), "stride": d.stride, "split": d.split}
        bad = [f"{k} {m.get(k)!r} (config: {v!r})" for k, v in want.items() if m.get(k) != v]
        if bad:
            raise ConfigError(f"{self.folder}/index.json was computed for other settings: " + "; ".join(bad)
                              + " — run `magicmotion train precompute` again for this config")
        if config.condition not in m["kinds"]:
            raise ConfigError(
                f"{self.folder}: no {config.condition} trajectory latents (it holds "
                f"{', '.join(m['kinds'])}; stage {config.stage} needs {config.condition}): precompute "
                f"again with all three kinds, `magicmotion train precompute --config {config.source} "
                f"--out {self.folder}`")


class PrecomputedLatents(torch.utils.data.Dataset):
    """Latent samples read from a precomputed folder (one safetensors file per clip).

    Item (for a `SampleKey`): a latent batch entry (see `conditioning.py`) without the batch axis:
    latents, trajectory_latents, image_condition, prompt_embeds, [mask_latents], [image_embeds],
    drop_image, seed. Stage 3 picks one of the clip's `sparse_variants` precomputed sparse-box latents
    with the sample's seed. All clips are loaded into memory on first use when `cache` is true.
    """

    def __init__(self, index: PrecomputedIndex, kind: str, need_mask: bool = False,
                 image_dropout: float = 0.0, caption_dropout: float = 0.0, cache: bool = True):
        self.index, self.kind, self.need_mask = index, kind, need_mask
        self.image_dropout, self.caption_dropout = image_dropout, caption_dropout
        self.cache: dict[int, dict[str, torch.Tensor]] | None = {} if cache else None
        self._empty_prompt: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.index.clips)

    def _load(self, i: int) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        if self.cache is not None and i in self.cache:
            return self.cache[i]
        path = self.index.folder / self.index.clips[i]["file"]
        try:
            tensors = load_file(str(path))
        except (OSError, RuntimeError) as e:
            raise DatasetError(f"{path}: unreadable precomputed latents ({e})") from None
        if self.cache is not None:
            self.cache[i] = tensors
        return tensors

    def empty_prompt(self) -> torch.Tensor:
        if self._empty_prompt is None:
            from safetensors.torch import load_file

            self._empty_prompt = load_file(str(self.index.folder / "empty_prompt.safetensors"))["prompt_embeds"]
        return self._empty_prompt

    def __getitem__(self, key) -> dict[str, Any]:
        key = _as_key(key)
        rng = np.random.default_rng(key.seed)
        drop_image, drop_caption = _dropouts(rng, self.image_dropout, self.caption_dropout)
        t = self._load(key.index)
        if self.kind == "sparse_box":
            variants = sorted(k for k in t if k.startswith("trajectory.sparse_box."))
            trajectory = t[variants[int(rng.integers(0, len(variants)))]]
        else:
            trajectory = t[f"trajectory.{self.kind}"]
        item = {
            "latents": t["latents"],
            "trajectory_latents": trajectory,
            "image_condition": t["image_condition"],
            "prompt_embeds": self.empty_prompt() if drop_caption else t["prompt_embeds"],
            "drop_image": torch.tensor(drop_image),
            "seed": key.seed,
            "id": self.index.clips[key.index]["id"],
        }
        if self.need_mask:
            item["mask_latents"] = t["trajectory.mask"]
        if "image_embeds" in t:
            item["image_embeds"] = t["image_embeds"]
        return item


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, list strings and ints (default_collate would turn ints into tensors too)."""
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        out[key] = torch.stack(values) if torch.is_tensor(values[0]) else values
    return out
