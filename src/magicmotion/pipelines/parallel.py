"""Context-parallel inference: one video's token sequence split across the processes of a launch
(`torchrun` / `accelerate launch`, one GPU each), with diffusers' context parallelism
(`ContextParallelConfig`, `enable_parallelism`, the transformer's `_cp_plan`):

- "ring": every process keeps 1/N of the queries and gathers the keys and values of the others
  (diffusers' ring attention; it merges the parts with their log-sum-exp, which only the CUDA
  kernels return: cuDNN attention here, bf16 / fp16);
- "ulysses": an all-to-all gives every process the whole sequence for 1/N of the heads (the number of
  heads must divide by N).

The Trajectory ControlNet runs split the same way as the base, with its own `_cp_plan`
(`WanTrajectoryControlNet._cp_plan`): its rotary tables and the tokens entering its first block (the
noisy and trajectory latents, patch-embedded together, so the trajectory is split with the video)
are cut into the same N parts as the base's, and nothing of it is gathered: process r's residual of
control block i is the r-th part, which the block hook (`magicmotion.models.transformer`) adds to the
r-th part of base block i's output. The base's output is gathered (its `proj_out`), so every process
steps the scheduler on the same full latents and decodes the same video; rank 0 writes it.

Options under a split:
- work: `--cache taylorseer` and `--cache faster` (their decisions follow the step count, the same on
  every process, and they keep each process's own part), the ControlNet reuse options
  (`control_every`, `control_dense`, `control_branches`), `cfg_mode`, trajectory guidance, fp8 weights,
  model offload, VAE tiling, LoRA, both experts of Wan2.2 A14B, Wan2.2 TI2V's per-token timesteps;
- refused (`check_context_parallel`, before anything loads): `--cache first-block` (each process would
  judge "the first block barely changed" on its own part, and processes that disagree wait in
  different collectives), `--offload group|sequential` (their per-layer hooks are untested beside the
  split's), CogVideoX (diffusers 0.42 has no context-parallel plan for it), ring on CPU, and sizes
  whose token count (or, for Ulysses, head count) does not divide by the number of processes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from ..errors import PipelineError

MODES = ("ring", "ulysses")
RING_BACKEND = "_native_cudnn"  # diffusers' attention backend that returns the log-sum-exp ring attention needs
UNSPLIT_CACHES = {"first-block": "each process would decide to skip blocks from its own part of the sequence, "
                                 "and processes that disagree hang"}
UNSPLIT_OFFLOAD = ("group", "sequential")


@dataclass(frozen=True)
class ContextParallel:
    """A pipeline's split, as `enable_context_parallel` set it (`pipe.context_parallel`)."""

    mode: str
    rank: int
    world_size: int

    @property
    def writes(self) -> bool:
        """Whether this process writes outputs (rank 0 only)."""
        return self.rank == 0

    def record(self) -> dict:
        return {"mode": self.mode, "processes": self.world_size}


def launch_world() -> tuple[int, int]:
    """(rank, world size) of the launch this process is part of (torchrun / accelerate launch set RANK
    and WORLD_SIZE); (0, 1) without a launcher."""
    from .batch import _env_int

    return _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)


