"""The training loop: one stage of MagicMotion on accelerate (the distributed setup, the loop, and the
calls into its parts: setup.py builds models and data, objective.py is one step's loss, checkpoints.py
saves and resumes, logs.py and validation.py write what a run shows as it goes).

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

import shutil
from pathlib import Path
from typing import Callable

import torch

from ..errors import ConfigError, TrainingError
from .checkpoints import (TrainResult, TrainState, intact_checkpoint, list_checkpoints, load_checkpoint_state,
                          load_checkpoint_weights, save_checkpoint, save_final, uses_accelerate_state, warn)
from .config import TrainConfig, save_config
from .data import ResumableSampler, collate
from .logs import CsvLog, LogWindow, hparams
from .objective import TrainingObjective, sample_generators
from .setup import TrainableModules, build_data, build_models, to_device
from .validation import Validator

WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
    checkpoint = intact_checkpoint(output_dir, log=warn) if resume else None
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
    if checkpoint is not None and not uses_accelerate_state(accelerator):
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
        accelerator.init_trackers(config.model + "-stage" + str(config.stage), config=hparams(config))

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
                batch = to_device(batch, accelerator.device)
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
