"""The training loop: one stage of MagicMotion on accelerate.

`train(config)` trains the Trajectory ControlNet (and, in stages 2-3, the segment head) on top of a
frozen image-to-video base:

    models      base (frozen, eval, in the mixed-precision dtype) + ControlNet (+ head) in float32,
                from the base's blocks or from the previous stage's output (`init_from`)
    data        pixel clips encoded on the fly by the frozen VAE / text encoder, or precomputed
                latents (`data.precomputed`); a resumable, seeded sample order
    step        noise the video latents, predict with base + ControlNet, L = L_diff + lambda L_seg,
                AdamW with warm-up, gradient clipping, accumulation and mixed precision
    outputs     OUTPUT_DIR/log.csv and tensorboard/, validation/step-XXXXXXX.mp4 (+ .png),
                checkpoints/step-XXXXXXX/ (atomic; the last `keep_checkpoints`), final/controlnet
                (+ final/segment_head)

Wan2.2 bases train as diffusers' `WanImageToVideoPipeline` runs them: I2V-A14B one expert per run
(`expert`; the ControlNet copies that expert, records it in its config, and sees only that expert's
timesteps), TI2V-5B with `expand_timesteps` (clean first frame, per-token timesteps, the loss on the
noised frames; see `TrainingObjective`).

Resuming (`resume=True`) restores weights, optimizer, LR scheduler, RNG states, the step and the data
position from the newest complete checkpoint: N steps, a kill, and N more steps give the weights of
2N steps straight. All randomness (noise, timesteps, dropout, key frames) comes from the sample's
seed, a function of (seed, epoch, position): a run on N processes equals one process with N times
the batch (tests/training/test_distributed.py).
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ModelError, TrainingError
from ..io import fsync_dir, fsync_tree
from ..limits import check_finite_weights as check_loaded_weights
from .conditioning import base_inputs, drop_image_condition, first_frame_keep, flow_shift_of, ti2v_inputs
from .config import TrainConfig, init_weights, save_config
from .data import ResumableSampler, collate, sample_seed
from .losses import (flow_matching_loss, flow_matching_noisy, latent_segmentation_loss, sample_flow_sigmas,
                     sample_timesteps, total_loss, v_prediction_loss, v_prediction_noisy)

LOG_FIELDS = ["step", "epoch", "loss", "diffusion", "segmentation", "lr", "grad_norm", "samples_per_s", "time_s"]
WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---------------------------------------------------------------------------------------- models


class TrainableModules(nn.Module):
    """The ControlNet and segment head as one module, the only one given to accelerate.

    The joint model (base + ControlNet + head) runs the forward, but the frozen base is not a
    registered submodule: it stays out of DDP / FSDP wrapping, the optimizer and checkpoints.
    """

    def __init__(self, joint):
        super().__init__()
        self.controlnet = joint.controlnet
        self.segment_head = joint.segment_head
        self.__dict__["joint"] = joint  # not registered

    @property
    def _no_split_modules(self) -> list[str]:
        """The ControlNet's block classes: FSDP's TRANSFORMER_BASED_WRAP wraps each block on its own."""
        return list(self.controlnet._no_split_modules)

    def forward(self, **kwargs):
        return self.joint(**kwargs, return_dict=False)


def build_models(config: TrainConfig, weight_dtype: torch.dtype = torch.float32):
    """(joint MagicMotionTransformer, base scheduler) for a config.

    The base is loaded in `weight_dtype` and frozen; the ControlNet starts from `init_from`'s
    ControlNet or as a copy of the base's blocks (`controlnet_layers` of them); the head from
    `init_from` (`init_head`) or freshly initialised. Trainable weights are float32.

    Wan2.2 I2V-A14B (`expert`): the base is that expert, `transformer` (high) or `transformer_2` (low),
    and a fresh ControlNet copies its blocks and records `expert` in its config. Wan2.2 TI2V: the
    ControlNet reads 48 + 48 channels and the head predicts 48-channel latents.
    """
    from ..models import (CogVideoXTrajectoryControlNet, MagicMotionTransformer, SegmentHead,
                          WanTrajectoryControlNet)
    from .config import check_base
    from .conditioning import load_base_components

    layout = check_base(config)
    name = "transformer_2" if config.expert == "low" else "transformer"
    parts = load_base_components(config.base, (name, "scheduler"), dtype=weight_dtype)
    base = parts[name]
    cls = WanTrajectoryControlNet if config.model == "wan" else CogVideoXTrajectoryControlNet
    if (config.model == "wan") != hasattr(base, "blocks"):
        raise ConfigError(f"{config.source}: model is {config.model} but {config.base} holds a "
                          f"{type(base).__name__}")
    head_dir = None
    if config.init_from:
        cn_dir, head_dir = init_weights(config)
        controlnet = check_loaded_weights(cls.from_pretrained(cn_dir, dtype=torch.float32), cn_dir, ModelError)
        layers = controlnet.config.num_layers
        if config.controlnet_layers is not None and config.controlnet_layers != layers:
            raise ConfigError(f"{config.source}: controlnet_layers is {config.controlnet_layers} but "
                              f"{cn_dir} has {layers} control blocks")
    else:
        wan = dict(expert=config.expert, expand_timesteps=layout["expand_timesteps"]) if config.model == "wan" else {}
        controlnet = cls.from_transformer(base, num_layers=config.controlnet_layers, **wan)
    nn.Module.to(controlnet, torch.float32)  # float32 master weights (ModelMixin.to would warn)

    head = None
    if config.segment_head:
        if head_dir:
            head = SegmentHead.from_pretrained(head_dir, dtype=torch.float32)
            check_loaded_weights(head, head_dir, ModelError)
        else:
            with torch.random.fork_rng(devices=[]):  # the same fresh head for the same seed
                torch.manual_seed(config.seed)
                head = SegmentHead.from_transformer(base, out_channels=_latent_channels(config, base))
        nn.Module.to(head, torch.float32)
        if head.config.out_channels != _latent_channels(config, base):
            raise ConfigError(f"{config.source}: the segment head of {head_dir} predicts {head.config.out_channels} "
                              f"latent channels; this base's latents have {_latent_channels(config, base)}")
    joint = MagicMotionTransformer(base, controlnet, head, freeze_base=True)
    base.eval()
    controlnet.train()
    if head is not None:
        # without the segmentation loss the head gets no gradient: freeze it, keep it as it is
        head.requires_grad_(config.lambda_seg > 0).train()
    return joint, parts["scheduler"]


def _latent_channels(config: TrainConfig, base) -> int:
    """Latent channels of the base's VAE: Wan 16 (Wan2.2 TI2V 48), CogVideoX 16."""
    return int(base.config.out_channels or 16) if config.model == "wan" else 16


