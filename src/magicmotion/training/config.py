"""Training configs: a tree of dataclasses read from YAML, checked before any model is loaded.

A config names the base model, the stage and its trajectory kind, where the data and the previous
stage's output are, and how to optimise. Every key is known: a typo is a ConfigError naming the key
and the file, never a silently ignored setting. `--set key=value` overrides take dotted keys
(`optim.lr=1e-4`) or, where unambiguous, the bare leaf name (`lr=1e-4`). The YAML-to-dataclass
reading is `config_yaml`; the checks against the folders a config names (the base, `init_from`) are
`config_folders`.

The three stages and the two ablations of the paper are config changes only:

    stage 1             condition: mask,       lambda_seg: 0,   init_from: null
    stage 2             condition: box,        lambda_seg: 0.5, init_from: <stage 1 output_dir>
    stage 3             condition: sparse_box, lambda_seg: 0.5, init_from: <stage 2 output_dir>,
                        init_head: true
    boxes from scratch  stage 2 with init_from: null
    no seg. loss        stage 2 with lambda_seg: 0 (and segment_head: false)

A two-expert Wan2.2 I2V-A14B base trains one expert's ControlNet per run: `expert: high` (its
`transformer`, timesteps t >= boundary_ratio * 1000) or `expert: low` (`transformer_2`, below), each
expert's stages chained on their own (configs/wan2.2-a14b/stage{1,2,3}-{high,low}.yaml). The key is
required for such a base and refused for any other (`check_base`, which also checks `data.size`
against the base's token grid: multiples of 32 for Wan2.2 TI2V-5B's x16 VAE).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..hub import looks_like_path
from ..limits import MAX_FRAMES, SEED_RANGE, check_size
from .config_folders import check_base, init_weights, make_data_hint
from .config_yaml import apply_override, build, plain

MODELS = ("wan", "cogvideox")
EXPERTS = ("high", "low")  # Wan2.2 I2V-A14B: `transformer` (t >= boundary) / `transformer_2` (t < boundary)
CONDITIONS = ("mask", "box", "sparse_box")
MIXED_PRECISION = ("no", "fp16", "bf16")
TIMESTEP_SAMPLING = ("shifted_uniform", "logit_normal", "uniform")
LOSS_WEIGHTING = ("none", "inverse_noise")
LR_SCHEDULES = ("constant", "linear", "cosine")
MAX_STEPS = 10**9


@dataclass
class DataConfig:
    """Clips, how they are cut, and the per-sample randomness of the conditions."""

    dataset: str | None = None  # dataset root (magicmotion.data layout); required
    split: str = "train"
    num_frames: int = 49  # 4k + 1 (the 3D VAE compresses time by 4 after the first frame)
    size: tuple[int, int] = (480, 480)  # (W, H), multiples of 16
    stride: int = 1  # take every `stride`-th source frame
    sampling: str = "random"  # where the clip window starts: random | start | center
    pad: bool = False  # repeat the last frame of clips shorter than the window (else an error)
    sparse_max_keys: int = 9  # stage 3: 1..sparse_max_keys (<= 9) random key frames besides frame 0
    image_dropout: float = 0.05  # drop the first-frame condition with this probability (CogVideoX I2V)
    caption_dropout: float = 0.0  # replace the caption with "" with this probability
    num_workers: int = 0  # DataLoader workers (raw clips only; precomputed data is read in-process)
    precomputed: str | None = None  # folder written by `magicmotion train precompute`
    sparse_variants: int = 8  # precompute: random sparse-box maps stored per clip (stage 3)


@dataclass
class OptimConfig:
    """AdamW with warm-up (paper: lr 1e-5, batch 1 per GPU)."""

    lr: float = 1e-5
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 100
    lr_schedule: str = "constant"  # after warm-up: constant | linear | cosine (decay to 0 at max_steps)
    max_grad_norm: float = 1.0  # 0 disables clipping


@dataclass
class NoiseConfig:
    """Timestep sampling and loss weighting.

    Wan (flow matching): sigma = shift * u / (1 + (shift - 1) * u) with u ~ U(0, 1)
    (`shifted_uniform`: the distribution of Wan's own sampling schedule), or u = sigmoid(N(mean, std))
    before the same shift (`logit_normal`, as SD3); `uniform` is sigma = u. The timestep fed to the
    model is sigma * 1000. `flow_shift: null` takes the base scheduler's shift.
    CogVideoX (v-prediction): t uniform over the scheduler's training timesteps.
    """

    timestep_sampling: str = "shifted_uniform"
    flow_shift: float | None = None
    logit_mean: float = 0.0
    logit_std: float = 1.0
    loss_weighting: str = "none"  # CogVideoX: "none" = eq. (1) as printed; "inverse_noise" = 1/(1-a_t)


@dataclass
class LoopConfig:
    """Steps, batch, precision, logging and checkpoints."""

    max_steps: int = 1000  # optimiser steps
    batch_size: int = 1  # per process
    grad_accum: int = 1
    mixed_precision: str = "bf16"
    gradient_checkpointing: bool = False
    log_every: int = 10
    save_every: int = 500  # 0: only the final weights
    keep_checkpoints: int = 3
    validate_every: int = 0  # 0: no validation videos
    tensorboard: bool = True  # also log to OUTPUT_DIR/tensorboard (log.csv is always written)
    cpu_threads: int | None = None  # torch intra-op threads for the run (null: torch's default); tiny
    #                                 models on a busy CPU train several times faster with 1


@dataclass
class ValidationConfig:
    """The validation video: one held-out clip generated with the current weights."""

    split: str = "val"  # falls back to the training split's first clip when the split is absent
    clip: str | None = None  # clip id; null = the split's first clip
    num_inference_steps: int = 25
    guidance_scale: float = 6.0
    seed: int = 0


@dataclass
class TrainConfig:
    """One training stage. See the module docstring for the stages and ablations."""

    model: str = "wan"  # wan | cogvideox
    base: str = ""  # diffusers pipeline folder or hub id of the image-to-video base
    output_dir: str = ""
    stage: int = 1
    condition: str = "mask"  # trajectory kind the ControlNet sees
    controlnet_layers: int | None = None  # control blocks; null = as many as the base has
    expert: str | None = None  # Wan2.2 I2V-A14B: which expert's ControlNet this run trains, high | low
    segment_head: bool = False
    lambda_seg: float = 0.0  # weight of the latent segmentation loss
    init_from: str | None = None  # previous stage's output_dir (or a checkpoint / weights folder)
    init_head: bool = False  # also start the segment head from init_from (stage 3)
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    source: str = field(default="", repr=False, compare=False)  # the YAML file, for messages

    # derived -----------------------------------------------------------------------------------

    @property
    def needs_mask_latents(self) -> bool:
        """The L_seg target (the mask-trajectory latent) is needed when the loss is on."""
        return self.segment_head and self.lambda_seg > 0

    @property
    def latent_frames(self) -> int:
        return (self.data.num_frames - 1) // 4 + 1

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("source")
        return plain(out)


SECTIONS = {"data": DataConfig, "optim": OptimConfig, "noise": NoiseConfig, "loop": LoopConfig,
            "validation": ValidationConfig}

# ---------------------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (), check: bool = True) -> TrainConfig:
    """Read a YAML training config, apply `key=value` overrides and (with `check`) check it.

    Raises ConfigError naming the file and key for: unknown keys, values of the wrong type, a
    missing dataset, a stage 2/3 `init_from` without the previous stage's ControlNet (or head).
    """
    from ..limits import read_yaml

    path = Path(path)
    data = read_yaml(path, ConfigError, "config file") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a training config is a mapping of keys to values")
    for item in overrides:
        apply_override(data, item, str(path), TrainConfig, SECTIONS)
    config = from_dict(data, source=str(path))
    if check:
        check_config(config)
    return config


def from_dict(data: dict, source: str = "<dict>") -> TrainConfig:
    """Build a TrainConfig from a nested dict (unknown keys and wrong types -> ConfigError)."""
    config = build(TrainConfig, data, source)
    config.source = source
    return config


def save_config(config: TrainConfig, path: str | os.PathLike) -> Path:
    """Write the config as YAML (atomically), e.g. next to the outputs it produced."""
    import yaml

    from ..io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------- checks


def check_config(config: TrainConfig, files: bool = True) -> None:
    """Values in range and, with `files`, the folders a run needs present (ConfigError naming the
    config file and key)."""
    src = config.source or "<config>"
    d, o, n, loop = config.data, config.optim, config.noise, config.loop

    def bad(key: str, why: str):
        raise ConfigError(f"{src}: {key} {why}")

    if config.model not in MODELS:
        bad("model", f"must be one of {', '.join(MODELS)}, got {config.model!r}")
    if not config.base:
        bad("base", "is missing: a diffusers pipeline folder or hub id of the image-to-video base")
    if not config.output_dir:
        bad("output_dir", "is missing")
    if config.stage not in (1, 2, 3):
        bad("stage", f"must be 1, 2 or 3, got {config.stage}")
    if config.condition not in CONDITIONS:
        bad("condition", f"must be one of {', '.join(CONDITIONS)}, got {config.condition!r}")
    if config.expert is not None and config.expert not in EXPERTS:
        bad("expert", f"must be high, low or null, got {config.expert!r}")
    if config.expert is not None and config.model != "wan":
        bad("expert", "is for a two-expert Wan2.2 I2V-A14B base (model: wan)")
    if config.controlnet_layers is not None and config.controlnet_layers < 1:
        bad("controlnet_layers", f"must be null (all) or at least 1, got {config.controlnet_layers}")
    if config.lambda_seg < 0:
        bad("lambda_seg", f"must be >= 0, got {config.lambda_seg}")
    if config.lambda_seg > 0 and not config.segment_head:
        bad("lambda_seg", f"is {config.lambda_seg} but segment_head is false: the loss needs the head")
    if config.init_head and not config.segment_head:
        bad("init_head", "is true but segment_head is false")
    if config.init_head and not config.init_from:
        bad("init_head", "is true but init_from is null: there is no previous head to start from")

    for key, seed in (("seed", config.seed), ("validation.seed", config.validation.seed)):
        if not 0 <= seed < SEED_RANGE:
            bad(key, f"must be in 0..2^32-1, got {seed}")
    if d.num_frames < 1 or (d.num_frames - 1) % 4 or d.num_frames > MAX_FRAMES:
        bad("data.num_frames", f"must be 4k + 1 (1, 5, 9, ..., 49, 81) up to {MAX_FRAMES}, got {d.num_frames}")
    if any(v <= 0 or v % 16 for v in d.size):
        bad("data.size", f"must be [W, H], both multiples of 16, got {list(d.size)}")
    check_size(*d.size, src, ConfigError, "data.size")
    if d.sampling not in ("random", "start", "center"):
        bad("data.sampling", f"must be random, start or center, got {d.sampling!r}")
    if d.stride < 1:
        bad("data.stride", f"must be at least 1, got {d.stride}")
    if not 1 <= d.sparse_max_keys <= 9:
        bad("data.sparse_max_keys", f"must be 1..9 (the paper: fewer than 10 key frames), got {d.sparse_max_keys}")
    for key, p in (("data.image_dropout", d.image_dropout), ("data.caption_dropout", d.caption_dropout)):
        if not 0 <= p <= 1:
            bad(key, f"is a probability in [0, 1], got {p}")
    if d.num_workers < 0 or d.sparse_variants < 1:
        bad("data", "num_workers must be >= 0 and sparse_variants >= 1")

    if o.lr <= 0:
        bad("optim.lr", f"must be > 0, got {o.lr}")
    if o.warmup_steps < 0 or o.max_grad_norm < 0 or o.weight_decay < 0:
        bad("optim", "warmup_steps, max_grad_norm and weight_decay must be >= 0")
    if o.lr_schedule not in LR_SCHEDULES:
        bad("optim.lr_schedule", f"must be one of {', '.join(LR_SCHEDULES)}, got {o.lr_schedule!r}")
    if n.timestep_sampling not in TIMESTEP_SAMPLING:
        bad("noise.timestep_sampling", f"must be one of {', '.join(TIMESTEP_SAMPLING)}, got {n.timestep_sampling!r}")
    if n.loss_weighting not in LOSS_WEIGHTING:
        bad("noise.loss_weighting", f"must be one of {', '.join(LOSS_WEIGHTING)}, got {n.loss_weighting!r}")
    if n.flow_shift is not None and n.flow_shift <= 0:
        bad("noise.flow_shift", f"must be > 0, got {n.flow_shift}")
    if loop.mixed_precision not in MIXED_PRECISION:
        bad("loop.mixed_precision", f"must be one of {', '.join(MIXED_PRECISION)}, got {loop.mixed_precision!r}")
    for key in ("max_steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints"):
        if getattr(loop, key) < 1:
            bad(f"loop.{key}", f"must be at least 1, got {getattr(loop, key)}")
    for key, value, most in (("loop.max_steps", loop.max_steps, MAX_STEPS), ("loop.batch_size", loop.batch_size, 4096),
                             ("loop.grad_accum", loop.grad_accum, 4096), ("data.stride", d.stride, MAX_FRAMES),
                             ("validation.num_inference_steps", config.validation.num_inference_steps, 1000)):
        if value > most:
            bad(key, f"must be at most {most}, got {value}")
    if not 0 < o.lr <= 1:
        bad("optim.lr", f"must be in (0, 1], got {o.lr}")
    if loop.cpu_threads is not None and loop.cpu_threads < 1:
        bad("loop.cpu_threads", f"must be null or at least 1, got {loop.cpu_threads}")
    for key in ("save_every", "validate_every"):
        if getattr(loop, key) < 0:
            bad(f"loop.{key}", f"must be >= 0 (0 = never), got {getattr(loop, key)}")

    if not d.dataset:
        bad("data.dataset", "is missing: the dataset folder to train on (see docs/training.md)")
    if not files:
        return
    if looks_like_path(config.base) and not Path(config.base).expanduser().exists():
        bad("base", f"{config.base}: folder not found (make that diffusers folder, or set base to a hub "
                    "id; the config's comment at base: says how)")
    if not Path(d.dataset).is_dir():
        bad("data.dataset", f"folder {d.dataset} does not exist: {make_data_hint(config)}")
    if (Path(config.base).expanduser() / "model_index.json").is_file():
        check_base(config)  # a hub id's is read when the run starts
    if config.init_from:
        init_weights(config)

