"""`magicmotion generate`: a thin wrapper over `load_pipeline`, `generate` and `write_outputs`.

Every check that needs no model runs first (files, output folder, kind, size, spec frames and aspect),
then the model loads (a ControlNet built for another base is an error), then the pipeline's own checks;
nothing is written unless the video was made.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from ..errors import MediaError, PipelineError
from ..limits import MIN_IMAGE_SIDE

KINDS = ("mask", "box", "sparse_box")  # magicmotion.trajectory.KINDS, without importing it for --help
OFFLOAD = ("none", "model", "group", "sequential")  # magicmotion.pipelines.loading's, without importing it
WEIGHTS_DTYPES = ("default", "fp8")
CACHES = ("none", "first-block", "taylorseer", "faster")
FITS = ("crop", "pad", "stretch")  # magicmotion.pipelines.settings.FITS, without importing it for --help
LORA_EXPERTS = ("both", "high", "low")
SPEED_DEFAULTS = dict(cfg_mode="batched", control_every=1, control_dense=0.0, control_branches="both")


def add_speed_arguments(p) -> None:
    """--cfg-mode, --control-every, --control-dense, --control-branches (`generate` and `bench run`)."""
    p.add_argument("--cfg-mode", default="batched", choices=["batched", "sequential"],
                   help="batched: both guidance branches as one batch (default); sequential: one after the other "
                        "(half the activation memory, the same video within float rounding)")
    p.add_argument("--control-every", type=int, default=1, metavar="N",
                   help="run the ControlNet on every N-th step only, reusing its residuals in between "
                        "(default 1 = every step; an approximation)")
    p.add_argument("--control-dense", type=float, default=0.0, metavar="FRACTION",
                   help="with --control-every: run the ControlNet on every step of this first fraction of the "
                        "steps (default 0)")
    p.add_argument("--control-branches", default="both", choices=["both", "cond"],
                   help="both: the ControlNet in both guidance branches (default); cond: once, on the prompt, "
                        "its residuals added to both (an approximation)")


def add_memory_arguments(p) -> None:
    """--offload, --weights-dtype, --vae-tiling, --cache, --lora, --lora-scale (`generate`, `bench run`, the app);
    values are checked by `memory_options` (PipelineError: exit 2, one line)."""
    p.add_argument("--offload", default="none", metavar="MODE",
                   help="none | model | group | sequential: diffusers offload to save GPU memory: a model, a block, "
                        "a layer at a time on the GPU (default none)")
    p.add_argument("--weights-dtype", default="default", metavar="DTYPE",
                   help="fp8: store the transformer's and ControlNet's weights in float8, each layer cast to --dtype "
                        "when it runs (about half the weight memory of bf16; default: as --dtype)")
    p.add_argument("--vae-tiling", action="store_true", help="decode the video in tiles (less VAE memory)")
    p.add_argument("--cache", default="none", metavar="NAME",
                   help="none | first-block | taylorseer | faster: diffusers' step cache on the base (faster: needs "
                        "guidance > 1 and --cfg-mode batched; an approximation, see docs/generate.md)")
    p.add_argument("--lora", default=None, metavar="PATH", help="a LoRA for the base (diffusers' load_lora_weights)")
    p.add_argument("--lora-scale", type=float, default=1.0, metavar="S", help="the LoRA's scale (default 1)")
    p.add_argument("--lora-expert", default=None, metavar="EXPERT",
                   help="Wan2.2 A14B: both | high | low: the expert(s) the LoRA goes into (default both, or as "
                        "the file's keys name them: transformer.* high, transformer_2.* low)")


CONTEXT_PARALLEL = ("ring", "ulysses")  # magicmotion.pipelines.parallel.MODES, without importing it


def add_parallel_arguments(p) -> None:
    """--context-parallel (`generate` and `bench run`)."""
    p.add_argument("--context-parallel", default=None, metavar="MODE",
                   help="ring | ulysses: split each video's tokens across the processes of a launch (torchrun "
                        "--nproc-per-node N / accelerate launch --num_processes N, one GPU each; Wan bases); "
                        "rank 0 writes (docs/generate.md)")


def check_parallel_args(args, size: tuple[int, int] | None, num_frames: int | None) -> None:
    """Before any weights load: PipelineError when --context-parallel cannot run here (see
    `magicmotion.pipelines.parallel.check_context_parallel`; the token count only with size and frames)."""
    mode = getattr(args, "context_parallel", None)
    if mode is None:
        return
    if mode not in CONTEXT_PARALLEL:
        raise PipelineError(f"unknown --context-parallel {mode!r}: expected one of {', '.join(CONTEXT_PARALLEL)}")
    from .loading import model_settings, tiny_model_paths, transformer_config
    from .parallel import check_context_parallel

    family, _, limits = model_settings(args.base, args.controlnet, getattr(args, "kind", None) or "box")
    base = args.base if args.base is not None else tiny_model_paths(getattr(args, "kind", None) or "box")[0]
    config = transformer_config(base) if family == "wan" else None
    check_context_parallel(mode, family=family, transformer_config=config, multiple=limits.multiple,
                           num_frames=num_frames, size=tuple(size) if size else None, device=getattr(args, "device", None),
                           dtype=getattr(args, "dtype", None), cache=getattr(args, "cache", "none"),
                           offload=getattr(args, "offload", "none"))


def memory_options(args) -> dict:
    """load_pipeline's keyword arguments from `add_memory_arguments`'s flags; PipelineError on a bad value."""
    import math

    for flag, value, known in (("--offload", args.offload, OFFLOAD),
                               ("--weights-dtype", getattr(args, "weights_dtype", "default"), WEIGHTS_DTYPES),
                               ("--cache", getattr(args, "cache", "none"), CACHES)):
        if value not in known:
            raise PipelineError(f"unknown {flag[2:].replace('-', ' ')} {value!r} ({flag}): "
                                f"expected one of {', '.join(known)}")
    scale = getattr(args, "lora_scale", 1.0)
    if not math.isfinite(scale) or not -10 <= scale <= 10:
        raise PipelineError(f"--lora-scale must be a number in -10..10, got {scale}")
    trajectory_guidance = getattr(args, "trajectory_guidance", 1.0)
    if getattr(args, "cache", "none") == "faster" and trajectory_guidance is not None and trajectory_guidance != 1.0:
        raise PipelineError(f"--cache faster cannot run with --trajectory-guidance {trajectory_guidance:g} (its pass "
                            "without control is a third branch, not half of a guidance batch): use --cache "
                            "first-block or taylorseer, or --trajectory-guidance 1")
    lora = getattr(args, "lora", None)
    lora_expert = getattr(args, "lora_expert", None)
    if lora_expert is not None and lora_expert not in LORA_EXPERTS:
        raise PipelineError(f"unknown LoRA expert {lora_expert!r} (--lora-expert): expected one of "
                            f"{', '.join(LORA_EXPERTS)}")
    if lora_expert is not None and lora is None:
        raise PipelineError("--lora-expert needs --lora")
    if lora is not None and not Path(lora).exists():
        from ..hub import resolve_pretrained

        resolve_pretrained(lora, "LoRA")
    return dict(offload=args.offload, weights_dtype=getattr(args, "weights_dtype", "default"),
                cache=getattr(args, "cache", "none"), vae_tiling=getattr(args, "vae_tiling", False), lora=lora,
                **({"lora_expert": lora_expert} if lora_expert is not None else {}))


def lora_call_kwargs(args) -> dict:
    """The pipeline call's `attention_kwargs` for --lora-scale (none without --lora)."""
    return {"attention_kwargs": {"scale": args.lora_scale}} if getattr(args, "lora", None) else {}