# ---------------------------------------------------------------------------------------- objective


class TrainingObjective:
    """One noisy sample and its loss terms, for either base.

    Wan: s from `sample_flow_sigmas`, x_t = (1 - s) x0 + s eps, timestep 1000 s, flow-matching
    loss. CogVideoX: t uniform, x_t from the scheduler's `alphas_cumprod`, v-prediction loss (eq. (1)).
    Plus lambda * L_seg when the segment head is trained.

    Wan2.2 I2V-A14B (`expert`): s only in that expert's range, where diffusers' pipeline runs it:
    high 1000 s >= boundary_ratio * num_train_timesteps, low below. Wan2.2 TI2V (`expand_timesteps`),
    as diffusers' pipeline runs the base: the first latent frame replaced by the clean image latents,
    one timestep per token (0 on that frame), the loss on the noised frames only; an image-dropped
    sample is a text-to-video one (all frames noised). `layout`: `conditioning.base_layout` of the base
    (read from config.base when None).
    """

    def __init__(self, config: TrainConfig, base_config, scheduler, layout: dict | None = None):
        self.model = config.model
        self.base_config = base_config
        self.noise = config.noise
        self.lambda_seg = config.lambda_seg
        self.want_seg = config.needs_mask_latents
        self.image_dropout = config.data.image_dropout > 0
        self.expand_timesteps = False
        self.sigma_range = None
        if self.model == "wan":
            from .conditioning import base_layout

            layout = base_layout(config.base) if layout is None else layout
            self.shift = config.noise.flow_shift or flow_shift_of(scheduler.config)
            self.expand_timesteps = bool(layout.get("expand_timesteps"))
            if config.expert is not None:
                boundary = layout["boundary_ratio"] * int(scheduler.config.num_train_timesteps) / 1000.0
                self.sigma_range = (boundary, 1.0) if config.expert == "high" else (0.0, boundary)
        else:
            self.alphas_cumprod = scheduler.alphas_cumprod.float()
            self.num_train_timesteps = int(scheduler.config.num_train_timesteps)

    def draw(self, shape: tuple[int, ...], generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(noise, level) for a batch of `shape`: Wan's sigmas in (0, 1), CogVideoX's integer timesteps.
        A list of generators (`sample_generators`) draws each sample with its own."""
        if isinstance(generator, (list, tuple)):
            parts = [self.draw((1, *shape[1:]), g) for g in generator]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        noise = torch.randn(shape, generator=generator)
        if self.model == "wan":
            n = self.noise
            return noise, sample_flow_sigmas(shape[0], generator, n.timestep_sampling, self.shift, n.logit_mean,
                                             n.logit_std, sigma_range=self.sigma_range)
        return noise, sample_timesteps(shape[0], self.num_train_timesteps, generator)

    def __call__(self, model: Callable, batch: dict[str, Any], generator) -> dict[str, torch.Tensor]:
        """Loss terms {"loss", "diffusion", ["segmentation"]} for a latent batch on the model's device;
        `generator`: one for the batch, or one per sample (see `draw`)."""
        x0 = batch["latents"]
        noise, level = self.draw(x0.shape, generator)
        noise = noise.to(x0.device, x0.dtype)
        if self.model == "wan":
            sigmas = level
            noisy = flow_matching_noisy(x0, noise, sigmas.to(x0.device))
            timestep = (sigmas * 1000.0).to(x0.device)
        else:
            t = level
            alphas = self.alphas_cumprod[t].to(x0.device)
            noisy = v_prediction_noisy(x0, noise, alphas)
            timestep = t.to(x0.device)
        batch = dict(batch)
        keep = None
        if self.expand_timesteps:  # Wan2.2 TI2V: the clean first frame, per-token timesteps
            keep = first_frame_keep(x0, batch.get("drop_image") if self.image_dropout else None)
            hidden, timestep = ti2v_inputs(noisy, batch["image_condition"], keep, timestep,
                                           self.base_config.patch_size)
            extra = {}
        else:
            if self.image_dropout:
                batch["image_condition"] = drop_image_condition(self.model, batch["image_condition"],
                                                                batch.get("drop_image"))
            hidden, extra = base_inputs(self.model, self.base_config, noisy, batch)
        sample, segmentation = model(
            hidden_states=hidden, timestep=timestep, encoder_hidden_states=batch["prompt_embeds"],
            trajectory_latents=batch["trajectory_latents"], return_segmentation=self.want_seg, **extra,
        )
        if self.model == "wan":
            diffusion = flow_matching_loss(sample, x0, noise, keep)
        else:
            diffusion = v_prediction_loss(sample, noisy, x0, alphas, self.noise.loss_weighting)
        seg = latent_segmentation_loss(segmentation, batch["mask_latents"]) if self.want_seg else None
        return total_loss(diffusion, seg, self.lambda_seg)


def step_generator(seed: int, micro_step: int, rank: int) -> torch.Generator:
    """The generator of one micro-step's noise and timesteps (CPU, so runs reproduce across devices)."""
    return torch.Generator().manual_seed(sample_seed(seed + 1_000_003, micro_step, rank))


def sample_generators(seeds) -> list[torch.Generator]:
    """One generator per sample for its noise and timestep, seeded by the sample's seed (CPU): a sample
    is noised the same whatever the batch size, gradient accumulation or number of processes, so a
    2-process run of batch 1 equals a 1-process run of batch 2."""
    return [torch.Generator().manual_seed(sample_seed(int(s), 1_000_003, 0)) for s in seeds]


# ---------------------------------------------------------------------------------------- data


def build_data(config: TrainConfig, device: torch.device):
    """(torch dataset, LatentEncoder or None): precomputed latents, or clips encoded on the fly."""
    from .data import ClipConditions, PrecomputedIndex, PrecomputedLatents

    d = config.data
    if d.precomputed:
        index = PrecomputedIndex.read(d.precomputed)
        index.check_fits(config)
        dataset = PrecomputedLatents(index, config.condition, config.needs_mask_latents,
                                     d.image_dropout, d.caption_dropout)
        return dataset, None
    from ..data.dataset import Dataset
    from .conditioning import (LatentEncoder, encoder_dtypes, encoder_names, load_base_components,
                               load_transformer_config)

    clips = Dataset(d.dataset, num_frames=d.num_frames, stride=d.stride, size=tuple(d.size),
                    sampling=d.sampling, split=d.split, seed=config.seed, pad=d.pad)
    if len(clips) == 0:
        raise ConfigError(f"{config.source}: data.dataset {d.dataset} has no clips in split {d.split!r}")
    dataset = ClipConditions(clips, config.condition, config.needs_mask_latents, d.sparse_max_keys,
                             d.image_dropout, d.caption_dropout)
    components = load_base_components(config.base, encoder_names(config.model), dtypes=encoder_dtypes(device))
    encoder = LatentEncoder(config.model, components, load_transformer_config(config.base, config.model), device,
                            expand_timesteps=_expand_timesteps(config))
    return dataset, encoder


def _expand_timesteps(config: TrainConfig) -> bool:
    from .conditioning import base_layout

    return config.model == "wan" and base_layout(config.base)["expand_timesteps"]


def _to_device(batch: dict[str, Any], device: torch.device, dtype: torch.dtype | None = None) -> dict[str, Any]:
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device, non_blocking=True)
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
        out[k] = v
    return out