def video_tokens(transformer_config: dict, multiple: int, num_frames: int, width: int, height: int,
                 temporal: int = 4) -> int:
    """Tokens of one video in a Wan base: latent frames / temporal patch x (H / multiple) x (W / multiple)
    (`multiple`: VAE factor x spatial patch, `ModelLimits.multiple`)."""
    p_t = int(transformer_config.get("patch_size", (1, 2, 2))[0])
    return ((num_frames - 1) // temporal + 1) // p_t * (height // multiple) * (width // multiple)


def check_split(mode: str, world_size: int, transformer_config: dict, tokens: int) -> None:
    """PipelineError unless `tokens` (and, for Ulysses, the heads) divide into `world_size` parts."""
    if tokens % world_size:
        raise PipelineError(f"context parallel over {world_size} processes: the video has {tokens} tokens, which do "
                            f"not split into {world_size} equal parts; pick a size or frame count whose token count "
                            f"divides by {world_size}")
    heads = int(transformer_config.get("num_attention_heads", 1))
    if mode == "ulysses" and heads % world_size:
        fits = [n for n in range(2, heads + 1) if heads % n == 0 and n <= 16]
        raise PipelineError(f"--context-parallel ulysses over {world_size} processes: the base has {heads} attention "
                            f"heads, which do not divide by {world_size} (it can use {', '.join(map(str, fits))}); "
                            "use ring or another process count")


def check_context_parallel(mode: str, *, family: str, transformer_config: dict | None = None,
                           multiple: int | None = None, num_frames: int | None = None,
                           size: tuple[int, int] | None = None, device: str | None = None, dtype=None,
                           cache: str = "none", offload: str = "none", world_size: int | None = None) -> None:
    """Every check of a context-parallel run that needs no weights (PipelineError, one line): a launch of
    2+ processes, a Wan base, options valid under a split, ring on CUDA in bf16 / fp16, and (given the
    base's config, size and frames) a token count and head count that divide by the processes."""
    if mode not in MODES:
        raise PipelineError(f"unknown --context-parallel {mode!r}: expected one of {', '.join(MODES)}")
    world = launch_world()[1] if world_size is None else world_size
    if world < 2:
        raise PipelineError(f"--context-parallel {mode} splits one video across the processes of a launch: run it "
                            "under `torchrun --nproc-per-node N` or `accelerate launch --num_processes N` with N >= 2")
    if family != "wan":
        raise PipelineError(f"--context-parallel is for Wan bases: diffusers has no context-parallel plan for "
                            f"{family} (its attention joins text and video tokens)")
    if cache in UNSPLIT_CACHES:
        raise PipelineError(f"--cache {cache} cannot run with --context-parallel: {UNSPLIT_CACHES[cache]}; "
                            "use taylorseer, faster or none")
    if offload in UNSPLIT_OFFLOAD:
        raise PipelineError(f"--offload {offload} is not supported with --context-parallel; use none or model")
    if mode == "ring":
        ring_attention_backend(str(device) if device is not None else ("cuda" if _cuda_available() else "cpu"),
                               dtype)
    if transformer_config is not None and multiple and num_frames and size:
        check_split(mode, world, transformer_config,
                    video_tokens(transformer_config, multiple, num_frames, size[0], size[1]))


def ring_attention_backend(device: str, dtype=None) -> str:
    """The diffusers attention backend ring attention runs on: cuDNN attention (`RING_BACKEND`), which
    returns the log-sum-exp the ring merges its parts with; PipelineError off CUDA or in fp32."""
    if not device.startswith("cuda"):
        raise PipelineError("--context-parallel ring needs CUDA GPUs (diffusers' ring attention merges the parts "
                            "with a log-sum-exp that only its CUDA kernels give); on CPUs use ulysses")
    if dtype is not None and str(dtype).replace("torch.", "") in ("fp32", "float32"):
        raise PipelineError("--context-parallel ring runs cuDNN attention, which takes bf16 or fp16: drop --dtype fp32 "
                            "or use ulysses")
    return RING_BACKEND


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# ---------------------------------------------------------------------------------------- enabling


def _plan(model, per_token_timesteps: bool) -> dict:
    """The model's `_cp_plan`, without the timestep split for bases with one timestep per sample (the
    split applies only to Wan2.2 TI2V's (B, L) timesteps; kept, it warns on every step)."""
    return {k: v for k, v in model._cp_plan.items() if k != "" or per_token_timesteps}


@contextlib.contextmanager
def _one_device_on_cpu():
    """diffusers' `enable_parallelism` names each process's device `rank % accelerator count`, which
    divides by zero on a machine with no accelerator; there, count one (the CPU) while it runs."""
    import torch

    if torch.accelerator.device_count() > 0:
        yield
        return
    original = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


def context_parallel_config(mode: str, world_size: int, mesh=None):
    """diffusers' `ContextParallelConfig` for `mode` over `world_size` processes (on `mesh` if given)."""
    from diffusers import ContextParallelConfig

    degree = {"ring_degree": world_size} if mode == "ring" else {"ulysses_degree": world_size}
    return ContextParallelConfig(**degree, mesh=mesh)


def enable_context_parallel(pipe, mode: str):
    """Split `pipe`'s denoising across the processes of the launch this process is part of (every
    process calls it, with the same pipeline on its own device, e.g. loaded with
    `device=magicmotion.pipelines.batch.process_device()`; `torch.distributed` is set up here when the
    launcher has not). Returns `pipe`, with `pipe.context_parallel` (a `ContextParallel`); every
    process then calls the pipeline (or `generate`) with the same arguments and seed, and gets the
    whole video; `pipe.context_parallel.writes` says which one writes it (rank 0).

    The base transformer (and Wan2.2 A14B's `transformer_2`) get diffusers' `enable_parallelism` with
    their `_cp_plan`; each Trajectory ControlNet gets it with its own plan (split, never gathered), so
    every process adds its part of each residual to its part of the sequence. Ring attention runs on
    cuDNN attention (`RING_BACKEND`).

    Raises:
        PipelineError: see `check_context_parallel` (checked again here, from the loaded pipeline).
    """
    if getattr(pipe, "context_parallel", None) is not None:
        raise PipelineError(f"context parallelism is already on for this pipeline ({pipe.context_parallel.mode})")
    family = "wan" if hasattr(pipe.transformer, "blocks") else "cogvideox"
    device = str(pipe._execution_device)
    cache, offload = _loaded_options(pipe.transformer)
    check_context_parallel(mode, family=family, device=device, dtype=pipe.transformer.dtype, cache=cache,
                           offload=offload)
    models = [pipe.transformer, pipe.controlnet]
    if getattr(pipe, "transformer_2", None) is not None:
        models += [pipe.transformer_2, pipe.controlnet_2]
    pipe.context_parallel = split_models([m for m in models if m is not None], mode, device,
                                         per_token_timesteps=bool(pipe.config.get("expand_timesteps", False)))
    if not pipe.context_parallel.writes:  # one progress bar, rank 0's
        pipe.set_progress_bar_config(disable=True)
    return pipe


def split_models(models, mode: str, device: str, per_token_timesteps: bool = False) -> ContextParallel:
    """diffusers' `enable_parallelism` on each model (Wan base transformers and Trajectory ControlNets)
    with its `_cp_plan`, all on one device mesh over the launch's processes; ring attention on
    `ring_attention_backend`. `per_token_timesteps`: Wan2.2 TI2V's (B, L) timesteps, split with the
    tokens. Returns this process's `ContextParallel`."""
    import torch

    _quiet_library_notes()
    rank, world = _process_group(device)
    mesh = torch.distributed.device_mesh.init_device_mesh(
        "cuda" if device.startswith("cuda") else "cpu", (world, 1) if mode == "ring" else (1, world),
        mesh_dim_names=("ring", "ulysses"))
    for model in models:
        if mode == "ring":
            model.set_attention_backend(ring_attention_backend(device, model.dtype))
        with _one_device_on_cpu():
            model.enable_parallelism(config=context_parallel_config(mode, world, mesh),
                                     cp_plan=_plan(model, per_token_timesteps))
    return ContextParallel(mode=mode, rank=rank, world_size=world)


def _quiet_library_notes() -> None:
    """Drop two notes diffusers prints on every split (docs/generate.md says what they say): that
    `enable_parallelism` is experimental (once per model) and torch's deprecation of the all-gather
    diffusers calls."""
    import logging
    import warnings

    class Drop(logging.Filter):
        def filter(self, record):
            return "`enable_parallelism` is an experimental feature" not in record.getMessage()

    logger = logging.getLogger("diffusers.models.modeling_utils")
    if not any(isinstance(f, logging.Filter) and type(f).__name__ == "Drop" for f in logger.filters):
        logger.addFilter(Drop())
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\._functional_collectives\.all_gather_tensor` is "
                            "deprecated", category=FutureWarning)


def _loaded_options(transformer) -> tuple[str, str]:
    """(cache, offload) as `check_context_parallel` names them, of the refused ones found on a loaded
    base: FirstBlockCache's hook on its first block, group offload, sequential offload (accelerate's
    offloading hooks on its layers); "none" otherwise."""
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    blocks = getattr(transformer, "blocks", None) or getattr(transformer, "transformer_blocks", [])
    registry = getattr(blocks[0], "_diffusers_hook", None) if len(blocks) else None
    cache = "first-block" if registry is not None and registry.get_hook("fbc_leader_block_hook") else "none"
    if _is_group_offload_enabled(transformer):
        return cache, "group"
    if any(getattr(getattr(m, "_hf_hook", None), "offload", False) for m in transformer.modules()):
        return cache, "sequential"
    return cache, "none"


def _process_group(device: str) -> tuple[int, int]:
    """(rank, world size) of torch.distributed, set up through accelerate (nccl on CUDA, gloo on CPU) when
    the launcher has not."""
    import torch.distributed as dist

    if not dist.is_initialized():
        from .batch import _partial_state

        _partial_state()
    if not dist.is_initialized():
        raise PipelineError("context parallelism needs torch.distributed: launch with torchrun or accelerate launch")
    return dist.get_rank(), dist.get_world_size()


def shared_seed(seed: int | None) -> int:
    """The seed every process of a split uses: rank 0's (a random one when None), sent to the others."""
    import torch.distributed as dist

    from .generate import random_seed

    value = [random_seed() if seed is None else int(seed)]
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(value, src=0)
    return int(value[0])


def split_of(pipe) -> ContextParallel | None:
    """The pipeline's `ContextParallel`, or None when it runs whole."""
    return getattr(pipe, "context_parallel", None)


def check_pipeline_split(pipe, num_frames: int, height: int, width: int) -> None:
    """For a split pipeline, PipelineError unless this video's tokens (and heads) divide by the processes."""
    split = split_of(pipe)
    if split is None:
        return
    config: dict[str, Any] = dict(pipe.transformer.config)
    multiple = pipe.spatial_multiple()
    tokens = video_tokens(config, multiple, num_frames, width, height, pipe.vae_scale_factor_temporal)
    check_split(split.mode, split.world_size, config, tokens)


__all__ = ["MODES", "ContextParallel", "check_context_parallel", "check_pipeline_split", "check_split",
           "context_parallel_config", "enable_context_parallel", "launch_world", "ring_attention_backend", "shared_seed", "split_models", "split_of",
           "video_tokens"]