def speed_options(args) -> dict:
    """The speed options given (those that differ from the defaults), as pipeline keyword arguments;
    PipelineError on a value the pipelines refuse."""
    from .guidance import check_speed_options

    options = {k: getattr(args, k, v) for k, v in SPEED_DEFAULTS.items()}
    check_speed_options(**options)
    return {k: v for k, v in options.items() if v != SPEED_DEFAULTS[k]}


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'832x480' -> (832, 480) (width x height)."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise PipelineError(f"--size must be WIDTHxHEIGHT such as 832x480, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def register(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="make a video from a first frame, a prompt and a trajectory",
        description=(
            "Generate a video whose objects follow a trajectory. Writes OUT (mp4), OUT.preview.gif and "
            "OUT.preview.png (the trajectory over the generated frames) and OUT.json (the settings used). "
            "Without --base, the tiny model shipped with the package is used (its stage for --kind)."
        ),
    )
    p.add_argument("--base", metavar="PATH_OR_ID",
                   help="base model: a diffusers Wan2.1 / CogVideoX I2V folder or hub id (default: the shipped tiny model)")
    p.add_argument("--controlnet", metavar="PATH",
                   help="Trajectory ControlNet: a folder saved by training, or a released .pt (default with no --base: "
                        "the tiny model's stage for --kind)")
    p.add_argument("--controlnet-2", metavar="PATH", default=None,
                   help="Wan2.2 I2V-A14B: the low-noise expert's ControlNet (--controlnet is then the high-noise "
                        "expert's; or give --controlnet one folder holding both, controlnet/ and controlnet_2/)")
    p.add_argument("--image", metavar="PNG", help="first frame")
    p.add_argument("--trajectory", metavar="SPEC",
                   help="trajectory spec (.json), or rendered trajectory maps (video or frame folder)")
    p.add_argument("--kind", default=None, metavar="KIND",
                   help="mask | box | sparse_box (default: box for a spec; for map videos, the kind they show)")
    p.add_argument("--prompt", help="text prompt")
    p.add_argument("--out", metavar="MP4", help="output video (.mp4)")
    p.add_argument("--csv", metavar="FILE",
                   help="many videos, one per row (instead of --image/--trajectory/--prompt/--out), with the "
                        "columns prompt, image, trajectory, out (and optional seed, control_scale, controlnet, "
                        "kind), or the authors' release's columns validation_prompt, validation_images, "
                        "validation_trajectory_maps, output_path, controlnet_weights, seed; rows whose video "
                        "exists are skipped; under accelerate launch / torchrun the rows are split across "
                        "processes (docs/generate.md)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt (default empty)")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps (default: the model's recommended, e.g. 50; 25 for the shipped tiny model)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's recommended, e.g. 6; 1 for the "
                        "shipped tiny model)")
    p.add_argument("--guidance-2", type=float, default=None, metavar="W",
                   help="Wan2.2 I2V-A14B only: the low-noise expert's guidance scale (default: the base's, as "
                        "diffusers)")
    p.add_argument("--control-scale", type=float, default=1.0, help="ControlNet conditioning scale (default 1)")
    p.add_argument("--trajectory-guidance", type=float, default=1.0, metavar="W",
                   help="trajectory guidance: move each step W times as far from the uncontrolled prediction "
                        "(default 1 = off; not in the paper); costs one more base pass per step")
    add_speed_arguments(p)
    p.add_argument("--seed", type=int, default=None, help="random seed (default: a random one, recorded in OUT.json)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames to generate, 4k + 1 (default: the trajectory's); a trajectory with other counts is "
                        "trimmed, or padded with its last frame held")
    p.add_argument("--size", default=None, metavar="WxH",
                   help="output size, e.g. 832x480 (default: the model's recommended: Wan: the input's aspect ratio "
                        "within ~832x480 pixels; CogVideoX: 720x480; the shipped tiny model: within 64x64 pixels)")
    p.add_argument("--fit", default=None, choices=list(FITS),
                   help="how the first frame and trajectory are brought to the output size when their aspect "
                        "ratios differ: crop (cover, then centre crop), pad (fit inside, black bars) or stretch "
                        "(default: the model's, crop; the authors' release: stretch; docs/generate.md)")
    add_memory_arguments(p)
    add_parallel_arguments(p)
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:N (default cuda when available; under a launch, each process's own)")
    p.add_argument("--dtype", default=None, help="bf16 | fp16 | fp32 (default bf16 on CUDA, fp32 on CPU)")
    p.set_defaults(func=run_generate)


def check_args(args) -> dict:
    """Checks that need no model weights (the model's configs are read). Returns what they settled:
    size (W, H), traj (the trajectory as read), settings (`ModelSettings` with the arguments applied),
    fit (None, or how an image and trajectory of slightly different aspect were fitted)."""
    import math

    import numpy as np

    from ..hub import resolve_pretrained

    # a base or ControlNet that cannot be had fails first, before the heavy imports
    if args.base is not None:
        resolve_pretrained(args.base, "base model", file="model_index.json")
    if args.controlnet is not None and not Path(args.controlnet).is_file():
        resolve_pretrained(args.controlnet, "ControlNet")
    if getattr(args, "controlnet_2", None) is not None:
        resolve_pretrained(args.controlnet_2, "ControlNet")

    from .conditions import check_aspect, read_image, read_trajectory, trajectory_size
    from .generate import check_output, output_paths
    from .loading import model_settings
    from .settings import FITS as FIT_RESIZE
    from .settings import default_size, describe_fit

    if args.kind is not None and args.kind not in KINDS:
        raise PipelineError(f"unknown kind {args.kind!r}: expected one of {', '.join(KINDS)}")
    memory_options(args)
    if args.steps is not None and not 1 <= args.steps <= 1000:
        raise PipelineError(f"--steps must be in 1..1000, got {args.steps}")
    for flag, value in (("--guidance", args.guidance), ("--guidance-2", getattr(args, "guidance_2", None)),
                        ("--control-scale", args.control_scale),
                        ("--trajectory-guidance", args.trajectory_guidance)):
        if value is not None and (not math.isfinite(value) or not 0 <= value <= 100):
            raise PipelineError(f"{flag} must be a number in 0..100, got {value}")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise PipelineError(f"--seed must be in 0..2^32-1, got {args.seed}")
    speed_options(args)
    size = parse_size(args.size)
    check_output(args.out, [args.image, args.trajectory])
    inputs = {Path(p).resolve() for p in (args.image, args.trajectory)}
    for name, path in output_paths(args.out).items():
        if path.resolve() in inputs:
            raise MediaError(f"{args.out}: its {name} file {path} would overwrite an input; pick another --out")
    if not Path(args.image).is_file():
        raise MediaError(f"{args.image}: image not found")
    if not Path(args.trajectory).exists():
        raise MediaError(f"{args.trajectory}: trajectory not found")
    if size is not None:  # a size the model cannot run is refused before the inputs are read
        model_settings(args.base, args.controlnet, args.kind or "box")[2].check(size[0], size[1], 1)
    image = read_image(args.image)
    if min(image.shape[:2]) < MIN_IMAGE_SIDE:
        raise MediaError(f"{args.image}: the first frame is {image.shape[1]}x{image.shape[0]}; at least "
                         f"{MIN_IMAGE_SIDE} pixels a side are needed")
    traj = read_trajectory(args.trajectory)
    traj, frames = fit_frames(traj, args.frames, str(args.trajectory))
    fit = check_aspect((image.shape[1], image.shape[0]), trajectory_size(traj), str(args.trajectory))
    # map videos: their kind when none is given, and re-drawn in the model's palette when theirs differs
    decoded, redrawn = None, None
    if isinstance(traj, np.ndarray):
        from ..trajectory.decode import decode_maps, detect_palette

        palette = detect_palette(traj, str(args.trajectory))
        if args.kind is None:
            decoded = decode_maps(traj, palette=palette, source=str(args.trajectory))
            args.kind = decoded.kind
    args.kind = args.kind or "box"
    # the model's recommended settings and limits, from its configs: a size it cannot run is refused here
    _, settings, limits = model_settings(args.base, args.controlnet, args.kind)
    if isinstance(traj, np.ndarray) and palette != settings["trajectory_palette"]:
        decoded = decoded or decode_maps(traj, palette=palette, source=str(args.trajectory))
        traj = decoded.trajectory
        redrawn = (f"maps in the {palette} palette read back as a {decoded.kind} spec and drawn as {args.kind} "
                   f"in the model's {settings['trajectory_palette']} palette")
    settings = settings.with_arguments(guidance_scale=args.guidance, num_inference_steps=args.steps,
                                       size=list(size) if size else None,
                                       resize=FIT_RESIZE[args.fit] if getattr(args, "fit", None) else None)
    out_size = size or default_size(settings, limits.multiple, trajectory_size(traj))
    if out_size[0] % limits.multiple or out_size[1] % limits.multiple:
        raise PipelineError(f"--size {out_size[0]}x{out_size[1]}: width and height must be multiples of "
                            f"{limits.multiple} for this model")
    limits.check(out_size[0], out_size[1], frames)
    check_parallel_args(args, out_size, frames)
    size_note = describe_fit((image.shape[1], image.shape[0]), tuple(out_size), settings["resize"])
    return dict(size=out_size, traj=traj, settings=settings, fit=fit, redrawn=redrawn, size_note=size_note)


def fit_frames(traj, frames: int | None, where: str):
    """The trajectory on `frames` frames (--frames): a spec trimmed or padded with its last frame held,
    maps trimmed or padded with their last frame repeated (a note on stderr); without --frames, its
    own count, which must be 4k + 1 (else the refusal says which --frames to give).
    Returns (trajectory, frame count)."""
    from ..trajectory import Trajectory
    from ..trajectory.ops import frames_hint, with_num_frames
    from .conditions import trajectory_frames

    own = trajectory_frames(traj)
    if frames is None or frames == own:
        hint = frames_hint(own) if own > 1 else None  # a single frame is a still: made, if asked for
        if hint:
            raise PipelineError(f"{where}: {hint}")
        return traj, own
    if frames < 1 or (frames - 1) % 4:
        raise PipelineError(f"--frames {frames}: the video VAE makes 4k + 1 frames (e.g. 17, 49, 81)")
    if isinstance(traj, Trajectory):
        traj = with_num_frames(traj, frames)
    else:  # maps: uint8 (T, H, W, 3) or float (T, 3, H, W)
        traj = traj[:frames] if frames < own else traj[list(range(own)) + [own - 1] * (frames - own)]
    how = f"trimmed to {frames}" if frames < own else f"padded to {frames}, the last frame held"
    print(f"magicmotion: note: {where}: {own} frames {how} (--frames)", file=sys.stderr)
    return traj, frames


SINGLE = ("image", "trajectory", "prompt", "out")


def run_generate(args) -> int:
    from ..logfilters import quiet_loading
    from .loading import load_pipeline

    quiet_loading()  # one progress bar: the denoising steps (--verbose: every library bar)

    if args.csv is not None:
        if getattr(args, "context_parallel", None) is not None:
            raise PipelineError("--context-parallel makes one video at a time on all processes; without it, "
                                "--csv under a launch splits the rows across the processes")
        given = [f"--{k}" for k in SINGLE if getattr(args, k) is not None]
        if given:
            raise PipelineError(f"--csv takes its {', '.join(SINGLE)} from the file; drop {', '.join(given)}")
        return run_csv_command(args)
    missing = [f"--{k}" for k in SINGLE if getattr(args, k) is None]
    if missing:
        raise PipelineError(f"{', '.join(missing)} required (or --csv FILE)")
    from ..locks import output_lock

    checked = check_args(args)
    split = getattr(args, "context_parallel", None)
    with output_lock(args.out, "--out"):  # one run per output (rank 0's, under a launch)
        device = args.device
        if split is not None:
            from .batch import process_device

            device = process_device()  # this process's GPU (sets up torch.distributed)
        pipe = load_pipeline(base=args.base, controlnet=args.controlnet, kind=args.kind, device=device,
                             dtype=args.dtype, controlnet_2=getattr(args, "controlnet_2", None), **memory_options(args))
        if split is not None:
            from .parallel import enable_context_parallel

            enable_context_parallel(pipe, split)
        code = generate_one(args, checked, pipe)
    say_tiny_model(args)  # after the video, so that an error stays the one line on stderr
    return code


def run_csv_command(args) -> int:
    """`generate --csv`: every row of the file through `generate_one`, the model loaded once per
    (ControlNet, kind) in row order, rows split across processes under a launcher."""
    import argparse
    import dataclasses

    from .batch import exit_code, make_row_generator, process_device, process_split, run_csv
    from .loading import load_pipeline

    index, count = process_split()
    device = process_device() or args.device
    checked_rows, said = {}, []

    def load(key):
        controlnet, kind = key
        said.append(True)
        return load_pipeline(base=args.base, controlnet=controlnet, kind=kind, device=device, dtype=args.dtype,
                             controlnet_2=getattr(args, "controlnet_2", None), **memory_options(args))

    def run_one(pipe, row):
        row_args, checked = checked_rows.pop(row.line)
        generate_one(row_args, checked, pipe)

    generate_row = make_row_generator(load, run_one, key=lambda r: (r.controlnet or args.controlnet, r.kind))

    def check_and_generate(row):
        row_args = argparse.Namespace(**vars(args))
        row_args.image, row_args.trajectory, row_args.prompt, row_args.out = (
            str(row.image), str(row.trajectory), row.prompt, str(row.out))
        row_args.kind = row.kind or args.kind
        row_args.controlnet = row.controlnet or args.controlnet
        row_args.seed = args.seed if row.seed is None else row.seed
        row_args.control_scale = args.control_scale if row.control_scale is None else row.control_scale
        checked = check_args(row_args)  # settles the kind of a map video
        checked_rows[row.line] = (row_args, checked)
        generate_row(dataclasses.replace(row, kind=row_args.kind))

    summary = run_csv(args.csv, check_and_generate, process_index=index, num_processes=count)
    if said:  # a model was loaded: once, at the end
        say_tiny_model(args)
    return exit_code(summary)


TINY_MODEL_NOTE = (
    "note: no --base, so the shipped tiny model runs; it knows only its synthetic world (coloured shapes on "
    "stripes, 64x64), so a real photo comes out as blobs. For real pictures: the authors' CogVideoX-5B "
    "ControlNets (hf download quanhaol/MagicMotion --local-dir ckpts; magicmotion convert official ckpts --out "
    "converted; then --base THUDM/CogVideoX-5b-I2V --controlnet converted), or train one on a Wan base "
    "(docs/training.md)")


def say_tiny_model(args) -> None:
    """One line, once per command, when the shipped tiny model is used (no --base)."""
    if args.base is None:
        print(TINY_MODEL_NOTE, file=sys.stderr)


def generate_one(args, checked: dict, pipe) -> int:
    """One video with a loaded pipeline, after `check_args`: generate, then write the video, its
    previews and its settings JSON."""
    from .. import __version__
    from .generate import generate, random_seed, write_outputs

    # what the loaded model recommends, with the arguments given applied
    settings = pipe.model_settings.with_arguments(guidance_scale=args.guidance, num_inference_steps=args.steps,
                                                  size=list(checked["size"]) if args.size else None,
                                                  resize=checked["settings"]["resize"] if getattr(args, "fit", None)
                                                  else None)
    pipe.model_settings = settings  # the pipeline reads its resize (--fit) from here
    if checked.get("size_note"):
        how = {"cover": "crop", "pad": "pad", "stretch": "stretch"}[settings["resize"]]
        print(f"size: {checked['size_note']} (--fit {how}; --size WxH or --fit crop|pad|stretch to change)",
              file=sys.stderr)
    split = getattr(pipe, "context_parallel", None)
    if split is not None:
        from .parallel import shared_seed

        seed = shared_seed(args.seed)  # rank 0's, on every process
    else:
        seed = random_seed() if args.seed is None else args.seed
    width, height = checked["size"]
    guidance_2 = {} if getattr(args, "guidance_2", None) is None else {"guidance_scale_2": args.guidance_2}
    start = time.perf_counter()
    frames, maps = generate(
        pipe, args.image, args.prompt, checked["traj"], args.kind, negative_prompt=args.negative_prompt,
        num_frames=args.frames, height=height, width=width, num_inference_steps=settings["num_inference_steps"],
        guidance_scale=settings["guidance_scale"], controlnet_conditioning_scale=args.control_scale,
        trajectory_guidance_scale=args.trajectory_guidance, seed=seed, **speed_options(args), **lora_call_kwargs(args),
        **guidance_2,
    )
    elapsed = time.perf_counter() - start
    record = dict(
        base=args.base or "tiny (shipped)", controlnet=args.controlnet or f"tiny (shipped, {args.kind})",
        **({"controlnet_2": args.controlnet_2} if getattr(args, "controlnet_2", None) else {}),
        model=type(pipe).__name__, image=args.image, trajectory=args.trajectory, kind=args.kind,
        prompt=args.prompt, negative_prompt=args.negative_prompt, steps=settings["num_inference_steps"],
        guidance=settings["guidance_scale"], **guidance_2, control_scale=args.control_scale,
        trajectory_guidance=args.trajectory_guidance, speed=speed_options(args), seed=seed, trajectory_palette=settings["trajectory_palette"],
        map_encoding=settings["map_encoding"], fit=checked["fit"], redrawn=checked["redrawn"], model_settings=settings.record(),
        offload=args.offload, device=str(pipe._execution_device),
        **{k: v for k, v in memory_options(args).items() if k != "offload" and v not in (None, False, "none", "default")},
        **({"lora_scale": args.lora_scale} if getattr(args, "lora", None) else {}),
        dtype=str(pipe.transformer.dtype).replace("torch.", ""), seconds=round(elapsed, 2),
        **({"context_parallel": split.record()} if split is not None else {}),
        magicmotion=__version__,
    )
    if split is not None and not split.writes:  # rank 0 writes the video; the others only helped make it
        return 0
    paths = write_outputs(args.out, frames, maps, record, fps=settings["fps"])
    print(f"wrote {paths['video']} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]}, "
          f"{elapsed:.1f} s), {paths['preview_gif'].name}, {paths['preview_png'].name}, {paths['settings'].name}",
          file=sys.stderr)
    return 0