# ---------------------------------------------------------------------------------------- state


@dataclass
class TrainState:
    """What a checkpoint records besides tensors."""

    step: int = 0  # optimiser steps done
    micro_step: int = 0  # forward/backward passes done (step * grad_accum)
    samples: int = 0  # samples this process has consumed from its shard (data position)

    def to_dict(self) -> dict:
        return {"step": self.step, "micro_step": self.micro_step, "samples": self.samples}


@dataclass
class TrainResult:
    """What `train` returns: the final step, folders, the joint model and the logged rows."""

    step: int
    output_dir: Path
    final_dir: Path
    model: Any
    history: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- checkpoints


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:07d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints (a `state.json` inside, written last), oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith("step-") and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_files(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file in a checkpoint folder but state.json."""
    return {p.relative_to(folder).as_posix(): _sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "state.json"}


def verify_checkpoint(folder: Path) -> str | None:
    """None when the checkpoint is intact (state.json readable, every file it lists present with its
    sha256), else why not, naming the file."""
    from ..limits import read_json

    try:
        info = read_json(folder / "state.json", TrainingError, "checkpoint state")
    except TrainingError as e:
        return str(e)
    if not isinstance(info, dict) or not all(isinstance(info.get(k), int) for k in ("step", "micro_step", "samples")):
        return f"{folder / 'state.json'}: not a checkpoint state"
    files = info.get("files")
    if files is None:  # written before checksums: nothing to compare
        return None
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            return f"{path}: missing"
        if _sha256(path) != digest:
            return f"{path}: damaged (checksum differs)"
    return None


def intact_checkpoint(output_dir: str | os.PathLike, log=print) -> Path | None:
    """The newest checkpoint that verifies; damaged ones are skipped, saying which and why. When
    there are checkpoints but none is intact: TrainingError naming the newest broken file (one line,
    and no skip messages before it)."""
    found = list_checkpoints(output_dir)
    problems = []
    for folder in reversed(found):
        problem = verify_checkpoint(folder)
        if problem is None:
            for skipped, why in problems:
                log(f"skipping checkpoint {skipped}: {why}")
            return folder
        problems.append((folder.name, problem))
    if problems:
        more = f" (and {len(problems) - 1} older checkpoints damaged)" if len(problems) > 1 else ""
        raise TrainingError(f"no intact checkpoint to resume from: {problems[0][1]}{more}")
    return None


def _warn(message: str) -> None:
    import sys

    print(f"magicmotion: {message}", file=sys.stderr)


def check_finite_weights(module, what: str) -> None:
    """Never save NaN or inf weights."""
    for name, p in module.named_parameters():
        if not torch.isfinite(p.detach()).all():
            raise TrainingError(f"{what}: parameter {name} is not finite; nothing saved")


def _uses_accelerate_state(accelerator) -> bool:
    """FSDP and DeepSpeed shard weights / optimizer states: let accelerate write those."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) RNG states as plain types and tensors (weights_only loadable)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _export_weights(accelerator, module, folder: Path) -> None:
    """ControlNet (+ head) as `save_pretrained` folders under `folder` (main process writes)."""
    unwrapped = accelerator.unwrap_model(module)
    if _uses_accelerate_state(accelerator):
        # FSDP / ZeRO-3 shard the weights: gather a full state dict, load it into meta-initialised copies
        from accelerate import init_empty_weights

        state = accelerator.get_state_dict(module)
        if accelerator.is_main_process:
            for name in ("controlnet", "segment_head"):
                sub = getattr(unwrapped, name)
                if sub is None:
                    continue
                # without diffusers' note of arguments given positionally (from_config would drop them)
                config = {k: v for k, v in sub.config.items() if k != "_use_default_values"}
                with init_empty_weights():
                    fresh = type(sub).from_config(config)
                prefix = name + "."
                fresh.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, assign=True)
                fresh.save_pretrained(folder / name)
        return
    if accelerator.is_main_process:
        unwrapped.controlnet.save_pretrained(folder / "controlnet")
        if unwrapped.segment_head is not None:
            unwrapped.segment_head.save_pretrained(folder / "segment_head")


