"""`magicmotion plan`: parameter counts and GPU memory estimates for a base, size, frames and batch.

Every part is built on the meta device (accelerate's `init_empty_weights`) at its real size from its
config, so nothing is downloaded or allocated: a local diffusers pipeline folder gives its own
configs; a hub id or short name uses the published configs shipped in `known_configs/` (each file
says where its numbers come from).

Memory figures are estimates from simple, stated formulas (not measurements):

- weights: parameters x bytes (bf16 2, fp8 1 for the transformer and ControlNet; encoders bf16);
- inference activations: per video token and sample, a block's working set (residual stream, normed
  input, q/k/v, attention output: 8 D values, plus the FFN hidden) in bf16, with memory-efficient
  attention (no L x L matrix), x2 for classifier-free guidance, plus the ControlNet residuals held
  for the base (k x D per token); the VAE decode is rough: 8 full-resolution feature maps of the
  decoder's first width over one chunk of frames;
- offload (`enable_model_cpu_offload`): one of the pipeline's `offload_groups` on the GPU at a time (a
  base transformer with its ControlNet; the VAE alone while it decodes);
- two-expert bases (Wan2.2 I2V-A14B): inference holds both experts and a ControlNet per expert (one
  expert and its ControlNet at a time with offload); training trains one expert's ControlNet per
  run, so only that expert is on the GPUs;
- training: frozen base bf16; trained ControlNet (+ head) fp32 weights 4 B, gradients 4 B, AdamW 8 B
  per parameter; ZeRO-2 shards gradients and AdamW states, ZeRO-3/FSDP (as configs/accelerate/fsdp.yaml)
  shards the trained weights too, "ZeRO-3 all" also the frozen base; activations with gradient
  checkpointing = every block's input kept (base and control) + one block recomputed (16 D + 2 FFN per
  token); without it, that per block; with latents and text embeddings precomputed (`data.precomputed`
  set, or `--base`) the encoders are not on the GPU; encoding on the fly (`precomputed: null`) adds the
  encoders' bf16 weights and the VAE's working set (as for the decode, over one chunk of frames);
- plus 1 GiB for the CUDA context and allocator slack;
- context-parallel inference over N GPUs (Wan; `generate --context-parallel`): every GPU holds all the
  weights and decodes the video; the per-token activations and ControlNet residuals are 1/N; ring
  attention also gathers one layer's keys and values of the whole sequence. Expected speed-up of the
  denoising loop (text encoding and VAE decode not counted), time ~ work: T_N = F / N / 400 TFLOP/s +
  bytes sent / 200 GB/s (assumed per-GPU bf16 throughput and collective bandwidth, no overlap), with F
  the step's FLOPs (2 x parameters x tokens for the base expert and ControlNet, 4 x tokens^2 x width per
  attention, x2 for CFG) and per attention layer Ulysses' four all-to-alls of q, k, v and the output
  ((N-1)/N^2 of the sequence each) or ring's all-gather of k and v ((N-1)/N of it).

Training time is an estimate too, from counted compute at an assumed utilisation (stated in the table):

- a forward pass of the base or ControlNet: 2 FLOPs per parameter and token plus self-attention,
  4 x seq^2 x D per block (cross-attention to the text is left out, a few percent at these sizes);
- a training sample: the frozen base forward, its backward to the inputs (same cost) and, with
  gradient checkpointing, its recomputed forward (3x); the ControlNet forward, backward (2x) and
  recompute (4x); without checkpointing 2x and 3x;
- encoding on the fly adds 4 VAE encodes per sample (video, first-frame video, the condition's maps,
  mask maps), counted with torch's FlopCounterMode on the meta-device VAE at a small size and scaled
  by pixels x frames (its convolutions are local), and one text-encoder forward;
- seconds = FLOPs / (GPUs x GPU_TFLOPS x UTILISATION); an H100's dense bf16 peak with 40% of it
  reached is assumed (a typical large-model training utilisation, not measured here).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError

KNOWN_DIR = Path(__file__).parents[1] / "models" / "known_configs"
GIB = 1024**3
CONTEXT_BYTES = 1 * GIB
# (label, usable GiB): the smallest that holds an estimate with 8% to spare is recommended.
GPUS = [("any GPU, or the CPU", 2), ("8 GB", 8), ("16 GB (T4, V100 16GB)", 16), ("24 GB (RTX 4090)", 24), ("40 GB (A100 40GB)", 40), ("48 GB (L40S, RTX 6000 Ada)", 48),
        ("80 GB (A100/H100 80GB)", 80), ("141 GB (H200)", 141)]
GPU_TFLOPS = 989.0  # H100 SXM, dense bf16 (NVIDIA's data sheet; 1979 is with 2:4 sparsity)
UTILISATION = 0.4  # assumed fraction of that peak a training step reaches
PART_NAMES = ("transformer", "transformer_2", "controlnet", "segment_head", "vae", "text_encoder", "image_encoder")


def known_bases() -> dict[str, dict]:
    """The shipped base descriptions by file stem (cogvideox-5b-i2v, wan2.1-i2v-14b-480p, ...)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(KNOWN_DIR.glob("*.json"))}


