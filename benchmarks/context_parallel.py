"""Context-parallel speed-up and per-GPU memory: Wan2.1-I2V-14B + a Trajectory ControlNet, one
classifier-free-guidance step (cond and uncond as one batch of 2) at 81 x 480 x 832, whole on one GPU
against split over the launch's GPUs (`magicmotion.pipelines.parallel.split_models`: the same code
`generate --context-parallel` runs).

Weights are random at the real size (the published config in magicmotion/models/known_configs/, built
straight on the GPU in bf16; nothing is downloaded). Rank 0 first runs the whole model alone (the
others wait), then every mode splits a fresh copy across all ranks. Per mode it prints the seconds per
step (the slowest rank, after one warm-up step), the speed-up over one GPU, every rank's peak memory
(`torch.cuda.max_memory_allocated`) and how far the split output is from the whole one (bf16: ~1e-2
of its largest value is rounding).

    torchrun --nproc-per-node N benchmarks/context_parallel.py [--modes ulysses ring] [--steps 2]
        [--frames 81 --height 480 --width 832] [--control-layers 20] [--json out.json]

The ControlNet defaults to 20 of the 40 blocks (the released checkpoints' proportion): with all 40, one
80 GB GPU holds the weights (56 GB) but not the 40 residuals of a 32760-token batch of 2 (27 GB) as
well, so the one-GPU baseline would need an H200. Ulysses needs the 40 heads to divide by N (2, 4, 5, 8).

Smoke mode (`--smoke`, CPU, gloo, no GPU): the same steps on the tiny test transformer (9 frames at
64 x 32, fp32), Ulysses only (ring attention needs CUDA kernels), to check the script runs:

    torchrun --nproc-per-node 2 benchmarks/context_parallel.py --smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", nargs="+", default=None, choices=["ulysses", "ring"],
                   help="context-parallel modes (default: ulysses ring on GPUs, ulysses in --smoke)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per variant, after one warm-up (default 2)")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--control-layers", type=int, default=20, help="ControlNet blocks (default 20 of 40)")
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU processes (gloo), to test the script")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here (rank 0)")
    args = p.parse_args(argv)
    if args.smoke:
        args.frames, args.height, args.width, args.control_layers = 9, 32, 64, 2
    args.modes = args.modes or (["ulysses"] if args.smoke else ["ulysses", "ring"])
    return args


def transformer_config(smoke: bool) -> dict:
    if smoke:
        from magicmotion.models.tiny import WAN_TINY

        return dict(WAN_TINY)
    info = json.loads((REPO / "src/magicmotion/models/known_configs/wan2.1-i2v-14b-480p.json").read_text())
    return dict(info["parts"]["transformer"][2])


def build(config: dict, control_layers: int, device: str, dtype):
    """The joint model (base + ControlNet with random, non-zero projectors), seeded: the same on every rank."""
    import torch
    from diffusers import WanTransformer3DModel

    from magicmotion.models import MagicMotionTransformer, WanTrajectoryControlNet

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            base = WanTransformer3DModel(**config).eval()
            controlnet = WanTrajectoryControlNet.from_transformer(base, num_layers=control_layers).eval()
            for proj in controlnet.out_projectors:  # as if trained: the residuals move the output
                torch.nn.init.normal_(proj.weight, std=0.02)
    finally:
        torch.set_default_dtype(default)
    return MagicMotionTransformer(base, controlnet)


def inputs(config: dict, args, device: str, dtype) -> dict:
    """One CFG step's inputs (batch 2), from a seeded CPU generator: the same on every rank."""
    import torch

    g = torch.Generator().manual_seed(1)
    f, h, w = (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8
    text = 512 if config.get("image_dim") else 8

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    out = dict(hidden_states=randn(2, config["in_channels"], f, h, w), timestep=torch.tensor([500, 500], device=device),
               encoder_hidden_states=randn(2, text, config["text_dim"]), trajectory_latents=randn(2, 16, f, h, w))
    if config.get("image_dim"):
        out["encoder_hidden_states_image"] = randn(2, 257, config["image_dim"])
    return out


def timed(model, batch: dict, steps: int, device: str) -> tuple[float, object]:
    """(seconds per step after one warm-up, the output)."""
    import torch

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.no_grad():
        out = model(**batch).sample
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            out = model(**batch).sample
        sync()
    return (time.perf_counter() - start) / steps, out


def peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 1024**3 if device.startswith("cuda") else None


def reset_peak(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main(argv=None) -> dict:
    import torch
    import torch.distributed as dist

    from magicmotion.pipelines.batch import process_device
    from magicmotion.pipelines.parallel import split_models, video_tokens

    args = parse(argv)
    device = process_device() or ("cuda" if torch.cuda.is_available() else "cpu")
    if not dist.is_initialized() or dist.get_world_size() < 2:
        sys.exit("run it under torchrun --nproc-per-node N (N >= 2); on CPUs add --smoke")
    rank, world = dist.get_rank(), dist.get_world_size()
    if device == "cpu" and not args.smoke:
        sys.exit("no CUDA GPUs: the real-size run needs one per process; --smoke runs the tiny model on CPUs")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    config = transformer_config(args.smoke)
    tokens = video_tokens(config, 16, args.frames, args.width, args.height)
    torch.set_num_threads(1) if args.smoke else None

    # the whole model on rank 0 alone
    model = build(config, args.control_layers, device, dtype)
    batch = inputs(config, args, device, dtype)
    rows, whole = [], None
    if rank == 0:
        reset_peak(device)
        try:
            seconds, whole = timed(model, batch, args.steps, device)
            whole = whole.float().cpu()
            rows.append(dict(mode="whole", gpus=1, seconds=seconds, peak_gib=[peak_gib(device)]))
        except torch.cuda.OutOfMemoryError:
            rows.append(dict(mode="whole", gpus=1, seconds=None, peak_gib=[None], note="out of memory"))
    dist.barrier()

    for mode in args.modes:
        del model
        reset_peak(device)
        model = build(config, args.control_layers, device, dtype)
        split_models([model.base, model.controlnet], mode, device)
        dist.barrier()
        seconds, out = timed(model, batch, args.steps, device)
        slowest = torch.tensor([seconds], dtype=torch.float64)
        peaks = [None] * world
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        dist.all_gather_object(peaks, peak_gib(device))
        row = dict(mode=mode, gpus=world, seconds=float(slowest), peak_gib=peaks)
        if rank == 0 and whole is not None:
            row["rel_diff"] = float((out.float().cpu() - whole).abs().max() / whole.abs().max())
        rows.append(row)

    result = dict(model="tiny test transformer" if args.smoke else "Wan2.1-I2V-14B", control_layers=args.control_layers,
                  frames=args.frames, size=f"{args.width}x{args.height}", tokens=tokens, batch=2,
                  dtype=str(dtype).replace("torch.", ""), device=torch.cuda.get_device_name() if device != "cpu" else "cpu",
                  processes=world, rows=rows)
    if rank == 0:
        print(report(result))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1) + "\n")
    dist.barrier()
    return result


def report(result: dict) -> str:
    base = next((r["seconds"] for r in result["rows"] if r["mode"] == "whole"), None)
    lines = [f"{result['model']} + ControlNet ({result['control_layers']} blocks), {result['frames']} frames at "
             f"{result['size']} ({result['tokens']} tokens), CFG batch {result['batch']}, {result['dtype']}, "
             f"{result['processes']} x {result['device']}",
             f"{'mode':<8} {'GPUs':>4} {'s/step':>8} {'speed-up':>8} {'peak GiB per GPU':>24} {'|split-whole|/|whole|':>22}"]
    for r in result["rows"]:
        speed = f"{base / r['seconds']:.2f}" if base and r["seconds"] else "-"
        peaks = ", ".join("-" if p is None else f"{p:.1f}" for p in r["peak_gib"])
        seconds = "-" if r["seconds"] is None else f"{r['seconds']:.3f}"
        diff = f"{r['rel_diff']:.1e}" if "rel_diff" in r else "-"
        lines.append(f"{r['mode']:<8} {r['gpus']:>4} {seconds:>8} {speed:>8} {peaks:>24} {diff:>22}"
                     + (f"  ({r['note']})" if "note" in r else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
