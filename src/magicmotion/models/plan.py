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
- offload (`enable_model_cpu_offload`): one part on the GPU at a time;
- two-expert bases (Wan2.2 I2V-A14B): inference holds both experts and a ControlNet per expert (one
  expert and its ControlNet at a time with offload); training trains one expert's ControlNet per
  run, so only that expert is on the GPUs;
- training: frozen base bf16; trained ControlNet (+ head) fp32 weights 4 B, gradients 4 B, AdamW 8 B
  per parameter; ZeRO-2 shards gradients and AdamW states, ZeRO-3/FSDP (as configs/accelerate/fsdp.yaml)
  shards the trained weights too, "ZeRO-3 all" also the frozen base; activations with gradient
  checkpointing = every block's input kept (base and control) + one block recomputed (16 D + 2 FFN per
  token); without it, that per block; latents and text embeddings precomputed (encoders not on the GPU);
- plus 1 GiB for the CUDA context and allocator slack.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError

KNOWN_DIR = Path(__file__).with_name("known_configs")
GIB = 1024**3
CONTEXT_BYTES = 1 * GIB
# (label, usable GiB): the smallest that holds an estimate with 8% to spare is recommended.
GPUS = [("24 GB (RTX 4090)", 24), ("40 GB (A100 40GB)", 40), ("48 GB (L40S, RTX 6000 Ada)", 48),
        ("80 GB (A100/H100 80GB)", 80), ("141 GB (H200)", 141)]
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
    transformer_config: dict[str, Any] = field(default_factory=dict)  # the base transformer's config


def plan(base: str, size: tuple[int, int], frames: int, batch: int = 1, controlnet_layers: int | None = None,
         segment_head: bool = False, gpus: int = 4, gradient_checkpointing: bool = True) -> Plan:
    """Build every part of `base` on the meta device and estimate memory (bytes) for the settings."""
    from .controlnet_cogvideox import CogVideoXTrajectoryControlNet
    from .controlnet_wan import WanTrajectoryControlNet
    from .segment_head import SegmentHead

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
    inference = {}
    for label, wbytes in (("bf16", 2), ("fp8", 1)):
        one = (params["transformer"] + params["controlnet"]) * wbytes  # an expert and its ControlNet
        dit = (params["transformer"] + params.get("transformer_2", 0) + experts * params["controlnet"]) * wbytes
        inference[f"{label}, all on GPU"] = dit + sum(enc.values()) + max(act, vae_act) + CONTEXT_BYTES
        inference[f"{label}, model offload"] = max(one + act, enc["vae"] + vae_act, enc["text_encoder"],
                                                   enc["image_encoder"]) + CONTEXT_BYTES
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
    training = {label: states + train_act + CONTEXT_BYTES for label, states in rows.items()}
    return Plan(base=info["key"], family=family, size=(width, height), frames=frames, batch=batch, gpus=gpus,
                control_layers=k, base_layers=base_layers, tokens=tokens, params=params,
                inference=inference, training=training, transformer_config=dict(cfg))


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
    lines += ["", "GPU memory, estimates (formulas in magicmotion/models/plan.py; not measurements)", ""]
    lines.append(f"{'inference (CFG, one GPU)':<44} {'peak GiB':>9}  smallest GPU")
    for label, nbytes in p.inference.items():
        lines.append(f"{label:<44} {nbytes / GIB:>9.1f}  {recommend_gpu(nbytes)}")
    lines.append("")
    lines.append(f"{'training, per GPU (precomputed latents)':<44} {'peak GiB':>9}  smallest GPU")
    for label, nbytes in p.training.items():
        lines.append(f"{label:<44} {nbytes / GIB:>9.1f}  {recommend_gpu(nbytes)}")
    return "\n".join(lines)


def plan_from_config(path: str, gpus: int = 4) -> Plan:
    """The plan of a training config (configs/*/stage*.yaml): its base, size, frames, batch,
    control blocks, segment head and gradient checkpointing."""
    from ..training.config import load_config

    config = load_config(path, check=False)
    return plan(config.base, tuple(config.data.size), config.data.num_frames, config.loop.batch_size,
                controlnet_layers=config.controlnet_layers, segment_head=config.segment_head, gpus=gpus,
                gradient_checkpointing=config.loop.gradient_checkpointing)


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
    parser.add_argument("--gpus", type=int, default=4, help="GPUs for the sharded training rows (default 4)")
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