def _match_known(base: str) -> dict:
    known = known_bases()
    text = base.lower().rstrip("/")
    for stem, info in known.items():  # exact names first, then a name inside a path
        if text == stem or text in info["names"]:
            return {**info, "key": stem}
    for stem, info in known.items():
        if any(name in text for name in info["names"] if "/" in name or len(name) > 4):
            return {**info, "key": stem}
    for stem, info in known.items():
        if any(name in text for name in info["names"]):
            return {**info, "key": stem}
    raise ModelError(f"{base}: not a local pipeline folder and not a known base; known: " + ", ".join(known))


def resolve_base(base: str) -> dict:
    """A base description {family, parts: {name: [library, class, config]}, latent, ...}: from a local
    diffusers pipeline folder's own configs, else from the shipped configs by hub id or short name."""
    folder = Path(base)
    if (folder / "model_index.json").is_file():
        index = json.loads((folder / "model_index.json").read_text())
        parts = {}
        for name in ("transformer", "transformer_2", "vae", "text_encoder", "image_encoder"):
            entry = index.get(name)
            if not entry or entry[0] is None or not (folder / name / "config.json").is_file():
                continue
            parts[name] = [entry[0], entry[1], json.loads((folder / name / "config.json").read_text())]
        if "transformer" not in parts:
            raise ModelError(f"{folder}: no transformer/config.json")
        cls = parts["transformer"][1]
        like = _match_known("cogvideox-5b-i2v" if "CogVideoX" in cls else
                            "wan2.2-ti2v-5b" if index.get("expand_timesteps") else
                            "wan2.2-i2v-a14b" if "transformer_2" in parts else "wan2.1-fun-1.3b-inp")
        latent = dict(like["latent"])
        if "CogVideoX" in cls:
            latent["text_tokens"] = parts["transformer"][2].get("max_text_seq_length", 226)
        return {"key": str(folder), "names": [], "parts": parts, "latent": latent, "published": {},
                "_source": f"{folder} (its own configs)"}
    if folder.exists():
        raise ModelError(f"{folder}: not a diffusers pipeline folder (no model_index.json)")
    return _match_known(base)


def _build(library: str, cls_name: str, config: dict):
    import accelerate

    config = {k: v for k, v in config.items() if not k.startswith("_")}
    with accelerate.init_empty_weights():
        if library == "diffusers":
            import diffusers

            return getattr(diffusers, cls_name).from_config(config)
        import transformers

        cls = getattr(transformers, cls_name, None)
        if cls is None:
            raise ModelError(f"transformers has no {cls_name}")
        return cls(cls.config_class(**config))


def count_parameters(model) -> int:
    """Parameters of a (meta) model; an encoder's token embedding shared with `shared` counts once."""
    names = dict(model.named_parameters())
    total = 0
    for name, p in names.items():
        if name.endswith("embed_tokens.weight") and "shared.weight" in names:
            continue
        total += p.numel()
    return total


