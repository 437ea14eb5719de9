"""Memory and speed options on a loaded pipeline, the diffusers mechanisms with the Trajectory
ControlNet attached: model / group / sequential offload, fp8 layerwise casting, VAE tiling, block
caches (first-block, TaylorSeer, FasterCache) and LoRA (both experts of a Wan2.2 A14B base by
default). docs/generate.md, "Memory" and "Speed and memory, measured"."""

from __future__ import annotations
from ..errors import ModelError, PipelineError

OFFLOAD = ("none", "model", "group", "sequential")
WEIGHTS_DTYPES = ("default", "fp8")
CACHES = ("none", "first-block", "taylorseer", "faster")
LORA_EXPERTS = ("both", "high", "low")


def load_lora(pipe, lora, expert: str | None = None) -> None:
    """A LoRA into the base (diffusers' `load_lora_weights`). On a two-expert Wan2.2 A14B base: a file
    whose keys name the low-noise expert (`transformer_2.*`) goes expert by expert (its `transformer.*`
    keys to the high-noise expert, its `transformer_2.*` keys to the low-noise one); any other LoRA goes
    into both experts (diffusers' default is the high-noise one only). `expert` "high" or "low" loads
    into that expert alone (that expert's part of a file naming both); None or "both": as above.
    ModelError on an unreadable LoRA or one without keys for the expert asked for."""
    if expert is not None and expert not in LORA_EXPERTS:
        raise PipelineError(f"unknown LoRA expert {expert!r}: expected one of {', '.join(LORA_EXPERTS)}")
    try:
        if not getattr(pipe, "two_experts", False):
            if expert not in (None, "both"):
                raise PipelineError(f"a LoRA expert ({expert}) is for a two-expert Wan2.2 A14B base; this base has one")
            pipe.load_lora_weights(str(lora))
            return
        state = pipe.lora_state_dict(str(lora))
        low = "transformer_2."
        rest = {k: v for k, v in state.items() if not k.startswith(low)}
        if len(rest) < len(state):  # the file names the experts
            parts = {"high": rest, "low": {"transformer." + k[len(low):]: v for k, v in state.items() if k.startswith(low)}}
        else:
            parts = {"high": rest, "low": rest}
        if expert in ("high", "low"):
            if not parts[expert]:
                raise ModelError(f"{lora}: the LoRA has no keys for the {expert}-noise expert")
            parts = {expert: parts[expert]}
        for name, weights in parts.items():
            if weights:
                pipe.load_lora_weights(dict(weights), load_into_transformer_2=name == "low")
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"{lora}: cannot load the LoRA into the base ({e})") from None


def check_memory_options(offload: str = "none", weights_dtype: str = "default", cache: str = "none") -> None:
    """PipelineError naming the option on an unknown value."""
    for name, value, known in (("offload", offload, OFFLOAD), ("weights_dtype", weights_dtype, WEIGHTS_DTYPES),
                               ("cache", cache, CACHES)):
        if value not in known:
            raise PipelineError(f"unknown {name} {value!r}: expected one of {', '.join(known)}")


def cache_config(pipe, name: str):
    """diffusers' cache config for `name` (CACHES), with the settings we use.

    first-block: FirstBlockCache, threshold 0.05 (the rest of the blocks are skipped, their last residual
    reused, while the first block's output changes by less than 5%); taylorseer: TaylorSeer, a full
    step every 5 after the first 3, a first-order Taylor forecast of each attention's output between; faster: FasterCache (attention
    outputs extrapolated every other step, the unconditional branch approximated from the conditional
    one), which needs guidance with batched branches."""
    from diffusers import FasterCacheConfig, FirstBlockCacheConfig, TaylorSeerCacheConfig

    if name == "first-block":
        return FirstBlockCacheConfig(threshold=0.05)
    if name == "taylorseer":
        # diffusers' default patterns ("^blocks.*attn") miss Wan's and CogVideoX's attn1 / attn2
        return TaylorSeerCacheConfig(cache_interval=5, disable_cache_before_step=3,
                                     taylor_factors_dtype=pipe.transformer.dtype,
                                     cache_identifiers=[r"(blocks|transformer_blocks)\.\d+\.attn\d"])
    if name == "faster":
        is_wan = "Wan" in type(pipe.transformer).__name__
        inputs = ("hidden_states", "encoder_hidden_states", "timestep")
        return FasterCacheConfig(
            current_timestep_callback=lambda: pipe.current_timestep,
            tensor_format="BCFHW" if is_wan else "BFCHW",
            _unconditional_conditional_input_kwargs_identifiers=[*inputs, "encoder_hidden_states_image"]
            if is_wan else list(inputs))
    raise PipelineError(f"unknown cache {name!r}: expected one of {', '.join(CACHES)}")


def enable_memory_options(pipe, device: str | None = None, offload: str = "none", weights_dtype: str = "default",
                          cache: str = "none", vae_tiling: bool = False, vae_slicing: bool = False,
                          group_offload_type: str = "block_level"):
    """diffusers' speed and memory mechanisms on a loaded MagicMotion pipeline (returned). They work on
    the joint model because it runs the base's own forward (`magicmotion.models.transformer`).

    offload: as `load_pipeline` ("group": `enable_group_offload` on every model, `group_offload_type`
    "block_level" (one block per group) or "leaf_level"); weights_dtype "fp8": the transformer's and the
    ControlNet's weights stored in float8_e4m3fn, each layer cast to the pipeline's dtype when it runs
    (`enable_layerwise_casting`; about half the weight memory of bf16); cache: one of CACHES
    (`cache_config`), enabled on the base transformer; vae_tiling, vae_slicing: the VAE's own."""
    import torch

    from ..models.transformer import control_hooks
    from .loading import resolve_device

    check_memory_options(offload, weights_dtype, cache)
    device = resolve_device(device)
    experts = [(pipe.transformer, pipe.controlnet)]  # Wan2.2 A14B: and its low-noise expert
    if getattr(pipe, "transformer_2", None) is not None and getattr(pipe, "controlnet_2", None) is not None:
        experts.append((pipe.transformer_2, pipe.controlnet_2))
    for transformer, controlnet in experts:
        # the control hooks first, innermost on the base's blocks
        control_hooks(transformer.blocks if hasattr(transformer, "blocks") else transformer.transformer_blocks)
        if weights_dtype == "fp8":
            for component in (transformer, controlnet):
                component.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=component.dtype)
        if cache != "none":
            transformer.enable_cache(cache_config(pipe, cache))
    if vae_tiling:
        pipe.vae.enable_tiling()
    if vae_slicing:
        pipe.vae.enable_slicing()
    if offload == "none":
        pipe.to(device)
    elif offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "group":
        pipe.enable_group_offload(onload_device=torch.device(device), offload_type=group_offload_type,
                                  num_blocks_per_group=1 if group_offload_type == "block_level" else None)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    return pipe