def save_checkpoint(accelerator, module, optimizer, lr_scheduler, state: TrainState, output_dir: Path,
                    keep: int, config: TrainConfig) -> Path:
    """Write checkpoints/step-XXXXXXX atomically: into a hidden temporary folder, fsync, rename.

    A crash at any point leaves the previous checkpoints intact and loadable (a half-written
    temporary folder is ignored by `latest_checkpoint` and removed by the next save).
    """
    final = checkpoint_dir(output_dir, state.step)
    tmp = final.parent / f".{final.name}.tmp"
    check_finite_weights(module, f"checkpoint at step {state.step}")
    if accelerator.is_main_process:
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(".step-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    if _uses_accelerate_state(accelerator):
        accelerator.save_state(str(tmp / "accelerate"))
    else:
        _export_weights(accelerator, module, tmp)
        if accelerator.is_main_process:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(lr_scheduler.state_dict(), tmp / "lr_scheduler.pt")
            if accelerator.scaler is not None:
                torch.save(accelerator.scaler.state_dict(), tmp / "scaler.pt")
    torch.save(rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        info = dict(state.to_dict(), num_processes=accelerator.num_processes, config=config.to_dict(),
                    files=checkpoint_files(tmp))  # verified on resume
        with open(tmp / "state.json", "w") as f:
            json.dump(info, f, indent=1)
        fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(final.parent)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _load_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{folder}: no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def load_checkpoint_weights(folder: Path, modules: TrainableModules) -> None:
    """Load a checkpoint's ControlNet (+ head) weights into the (unwrapped) trainable modules."""
    modules.controlnet.load_state_dict(_load_safetensors_folder(folder / "controlnet"))
    if modules.segment_head is not None:
        modules.segment_head.load_state_dict(_load_safetensors_folder(folder / "segment_head"))


def load_checkpoint_state(folder: Path, accelerator, optimizer, lr_scheduler) -> TrainState:
    """Optimizer, LR scheduler, scaler and RNG states and the counters (after `accelerator.prepare`)."""
    info = json.loads((folder / "state.json").read_text())
    if info.get("num_processes", 1) != accelerator.num_processes:
        raise ConfigError(f"{folder}: written by {info.get('num_processes')} processes, resumed with "
                          f"{accelerator.num_processes}; the data position would not match")
    if _uses_accelerate_state(accelerator):
        accelerator.load_state(str(folder / "accelerate"))
    else:
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
        lr_scheduler.load_state_dict(torch.load(folder / "lr_scheduler.pt", weights_only=True))
        if accelerator.scaler is not None and (folder / "scaler.pt").is_file():
            accelerator.scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
    rng = folder / f"rng-{accelerator.process_index}.pt"
    if rng.is_file():
        set_rng_state(torch.load(rng, weights_only=True))
    return TrainState(step=info["step"], micro_step=info["micro_step"], samples=info["samples"])


def save_final(accelerator, module, output_dir: Path, config: TrainConfig, state: TrainState) -> Path:
    """OUTPUT_DIR/final/{controlnet, segment_head, config.yaml, training.json}, replaced atomically."""
    final = Path(output_dir) / "final"
    tmp = final.parent / ".final.tmp"
    check_finite_weights(module, f"final weights at step {state.step}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    _export_weights(accelerator, module, tmp)
    if accelerator.is_main_process:
        save_config(config, tmp / "config.yaml")
        info = {"stage": config.stage, "condition": config.condition, "model": config.model,
                "base": config.base, "steps": state.step, "lambda_seg": config.lambda_seg,
                "expert": config.expert}  # also in controlnet/config.json, which the pipelines read
        (tmp / "training.json").write_text(json.dumps(info, indent=1))
        fsync_tree(tmp)
        if final.exists():
            old = final.parent / ".final.old"
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        fsync_dir(final.parent)
    accelerator.wait_for_everyone()
    return final


# ---------------------------------------------------------------------------------------- logging


class CsvLog:
    """OUTPUT_DIR/log.csv, one row per logged step. On resume, rows after the resumed step (written
    after the last checkpoint by the interrupted run) are dropped first."""

    def __init__(self, path: Path, resume_step: int | None):
        from ..io import atomic_path

        self.path = path
        rows = []
        if resume_step is not None and path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with atomic_path(path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
                writer.writeheader()
                writer.writerows(rows)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=LOG_FIELDS).writerow({k: row.get(k, "") for k in LOG_FIELDS})


class LogWindow:
    """Loss terms, gradient norms and time since the last logged row."""

    NAMES = ("loss", "diffusion", "segmentation")

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.micro_steps = 0
        self.steps = 0
        self.grad_norms: list[float] = []
        self.start = time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())
        self.micro_steps += 1

    def step(self, grad_norm) -> None:
        self.steps += 1
        if grad_norm is not None:  # None under DeepSpeed, which clips inside its step
            self.grad_norms.append(float(grad_norm))

    def row(self, accelerator, state: TrainState, per_epoch: int, lr: float, loop) -> dict:
        """Mean terms over the window and over processes, lr, grad norm, throughput."""
        local = torch.tensor([self.sums.get(k, math.nan) / max(1, self.micro_steps) for k in self.NAMES],
                             device=accelerator.device)
        mean = accelerator.reduce(local, reduction="mean") if accelerator.num_processes > 1 else local
        elapsed = time.perf_counter() - self.start
        samples = self.steps * loop.batch_size * loop.grad_accum * accelerator.num_processes
        row = {"step": state.step, "epoch": state.samples // per_epoch, "lr": lr,
               "samples_per_s": round(samples / max(elapsed, 1e-9), 3), "time_s": round(elapsed, 3)}
        for k, v in zip(self.NAMES, mean.tolist()):
            row[k] = "" if math.isnan(v) else v
        if self.grad_norms:
            row["grad_norm"] = sum(self.grad_norms) / len(self.grad_norms)
        return row


def _hparams(config: TrainConfig) -> dict:
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            key = prefix[:-1]
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk("", config.to_dict())
    return flat


# ---------------------------------------------------------------------------------------- validation


class Validator:
    """Generates a video from a held-out clip with the current weights (main process only).

    Writes OUTPUT_DIR/validation/step-XXXXXXX.mp4 (ground truth | generated | trajectory over the
    generated video, side by side) and step-XXXXXXX.png (contact sheet of the generated frames with
    the trajectory drawn over them).
    """

    def __init__(self, config: TrainConfig, components: dict[str, Any] | None):
        self.config = config
        self.components = components  # vae, text encoder, ... (loaded on first use when None)
        self.clip = None

    def _held_out_clip(self):
        from ..data.dataset import Dataset

        v, d = self.config.validation, self.config.data
        kwargs = dict(num_frames=d.num_frames, stride=d.stride, size=tuple(d.size), sampling="start",
                      seed=self.config.seed, pad=d.pad)
        clips = Dataset(d.dataset, split=v.split, **kwargs)
        if len(clips) == 0:
            clips = Dataset(d.dataset, split=d.split, **kwargs)
        ids = [r["id"] for r in clips.records]
        if v.clip is not None and v.clip not in ids:
            raise ConfigError(f"{self.config.source}: validation.clip {v.clip} is not in {d.dataset}")
        return clips[ids.index(v.clip) if v.clip is not None else 0]

    def pipeline(self, joint):
        from copy import deepcopy

        from .conditioning import encoder_dtypes, encoder_names, load_base_components

        if self.components is None:
            self.components = load_base_components(self.config.base, encoder_names(self.config.model),
                                                   dtypes=encoder_dtypes(joint.base.device))
        c = self.components
        scheduler = deepcopy(c["scheduler"])
        if self.config.model == "wan":
            from ..pipelines.pipeline_wan import MagicMotionWanPipeline

            ti2v = {"expand_timesteps": True} if _expand_timesteps(self.config) else {}
            return MagicMotionWanPipeline(
                tokenizer=c["tokenizer"], text_encoder=c["text_encoder"], vae=c["vae"], scheduler=scheduler,
                transformer=joint.base, controlnet=joint.controlnet, image_processor=c.get("image_processor"),
                image_encoder=c.get("image_encoder"), **ti2v,
            )
        from ..pipelines.pipeline_cogvideox import MagicMotionCogVideoXPipeline

        return MagicMotionCogVideoXPipeline(
            tokenizer=c["tokenizer"], text_encoder=c["text_encoder"], vae=c["vae"], transformer=joint.base,
            scheduler=scheduler, controlnet=joint.controlnet,
        )

    @torch.no_grad()
    def __call__(self, joint, accelerator, step: int, output_dir: Path) -> Path:
        from ..io import overlay, write_preview, write_video
        from ..trajectory import sparsify

        if self.clip is None:
            self.clip = self._held_out_clip()
        cfg, v = self.config, self.config.validation
        clip = self.clip
        trajectory = clip.trajectory
        if cfg.condition == "sparse_box":
            trajectory = sparsify(trajectory, max_keys=cfg.data.sparse_max_keys, mode="random", seed=v.seed)
        pipe = self.pipeline(joint)
        pipe.to(accelerator.device)
        pipe.set_progress_bar_config(disable=True)
        width, height = cfg.data.size
        was_training = joint.controlnet.training
        joint.controlnet.eval()
        try:
            with accelerator.autocast():
                out = pipe(image=clip.frames[0], prompt=clip.caption, trajectory=trajectory, kind=cfg.condition,
                           num_frames=cfg.data.num_frames, height=height, width=width,
                           num_inference_steps=v.num_inference_steps, guidance_scale=v.guidance_scale,
                           generator=torch.Generator().manual_seed(v.seed), output_type="np")
        finally:
            joint.controlnet.train(was_training)
        frames = np.clip(np.asarray(out.frames[0]) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        maps = out.trajectory_maps
        folder = Path(output_dir) / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        video = np.concatenate([clip.frames[: len(frames)], frames, overlay(frames, maps)], axis=2)
        path = write_video(folder / f"step-{step:07d}.mp4", video, fps=clip.fps)
        write_preview(folder / f"step-{step:07d}.png", frames, maps)
        return path


# ---------------------------------------------------------------------------------------- train


def train(config: TrainConfig, resume: bool = False, progress: bool = True,
          callback: Callable[[int, dict], None] | None = None, overwrite: bool = False) -> TrainResult:
    """Train one stage as `config` says (see the module docstring). Returns a TrainResult.

    `resume=True` continues from the newest intact checkpoint in `output_dir` (damaged ones are
    skipped, saying why; or starts fresh when there is none). Without it an `output_dir` holding a
    run (checkpoints, final/, log.csv) is refused, unless `overwrite=True` removes that run first.
    A non-finite loss or gradient norm stops training (TrainingError naming the step); non-finite
    weights are never saved. A run that fails before its first checkpoint leaves no output folder
    behind. `callback(step, row)` runs after every optimiser step (and its checkpoint), on the main
    process.
    """
    output_dir = Path(config.output_dir)
    created = not output_dir.exists()
    threads = torch.get_num_threads()
    if config.loop.cpu_threads:
        torch.set_num_threads(config.loop.cpu_threads)
    try:
        return _train(config, resume, progress, callback, overwrite)
    except BaseException:
        if created and output_dir.is_dir() and not list_checkpoints(output_dir) \
                and not (output_dir / "final").exists():
            shutil.rmtree(output_dir, ignore_errors=True)  # nothing worth keeping was written
        raise
    finally:
        torch.set_num_threads(threads)


def check_output_dir(config: TrainConfig, resume: bool, overwrite: bool) -> None:
    """An output_dir that is a file, or holds a run while neither `resume` nor `overwrite` is given,
    is refused; with `overwrite` the earlier run's outputs are removed."""
    output_dir = Path(config.output_dir)
    src = config.source or "<config>"
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: pick one")
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"{src}: output_dir {output_dir} is a file, expected a folder")
    from ..paths import check_output

    base = config.base if Path(config.base).is_dir() else None  # a hub id is no folder of ours
    check_output(output_dir, [config.data.dataset, config.data.precomputed, base], what=f"{src}: output_dir",
                 error=ConfigError, folder=True, make_parents=True)
    if resume or not output_dir.is_dir():
        return
    runs = [n for n in RUN_OUTPUTS if (output_dir / n).exists()]
    if not runs:
        return
    if not overwrite:
        what = ("checkpoints" if list_checkpoints(output_dir) else
                "a finished run" if (output_dir / "final").exists() else "an earlier run")
        raise ConfigError(f"{src}: output_dir {output_dir} already holds {what}: pass --resume to continue that "
                          f"run, --overwrite to start over, or choose another output_dir (found {', '.join(runs)})")
    for name in runs:
        path = output_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


RUN_OUTPUTS = ("checkpoints", "final", "log.csv", "validation", "tensorboard", "config.yaml")


def _stop_if_not_finite(accelerator, value, what: str, step: int, config: TrainConfig) -> None:
    """TrainingError on every process when `value` is NaN or inf on any of them."""
    value = torch.as_tensor(value).detach().float()
    bad = torch.tensor([0.0 if torch.isfinite(value).all() else 1.0], device=accelerator.device)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    if bad.item():
        raise TrainingError(f"{config.source or 'training'}: step {step}: the {what} is not finite "
                            f"({float(value.reshape(-1)[0]) if value.numel() else 'nan'}); stopped before updating "
                            "the weights: lower optim.lr, check the data, or resume from the last checkpoint")


def _fresh_accelerate_state() -> None:
    """One process on its own (no launcher): forget the accelerate state an earlier run in this
    process left (its mixed precision would otherwise refuse this run's); launched runs keep theirs."""
    import os

    from accelerate.state import AcceleratorState

    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        AcceleratorState._reset_state(reset_partial_state=True)


def _train(config: TrainConfig, resume: bool, progress: bool, callback, overwrite: bool = False) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler
    from tqdm import tqdm

    from .data import PrecomputedIndex

    loop, optim = config.loop, config.optim
    if config.data.precomputed:  # before any model loads
        PrecomputedIndex.read(config.data.precomputed).check_fits(config)
    output_dir = Path(config.output_dir)
    check_output_dir(config, resume, overwrite)
    checkpoint = intact_checkpoint(output_dir, log=_warn) if resume else None
    from .conditioning import _model_index

    _model_index(config.base)  # the base's libraries and classes, checked before anything is set up
    from .config import check_base

    check_base(config)  # expert (Wan2.2 A14B) and size against the base, before anything is set up
    output_dir.mkdir(parents=True, exist_ok=True)

    _fresh_accelerate_state()
    accelerator = Accelerator(
        mixed_precision=loop.mixed_precision, gradient_accumulation_steps=loop.grad_accum,
        log_with="tensorboard" if loop.tensorboard else None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "tensorboard")),
    )
    if accelerator.state.deepspeed_plugin is not None:
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = loop.batch_size
        ds["gradient_accumulation_steps"] = loop.grad_accum
        ds["gradient_clipping"] = optim.max_grad_norm  # DeepSpeed clips inside its step
    set_seed(config.seed)

    # models: frozen base in the compute dtype, trainable ControlNet (+ head) in float32
    weight_dtype = WEIGHT_DTYPES[loop.mixed_precision]
    joint, scheduler = build_models(config, weight_dtype)
    if loop.gradient_checkpointing:
        joint.enable_gradient_checkpointing()
    modules = TrainableModules(joint)
    if checkpoint is not None and not _uses_accelerate_state(accelerator):
        load_checkpoint_weights(checkpoint, modules)
    params = [p for p in modules.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay,
                                  eps=optim.eps)
    lr_scheduler = get_scheduler(
        {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[optim.lr_schedule], optimizer,
        num_warmup_steps=optim.warmup_steps * accelerator.num_processes,
        num_training_steps=loop.max_steps * accelerator.num_processes,
    )
    modules, optimizer, lr_scheduler = accelerator.prepare(modules, optimizer, lr_scheduler)
    joint.base.to(accelerator.device)

    # data
    dataset, encoder = build_data(config, accelerator.device)
    sampler = ResumableSampler(len(dataset), config.seed, accelerator.process_index, accelerator.num_processes)
    state = TrainState()
    if checkpoint is not None:
        state = load_checkpoint_state(checkpoint, accelerator, optimizer, lr_scheduler)
        accelerator.print(f"resuming from {checkpoint} (step {state.step})")
    sampler.start(*divmod(state.samples, sampler.per_epoch()))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=loop.batch_size, sampler=sampler, collate_fn=collate,
        num_workers=0 if config.data.precomputed else config.data.num_workers,
        persistent_workers=False, pin_memory=accelerator.device.type == "cuda",
    )
    objective = TrainingObjective(config, joint.base.config, scheduler)
    validator = None
    if loop.validate_every:
        from accelerate.utils import DistributedType

        ds = accelerator.state.deepspeed_plugin
        if accelerator.distributed_type == DistributedType.FSDP or (ds is not None and ds.zero_stage == 3):
            # the pipeline would run the sharded ControlNet outside its wrapper (ZeRO-3: on the main
            # process alone, whose parameter gathering then waits for the others forever)
            accelerator.print("no validation videos under FSDP or ZeRO-3: generate from a checkpoint instead")
        elif config.expert is not None:
            # a video needs both experts, each with its ControlNet; this run trains one
            accelerator.print(f"no validation videos while training the {config.expert}-noise expert alone: "
                              "generate with both experts' ControlNets (--controlnet, --controlnet-2)")
        else:
            validator = Validator(config, encoder.pipe.components if encoder is not None else None)

    # logging
    log = None
    if accelerator.is_main_process:
        save_config(config, output_dir / "config.yaml")
        log = CsvLog(output_dir / "log.csv", state.step if checkpoint is not None else None)
    if loop.tensorboard:
        accelerator.init_trackers(config.model + "-stage" + str(config.stage), config=_hparams(config))

    history: list[dict] = []
    window = LogWindow()
    bar = tqdm(total=loop.max_steps, initial=state.step, desc=f"stage {config.stage}", unit="step",
               disable=not progress or not accelerator.is_main_process)
    batches = iter(loader)
    grad_norm = None
    saved_step = state.step if checkpoint is not None else None
    while state.step < loop.max_steps:
        # one optimiser step = grad_accum micro-steps
        for _ in range(loop.grad_accum):
            batch = next(batches)
            state.samples += len(batch["id"])
            with accelerator.accumulate(modules):
                if encoder is not None:
                    batch = encoder.encode(batch, need_mask=config.needs_mask_latents)
                batch = _to_device(batch, accelerator.device)
                terms = objective(modules, batch, sample_generators(batch["seed"]))
                _stop_if_not_finite(accelerator, terms["loss"], "loss", state.step + 1, config)
                accelerator.backward(terms["loss"])
                if accelerator.sync_gradients and optim.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(modules.parameters(), optim.max_grad_norm)
                    if grad_norm is not None:
                        _stop_if_not_finite(accelerator, grad_norm, "gradient norm", state.step + 1, config)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            state.micro_step += 1
            window.add(terms)
        state.step += 1
        window.step(grad_norm)
        bar.update()
        bar.set_postfix(loss=f"{float(terms['loss'].detach()):.4f}")

        row = None
        if state.step % loop.log_every == 0 or state.step == loop.max_steps:
            row = window.row(accelerator, state, sampler.per_epoch(), lr_scheduler.get_last_lr()[0], loop)
            if accelerator.is_main_process:
                log.write(row)
                history.append(row)
                if loop.tensorboard:
                    accelerator.log({k: v for k, v in row.items() if k not in ("step",) and v != ""}, step=state.step)
            window = LogWindow()
        if loop.save_every and state.step % loop.save_every == 0:
            save_checkpoint(accelerator, modules, optimizer, lr_scheduler, state, output_dir,
                            loop.keep_checkpoints, config)
            saved_step = state.step
        if validator is not None and state.step % loop.validate_every == 0:
            if accelerator.is_main_process:
                validator(joint, accelerator, state.step, output_dir)
            accelerator.wait_for_everyone()
        if callback is not None and accelerator.is_main_process:
            callback(state.step, row or {"step": state.step, "loss": float(terms["loss"].detach())})
    bar.close()

    if loop.save_every and saved_step != state.step:  # the last step too: --resume can then extend the run
        save_checkpoint(accelerator, modules, optimizer, lr_scheduler, state, output_dir, loop.keep_checkpoints, config)
    final = save_final(accelerator, modules, output_dir, config, state)
    accelerator.end_training()
    return TrainResult(step=state.step, output_dir=output_dir, final_dir=final, model=joint, history=history)