@dataclass
class Plan:
    """Counts and estimates for one base, size, frames and batch (see the module docstring)."""

    base: str
    family: str
    size: tuple[int, int]
    frames: int
    batch: int
    gpus: int
    control_layers: int
    base_layers: int
    tokens: int
    params: dict[str, int] = field(default_factory=dict)
    inference: dict[str, float] = field(default_factory=dict)  # row label -> bytes
    training: dict[str, float] = field(default_factory=dict)
    precomputed: bool = True  # training rows: latents precomputed (else encoded on the fly on the GPU)
    sample_flops: float = 0.0  # compute of one training sample (forward + backward), FLOPs
    encode_flops: float | None = None  # of its on-the-fly encoding (None: precomputed, or not countable)
    steps: int | None = None  # a config's optimizer steps
    samples_per_step: int | None = None  # batch x grad_accum x the config's GPUs
    transformer_config: dict[str, Any] = field(default_factory=dict)  # the base transformer's config
    offload_weights: dict[str, float] = field(default_factory=dict)  # bf16/fp8 -> the heaviest offload group
    # context parallel (Wan): "xN mode" -> (bytes per GPU all on GPU, with model offload, expected speed-up)
    # or a reason it cannot run
    parallel: dict[str, tuple[float, float, float] | str] = field(default_factory=dict)


