"""The recipe's command line: `python -m magicmotion.training.tiny` runs the phases asked for, in order."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .base import phase_base, phase_data
from .bench import phase_bench
from ...errors import MagicMotionError
from .common import BASE_CONDITIONING, CONDITIONINGS, PHASES, STAGES, log, recipe_device
from .stages import ABLATIONS, phase_examples, phase_stages, ship
from .vae import phase_maps, phase_vae


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m magicmotion.training.tiny",
                                description=sys.modules[__package__].__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="src/magicmotion/assets/tiny")
    p.add_argument("--work", default="runs/tiny")
    p.add_argument("--phases", default=",".join(PHASES), help=f"a subset of {','.join(PHASES)}")
    p.add_argument("--device", default="cpu",
                   help="where every phase runs: cpu (default), cuda, cuda:N or mps; the weights are saved "
                        "from the CPU either way (`make tiny-model DEVICE=cuda`)")
    p.add_argument("--train-clips", type=int, default=2000)
    p.add_argument("--test-clips", type=int, default=150)
    p.add_argument("--vae-steps", type=int, default=4000)
    p.add_argument("--vae-clips", type=int, default=2000,
                   help="synthetic clips in memory for the vae and maps phases")
    p.add_argument("--base-steps", type=int, default=4500)
    p.add_argument("--base-conditioning", choices=CONDITIONINGS, default=BASE_CONDITIONING,
                   help="how the base takes the first frame: ti2v (Wan2.2 TI2V: the first latent frame clean, "
                        "its own timestep) or i2v (Wan2.1 I2V: image latents and a mask concatenated); "
                        f"default {BASE_CONDITIONING}")
    p.add_argument("--maps-steps", type=int, default=1200)
    p.add_argument("--stage-steps", type=int, default=None, help="override every stage's max_steps")
    p.add_argument("--examples", default="examples")
    p.add_argument("--bench-steps", type=int, default=10)
    p.add_argument("--per-bucket", type=int, default=20)
    args = p.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    phases = args.phases.split(",")
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        p.error(f"unknown phase(s) {', '.join(unknown)}; the phases are {','.join(PHASES)}")
    try:
        device = recipe_device(args.device)
    except MagicMotionError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.time()
    if device.type != "cpu":
        log(f"every phase on {device}")
    if "data" in phases:
        phase_data(work, args.train_clips, args.test_clips)
        log(f"data done ({time.time() - t0:.0f} s)")
    if "vae" in phases:
        phase_vae(work, args.vae_steps, clips=args.vae_clips, device=device)
        log(f"vae done ({time.time() - t0:.0f} s)")
    if "base" in phases:
        phase_base(work, args.base_steps, device=device, conditioning=args.base_conditioning)
        log(f"base done ({time.time() - t0:.0f} s)")
    if "maps" in phases:
        phase_maps(work, args.maps_steps, clips=args.vae_clips, device=device)
        log(f"maps done ({time.time() - t0:.0f} s)")
    if "stages" in phases:
        phase_stages(work, STAGES, args.stage_steps, device=device)
        ship(work, out)
        log(f"stages done ({time.time() - t0:.0f} s)")
    if "examples" in phases:
        phase_examples(work, Path(args.examples))
    if "ablations" in phases:
        phase_stages(work, ABLATIONS, args.stage_steps, device=device)
        log(f"ablations done ({time.time() - t0:.0f} s)")
    if "bench" in phases:
        phase_bench(work, out, Path("docs"), steps=args.bench_steps, per_bucket=args.per_bucket, device=device)
        log(f"bench done ({time.time() - t0:.0f} s): {work / 'bench-report'}")
    return 0
