"""Checkpoints and resuming: the run's state, atomic checkpoints with a manifest of checksums, the
newest intact one found after a crash, RNG states, and the final weights (FSDP / DeepSpeed gathered)."""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, ModelError, TrainingError
from ..io import fsync_dir, fsync_tree
from .config import TrainConfig, save_config
from .setup import TrainableModules


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


def warn(message: str) -> None:
    import sys

    print(f"magicmotion: {message}", file=sys.stderr)


def check_finite_weights(module, what: str) -> None:
    """Never save NaN or inf weights."""
    for name, p in module.named_parameters():
        if not torch.isfinite(p.detach()).all():
            raise TrainingError(f"{what}: parameter {name} is not finite; nothing saved")


def uses_accelerate_state(accelerator) -> bool:
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
    if uses_accelerate_state(accelerator):
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
                fresh.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
                                      assign=True)
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
    if uses_accelerate_state(accelerator):
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
    if uses_accelerate_state(accelerator):
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