def plan(base: str, size: tuple[int, int], frames: int, batch: int = 1, controlnet_layers: int | None = None,
         segment_head: bool = False, gpus: int = 4, gradient_checkpointing: bool = True,
         precomputed: bool = True) -> Plan:
    """Build every part of `base` on the meta device and estimate memory (bytes) for the settings."""
    from ..models.controlnet_cogvideox import CogVideoXTrajectoryControlNet
    from ..models.controlnet_wan import WanTrajectoryControlNet
    from ..models.segment_head import SegmentHead

    info = resolve_base(base)
    width, height = size
    if width <= 0 or height <= 0 or frames <= 0 or batch <= 0 or gpus <= 0:
        raise ModelError(f"plan: size, frames, batch and gpus must be positive, got {size}, {frames}, {batch}, {gpus}")
    models = {name: _build(*spec) for name, spec in info["parts"].items()}
    transformer = models["transformer"]
    family = "cogvideox" if hasattr(transformer, "transformer_blocks") else "wan"
    import accelerate

    blocks = transformer.transformer_blocks if family == "cogvideox" else transformer.blocks
    base_layers = len(blocks)
    if controlnet_layers is not None and not (isinstance(controlnet_layers, int)
                                              and 1 <= controlnet_layers <= base_layers):
        raise ModelError(f"plan: --controlnet-layers must be in 1..{base_layers} (the blocks of {base}), "
                         f"got {controlnet_layers}")
    k = base_layers if controlnet_layers is None else controlnet_layers
    cfg_t = transformer.config
    control_cls = CogVideoXTrajectoryControlNet if family == "cogvideox" else WanTrajectoryControlNet
    with accelerate.init_empty_weights():
        try:
            models["controlnet"] = control_cls.from_transformer(transformer, num_layers=k)
        except ModelError:
            if family != "wan":
                raise
            # Wan2.2 TI2V takes the image as latents in the 48 noise channels (no mask/image channels):
            # counted as a ControlNet of the same blocks on noise + trajectory latents.
            keep = ("patch_size", "num_attention_heads", "attention_head_dim", "text_dim", "freq_dim", "ffn_dim",
                    "cross_attn_norm", "qk_norm", "eps", "image_dim", "added_kv_proj_dim", "rope_max_seq_len")
            models["controlnet"] = control_cls(**{key: cfg_t[key] for key in keep if key in cfg_t},
                                               in_channels=2 * cfg_t.out_channels, num_layers=k,
                                               base_in_channels=cfg_t.in_channels, base_num_layers=base_layers)
        if segment_head:
            models["segment_head"] = SegmentHead.from_transformer(transformer)
    params = {name: count_parameters(m) for name, m in models.items()}

    cfg = transformer.config
    dim = cfg.num_attention_heads * cfg.attention_head_dim
    ffn = cfg.get("ffn_dim") or 4 * dim
    lat = info["latent"]
    patch = cfg.patch_size if isinstance(cfg.patch_size, (list, tuple)) else (cfg.get("patch_size_t") or 1, cfg.patch_size, cfg.patch_size)
    lat_frames = (frames - 1) // lat["temporal"] + 1
    tokens = (math.ceil(lat_frames / patch[0]) * (height // lat["spatial"] // patch[1])
              * (width // lat["spatial"] // patch[2]))
    seq = tokens + (lat.get("text_tokens", 0) if family == "cogvideox" else 0)

    bf16 = 2
    # inference (CFG: 2 x batch through the transformer)
    b_inf = 2 * batch
    act = b_inf * seq * (8 * dim + ffn) * bf16 + b_inf * k * tokens * dim * bf16
    if lat.get("expand_timesteps"):
        act += b_inf * tokens * 6 * dim * 4  # per-token modulation (fp32)
    vae_width = info["parts"]["vae"][2].get("decoder_base_dim") or info["parts"]["vae"][2].get("base_dim") or 128
    chunk = 4 if family == "wan" else 8
    vae_act = 8 * vae_width * min(chunk, frames) * height * width * bf16 * batch
    enc = {n: params.get(n, 0) * bf16 for n in ("vae", "text_encoder", "image_encoder")}
    experts = 2 if "transformer_2" in params else 1  # a ControlNet per expert
    inference, offload_weights = {}, {}
    for label, wbytes in (("bf16", 2), ("fp8", 1)):
        dit = (params["transformer"] + params.get("transformer_2", 0) + experts * params["controlnet"]) * wbytes
        inference[f"{label}, all on GPU"] = dit + sum(enc.values()) + max(act, vae_act) + CONTEXT_BYTES
        # model offload: the pipeline's groups, one on the GPU at a time (an expert with its ControlNet,
        # the VAE alone while it decodes)
        weights = {**enc, **{n: params[n] * wbytes for n in ("transformer", "transformer_2") if n in params},
                   "controlnet": params["controlnet"] * wbytes}
        if experts == 2:
            weights["controlnet_2"] = weights["controlnet"]
        groups = [sum(weights.get(n, 0) for n in group) for group in offload_groups(family)]
        working = [act if "transformer" in group[0] else vae_act if group == ("vae",) else 0
                   for group in offload_groups(family)]
        offload_weights[label] = max(groups)
        inference[f"{label}, model offload"] = max(w + a for w, a in zip(groups, working)) + CONTEXT_BYTES
    # training (per GPU): one expert per run on a two-expert base
    trained = params["controlnet"] + params.get("segment_head", 0)
    frozen = params["transformer"] * bf16
    per_block = batch * seq * (16 * dim + 2 * ffn) * bf16
    if gradient_checkpointing:
        train_act = (base_layers + k) * batch * seq * dim * bf16 + per_block
    else:
        train_act = (base_layers + k) * per_block
    if segment_head:
        train_act += base_layers * batch * tokens * 64 * 4 * 4  # head features (x4 after upsampling), fp32
    n = gpus
    rows = {
        "DDP (nothing sharded)": frozen + trained * 16,
        f"ZeRO-2 x{n} (grads + AdamW sharded)": frozen + trained * 4 + trained * 12 / n,
        f"ZeRO-3/FSDP x{n} (trained weights too)": frozen + trained * 16 / n,
        f"ZeRO-3 x{n} all (frozen base too)": frozen / n + trained * 16 / n,
    }
    encoders = 0 if precomputed else enc["vae"] + enc["text_encoder"] + enc["image_encoder"] + vae_act
    training = {label: states + train_act + encoders + CONTEXT_BYTES for label, states in rows.items()}
    # compute of one training sample (module docstring)
    fwd_base = 2 * params["transformer"] * seq + 4 * base_layers * seq**2 * dim
    fwd_control = 2 * params["controlnet"] * seq + 4 * k * seq**2 * dim
    sample = (3 * fwd_base + 4 * fwd_control) if gradient_checkpointing else (2 * fwd_base + 3 * fwd_control)
    sample *= batch
    encode = None
    if not precomputed:
        per_pixel = _vae_encode_flops_per_pixel(info["parts"]["vae"], lat)
        if per_pixel is not None:
            text = 2 * params.get("text_encoder", 0) * lat.get("text_tokens", 512)
            encode = batch * (4 * per_pixel * frames * height * width + text)
    parallel = {}
    if family == "wan":
        weights = ((params["transformer"] + params.get("transformer_2", 0) + experts * params["controlnet"]) * bf16
                   + sum(enc.values()))
        one_expert = (params["transformer"] + params["controlnet"]) * bf16
        parallel = context_parallel_rows(weights, one_expert, enc, act, vae_act, b_inf, tokens, dim,
                                         cfg.num_attention_heads, params["transformer"] + params["controlnet"],
                                         base_layers + k, sorted({2, 4, 8} | ({gpus} if gpus > 1 else set())))
    return Plan(base=info["key"], family=family, size=(width, height), frames=frames, batch=batch, gpus=gpus,
                control_layers=k, base_layers=base_layers, tokens=tokens, params=params,
                inference=inference, training=training, precomputed=precomputed, sample_flops=sample,
                encode_flops=encode, transformer_config=dict(cfg), offload_weights=offload_weights,
                parallel=parallel)


def offload_groups(family: str) -> tuple[tuple[str, ...], ...]:
    """The components the pipeline keeps on the GPU together under model offload (its `offload_groups`)."""
    from ..pipelines.pipeline_cogvideox import MagicMotionCogVideoXPipeline
    from ..pipelines.pipeline_wan import MagicMotionWanPipeline

    return (MagicMotionWanPipeline if family == "wan" else MagicMotionCogVideoXPipeline).offload_groups


def _vae_encode_flops_per_pixel(spec, lat: dict) -> float | None:
    """The VAE encoder's FLOPs per pixel and frame, counted with FlopCounterMode on the meta device at
    a small size (1 + 2 x temporal frames of 64x64); None where the meta forward cannot run."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    vae = _build(*spec)
    frames = 1 + 2 * int(lat.get("temporal", 4))
    x = torch.empty(1, 3, frames, 64, 64, device="meta")
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            vae.encode(x)
    except Exception:  # a VAE whose forward does not run on meta tensors: not estimated, and said so
        return None
    return counter.get_total_flops() / (frames * 64 * 64)


def stage_hours(p: Plan, gpus: int) -> float | None:
    """Estimated hours of a config's whole stage (`p.steps` optimizer steps of `p.samples_per_step`
    samples) on `gpus` GPUs, the samples split across them (module docstring)."""
    if p.steps is None:
        return None
    flops = p.steps * p.samples_per_step * (p.sample_flops + (p.encode_flops or 0)) / p.batch
    return flops / (gpus * GPU_TFLOPS * 1e12 * UTILISATION) / 3600


ASSUMED_FLOPS = 400e12  # bf16 FLOP/s per GPU actually reached (about 40% of an H100's dense peak)
ASSUMED_LINK = 200e9  # bytes/s a GPU sends in collectives (NVLink-class, well below its peak)


def context_parallel_rows(weights: float, one_expert: float, encoders: dict, act: float, vae_act: float, batch: int,
                          tokens: int, dim: int, heads: int, params_run: int, attention_layers: int,
                          counts: list[int]) -> dict:
    """Per-GPU bytes (all on GPU, and with model offload: one expert and its ControlNet at a time) and
    expected denoising speed-up of context-parallel inference over each count of GPUs in `counts`,
    Ulysses and ring (formulas in the module docstring); a reason where it cannot run."""
    bf16 = 2
    flops = batch * (2 * params_run * tokens + 4 * tokens**2 * dim * attention_layers)
    one = flops / ASSUMED_FLOPS
    rows: dict[str, tuple[float, float, float] | str] = {}
    for n in counts:
        for mode in ("ulysses", "ring"):
            label = f"x{n} {mode}"
            if tokens % n:
                rows[label] = f"{tokens} tokens do not split in {n}"
                continue
            if mode == "ulysses" and heads % n:
                rows[label] = f"{heads} heads do not divide by {n}"
                continue
            seq = batch * tokens * dim * bf16  # one activation of the whole sequence
            if mode == "ulysses":
                sent, extra = 4 * seq * (n - 1) / n**2, 0.0
            else:
                sent, extra = 2 * seq * (n - 1) / n, 2 * seq
            all_on = weights + max(act / n + extra, vae_act) + CONTEXT_BYTES
            offload = max(one_expert + act / n + extra, encoders["vae"] + vae_act, encoders["text_encoder"],
                          encoders["image_encoder"]) + CONTEXT_BYTES
            rows[label] = (all_on, offload, one / (one / n + attention_layers * sent / ASSUMED_LINK))
    return rows


def recommend_gpu(nbytes: float) -> str:
    for label, gib in GPUS:
        if nbytes <= 0.92 * gib * GIB:
            return label
    return "more than one 141 GB GPU"


def format_plan(p: Plan) -> str:
    """The plan as plain-text tables (parameters; inference memory; training memory per GPU)."""
    two = "transformer_2" in p.params
    names = {"transformer": "base transformer" + (" (high-noise expert)" if two else ""),
             "transformer_2": "base transformer_2 (low-noise)",
             "controlnet": f"ControlNet ({p.control_layers} of {p.base_layers} blocks)" + (", each" if two else ""),
             "segment_head": "segment head", "vae": "VAE", "text_encoder": "text encoder", "image_encoder": "image encoder"}
    lines = [f"base {p.base} ({p.family}); {p.size[0]}x{p.size[1]}, {p.frames} frames, batch {p.batch}; "
             f"{p.tokens} video tokens per sample", "", f"{'part':<34} {'parameters':>14}"]
    for name in PART_NAMES:
        if name in p.params:
            lines.append(f"{names[name]:<34} {p.params[name] / 1e9:>13.3f}B")
    total = sum(p.params.values()) + (p.params["controlnet"] if two else 0)  # a ControlNet per expert
    lines.append(f"{'total':<34} {total / 1e9:>13.3f}B")
    lines += ["", "GPU memory, estimates (formulas in magicmotion/training/plan.py; not measurements)", ""]
    lines.append(f"{'inference (CFG, one GPU)':<44} {'peak GiB':>9}  smallest GPU")
    for label, nbytes in p.inference.items():
        lines.append(f"{label:<44} {nbytes / GIB:>9.1f}  {recommend_gpu(nbytes)}")
    lines.append("")
    how = "precomputed latents" if p.precomputed else "encoded on the fly"
    lines.append(f"{f'training, per GPU ({how})':<44} {'peak GiB':>9}  smallest GPU")
    for label, nbytes in p.training.items():
        lines.append(f"{label:<44} {nbytes / GIB:>9.1f}  {recommend_gpu(nbytes)}")
    lines += ["", f"training compute per sample: {_flop(p.sample_flops / p.batch)} (forward + backward)"
              + ("" if p.precomputed else
                 f" + {_flop(p.encode_flops / p.batch)} encoding on the fly" if p.encode_flops is not None
                 else " + on-the-fly encoding (not estimated for this VAE)")]
    if p.steps is not None:
        samples = p.steps * p.samples_per_step
        lines.append(f"stage time, estimate: {p.steps} steps x {p.samples_per_step} samples (batch x accumulation x "
                     f"--gpus {p.gpus}) = {samples} samples, at "
                     f"{100 * UTILISATION:.0f}% of an H100's {GPU_TFLOPS:.0f} bf16 TFLOPS "
                     "(the same samples, split over the GPUs):")
        lines.append("  " + ", ".join(f"{g} GPU{'s' if g > 1 else ''} {_hours(stage_hours(p, g))}"
                                      for g in sorted({1, p.gpus, 8})))
    lines += ["", *format_parallel(p)]
    return "\n".join(lines)


def _hours(h: float) -> str:
    return "under a minute" if h < 1 / 60 else f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def _flop(n: float) -> str:
    return f"{n / 1e12:.1f} TFLOP" if n >= 1e11 else f"{n / 1e9:.2f} GFLOP"




def format_parallel(p: Plan) -> list[str]:
    """The context-parallel rows of `format_plan` (one video split over N GPUs, bf16, all on GPU)."""
    if p.family != "wan":
        return ["context parallel (one video over N GPUs): Wan bases only (diffusers has no plan for CogVideoX)"]
    lines = [f"{'context parallel, one video (bf16), per GPU':<44} {'peak GiB':>9}  {'offload':>8}  {'speed-up':>8}  "
             "smallest GPU (offload)"]
    for label, row in p.parallel.items():
        if isinstance(row, str):
            lines.append(f"{label:<44} {'-':>9}  {'-':>8}  {'-':>8}  ({row})")
        else:
            fits = [recommend_gpu(b) if b <= 0.92 * GPUS[-1][1] * GIB else "none fits" for b in row[:2]]
            lines.append(f"{label:<44} {row[0] / GIB:>9.1f}  {row[1] / GIB:>8.1f}  {row[2]:>7.1f}x  "
                         f"{fits[0]} ({fits[1]})")
    lines.append("  (offload: --offload model, one expert and its ControlNet on the GPU at a time; speed-up of the "
                 "denoising loop, estimated from its work and traffic: formulas in magicmotion/training/plan.py)")
    return lines


def plan_from_config(path: str, gpus: int = 4) -> Plan:
    """The plan of a training config (configs/*/stage*.yaml): its base, size, frames, batch,
    control blocks, segment head and gradient checkpointing."""
    from .config import load_config

    config = load_config(path, check=False)
    p = plan(config.base, tuple(config.data.size), config.data.num_frames, config.loop.batch_size,
             controlnet_layers=config.controlnet_layers, segment_head=config.segment_head, gpus=gpus,
             gradient_checkpointing=config.loop.gradient_checkpointing, precomputed=bool(config.data.precomputed))
    p.steps = config.loop.max_steps
    p.samples_per_step = config.loop.batch_size * config.loop.grad_accum * gpus
    return p


def register(sub) -> None:
    """`magicmotion plan CONFIG | --base BASE --size WxH --frames N --batch B`."""
    parser = sub.add_parser(
        "plan", help="parameter counts and GPU memory estimates for a config or a base",
        description="Build every part of the base on the meta device (no download, no memory) and print "
        "parameter counts and estimated peak GPU memory for inference (bf16/fp8, with and without offload) "
        "and training (DDP, ZeRO-2, ZeRO-3/FSDP). Bases: a local diffusers pipeline folder, or one of "
        + ", ".join(known_bases()) + " (or their hub ids). Estimates, not measurements.")
    parser.add_argument("config", nargs="?", metavar="CONFIG", help="a training config (configs/*/stage*.yaml)")
    parser.add_argument("--base", help="base instead of a config: pipeline folder, hub id or known name")
    parser.add_argument("--size", metavar="WxH", help="video size with --base (default 832x480; CogVideoX 720x480)")
    parser.add_argument("--frames", type=int, default=None, help="frames with --base (default 49)")
    parser.add_argument("--batch", type=int, default=1, help="batch per GPU with --base (default 1)")
    parser.add_argument("--controlnet-layers", type=int, default=None, help="control blocks with --base (default all)")
    parser.add_argument("--segment-head", action="store_true", help="with --base: stages 2-3 (segment head)")
    parser.add_argument("--gpus", type=int, default=4,
                        help="GPUs for the sharded training rows (default 4); the context-parallel rows show 2, 4, 8 "
                             "and this")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    if bool(args.config) == bool(args.base):
        raise ModelError("plan: give a CONFIG or --base (not both)")
    if args.config:
        print(format_plan(plan_from_config(args.config, gpus=args.gpus)))
        return 0
    size = args.size or ("720x480" if "cogvideox" in args.base.lower() else "832x480")
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise ModelError(f"plan: --size must be WxH, got {size!r}") from None
    from ..limits import check_frames, check_size

    check_size(width, height, "plan", ModelError, "--size")
    check_frames(args.frames or 49, "plan", "--frames", ModelError)
    print(format_plan(plan(args.base, (width, height), args.frames or 49, args.batch,
                           controlnet_layers=args.controlnet_layers, segment_head=args.segment_head, gpus=args.gpus)))
    return 0
