"""Training step speed and memory on a tiny config: precomputed latents vs encoding on the fly,
gradient checkpointing on vs off, and the whole `train()` loop.

The setting is the shipped tiny model's (17 frames x 64 x 64 synthetic clips; a Wan image-to-video
base of 6 blocks of 4 heads x 32, a VAE of base width 16), stage 2 (box maps, segment head,
lambda 0.5), batch 4. Variants:

- on the fly: each step encodes video, box maps, mask maps and the first-frame condition with the
  frozen VAE and the caption with the text encoder, then trains (what `train()` does without
  `data.precomputed`);
- precomputed: the step reads `magicmotion train precompute` output (what the tiny model uses);
- each with and without gradient checkpointing.

A step is exactly the trainer's: `LatentEncoder.encode` (on the fly), `TrainingObjective`, backward,
clipping, AdamW. Variants run in interleaved rounds so machine load hits them alike; the figure is the
process CPU time of a step, the least over rounds (with one thread it equals wall time on an idle
machine, and it does not count time spent descheduled on a shared machine); the median and the fastest
wall time are printed too. `train()` is also run end to end on the precomputed data (steps per CPU
second, start-up excluded), to show what the loop adds (data loading, accelerate, logging).
Peak memory is the growth of the resident set during one training step (Linux VmHWM, reset through
/proc/self/clear_refs), in a child process per variant with MALLOC_MMAP_THRESHOLD_ fixed so freed
tensors go back to the system. Default one thread (see benchmarks/controlnet.py for why).

    .venv/bin/python benchmarks/train.py [--rounds 5] [--batch 4] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"
VARIANTS = ["on the fly", "on the fly + ckpt", "precomputed", "precomputed + ckpt"]
FRAMES, SIZE = 17, (64, 64)
TRANSFORMER = dict(num_layers=6, num_attention_heads=4, attention_head_dim=32, ffn_dim=256, freq_dim=64,
                   rope_max_seq_len=64)
VAE = dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
           temperal_downsample=[False, True, True])


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_step_memory_mb(step) -> float | None:
    """Growth of the resident set (MiB) while `step()` runs, or None where /proc is not available."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    before = _status_kb("VmRSS")
    step()
    peak = _status_kb("VmHWM")
    return None if before is None or peak is None else (peak - before) / 1024


def interleaved_cpu_times(fns: dict, rounds: int, after=None) -> dict:
    """{key: [process CPU seconds of each call of fns[key]]}: one warm-up call each, then `rounds`
    rounds calling every function in turn, so that machine load hits them alike. `after()` runs
    after every call (e.g. to drop gradients)."""
    for fn in fns.values():
        fn()
        if after is not None:
            after()
    times = {key: [] for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            c0 = time.process_time()
            fn()
            times[key].append(time.process_time() - c0)
            if after is not None:
                after()
    return times


# ---------------------------------------------------------------------------------------- setup


def prepare(work: Path, clips: int) -> dict:
    """Synthetic clips, a tiny base folder and precomputed latents under `work` (reused when present)."""
    from diffusers import WanImageToVideoPipeline

    from magicmotion.data.synthetic import synthesize
    from magicmotion.pipelines.tiny import tiny_wan_components
    from magicmotion.training.config import from_dict
    from magicmotion.training.precompute import precompute

    data, base, pre = work / "data", work / "base", work / "precomputed"
    if not (data / "index.jsonl").is_file():
        synthesize(data, clips=clips, frames=FRAMES, size=SIZE, seed=0, test_fraction=0.0, progress=False)
    if not (base / "model_index.json").is_file():
        WanImageToVideoPipeline(**tiny_wan_components(seed=0, transformer=TRANSFORMER, vae=VAE)).save_pretrained(base)
    config = config_for(work, precomputed=False, checkpointing=False, batch=1)
    timing = {}
    if not (pre / "index.json").is_file():
        t0 = time.perf_counter()
        precompute(from_dict(config), pre, progress=False)
        timing["precompute_s_per_clip"] = (time.perf_counter() - t0) / clips
    return timing


def config_for(work: Path, precomputed: bool, checkpointing: bool, batch: int, steps: int = 10) -> dict:
    return {
        "model": "wan", "base": str(work / "base"), "output_dir": str(work / "runs" / "x"), "stage": 2,
        "condition": "box", "segment_head": True, "lambda_seg": 0.5,
        "data": {"dataset": str(work / "data"), "num_frames": FRAMES, "size": list(SIZE), "sampling": "start",
                 "precomputed": str(work / "precomputed") if precomputed else None, "image_dropout": 0.05},
        "optim": {"lr": 1e-4, "warmup_steps": 0},
        "loop": {"max_steps": steps, "batch_size": batch, "mixed_precision": "no", "log_every": steps,
                 "gradient_checkpointing": checkpointing, "tensorboard": False},
    }


def step_for(work: Path, variant: str, batch: int):
    """A function running one training step of `variant`, as `train()` runs it."""
    import torch

    from magicmotion.training.config import from_dict
    from magicmotion.training.data import ResumableSampler, collate
    from magicmotion.training.objective import TrainingObjective, step_generator
    from magicmotion.training.setup import TrainableModules, build_data, build_models

    config = from_dict(config_for(work, "precomputed" in variant, "ckpt" in variant, batch))
    joint, scheduler = build_models(config)
    if config.loop.gradient_checkpointing:
        joint.enable_gradient_checkpointing()
    modules = TrainableModules(joint)
    params = [p for p in modules.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.optim.lr)
    dataset, encoder = build_data(config, torch.device("cpu"))
    objective = TrainingObjective(config, joint.base.config, scheduler)
    keys = iter(ResumableSampler(len(dataset), seed=0))
    counter = iter(range(10**9))
    batch_size = batch

    def step():
        batch = collate([dataset[next(keys)] for _ in range(batch_size)])
        if encoder is not None:
            batch = encoder.encode(batch, need_mask=config.needs_mask_latents)
        terms = objective(modules, batch, step_generator(0, next(counter), 0))
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure_memory(work: Path, variant: str, batch: int) -> float | None:
    step = step_for(work, variant, batch)
    step()
    step()
    return peak_step_memory_mb(step)


def json_from_child(script: str, argv: list[str], what: str = "memory measurement"):
    """Run `script argv` in a child process with MMAP_ENV set (freed tensors go back to the system, so
    the resident set shows each step's own peak) and return the JSON of its last stdout line; None off
    Linux or when the child fails (its stderr is printed, headed by `what`)."""
    if not sys.platform.startswith("linux"):
        return None
    done = subprocess.run([sys.executable, script, *argv], env={**os.environ, MMAP_ENV: "65536"},
                          capture_output=True, text=True)
    if done.returncode:
        print(f"{what} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_in_child(work: Path, variant: str, args) -> float | None:
    argv = ["--work", str(work), "--batch", str(args.batch), "--threads", str(args.threads), "--memory-child", variant]
    return json_from_child(__file__, argv, f"memory measurement of {variant}")


def time_train_loop(work: Path, batch: int, steps: int) -> float:
    """Steps per CPU second of `train()` on precomputed latents, from its 3rd step to its last."""
    import shutil

    from magicmotion.training.config import from_dict
    from magicmotion.training.trainer import train

    config = from_dict(config_for(work, True, False, batch, steps=steps))
    shutil.rmtree(config.output_dir, ignore_errors=True)
    stamps = {}
    train(config, progress=False, callback=lambda step, row: stamps.__setitem__(step, time.process_time()))
    return (steps - 2) / (stamps[steps] - stamps[2])


# ---------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="folder for data, base and latents (default: a temporary one)")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=2)
    parser.add_argument("--loop-steps", type=int, default=30, help="steps of the end-to-end train() run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loop_steps < 3:
        parser.error(f"--loop-steps must be at least 3 (the first two are start-up), got {args.loop_steps}")

    import torch

    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(measure_memory(args.work, args.memory_child, args.batch)))
        return 0

    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="mm-train-bench-")
        args.work = Path(tmp.name)
    args.work.mkdir(parents=True, exist_ok=True)
    setup = prepare(args.work, args.clips)

    steps = {v: step_for(args.work, v, args.batch) for v in VARIANTS}
    for fn in steps.values():  # warm-up
        fn()
    cpu = {v: [] for v in VARIANTS}
    wall = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for v, fn in steps.items():
            for _ in range(args.steps_per_round):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                cpu[v].append(time.process_time() - c0)
                wall[v].append(time.perf_counter() - t0)
    del steps
    loop_steps_per_s = time_train_loop(args.work, args.batch, args.loop_steps)
    memory = {v: memory_in_child(args.work, v, args) for v in VARIANTS}

    best = {v: min(cpu[v]) for v in VARIANTS}
    rows = [dict(variant=v, step_ms=1000 * best[v], median_ms=1000 * statistics.median(cpu[v]),
                 wall_ms_min=1000 * min(wall[v]), steps_per_s=1 / best[v],
                 samples_per_s=args.batch / best[v], peak_mb=memory[v]) for v in VARIANTS]
    ratios = {
        "precomputed speed-up (no ckpt)": best["on the fly"] / best["precomputed"],
        "precomputed speed-up (ckpt)": best["on the fly + ckpt"] / best["precomputed + ckpt"],
        "checkpointing time cost (precomputed)": best["precomputed + ckpt"] / best["precomputed"],
        "checkpointing time cost (on the fly)": best["on the fly + ckpt"] / best["on the fly"],
        "train() loop steps/s / bare precomputed step": loop_steps_per_s * best["precomputed"],
    }
    if memory["precomputed"] and memory["precomputed + ckpt"]:
        ratios["checkpointing memory (precomputed)"] = memory["precomputed + ckpt"] / memory["precomputed"]
    if memory["on the fly"] and memory["precomputed"]:
        ratios["on the fly memory / precomputed"] = memory["on the fly"] / memory["precomputed"]

    print(f"tiny Wan stage 2, {FRAMES}x{SIZE[1]}x{SIZE[0]} clips, batch {args.batch}, "
          f"{TRANSFORMER['num_layers']} blocks of {TRANSFORMER['num_attention_heads']}x"
          f"{TRANSFORMER['attention_head_dim']}, {torch.get_num_threads()} thread(s), "
          f"{args.rounds} rounds x {args.steps_per_round} steps")
    print(f"{'variant':<22}{'step ms':>10}{'median':>10}{'wall min':>10}{'steps/s':>10}{'samples/s':>11}{'peak MiB':>10}")
    for r in rows:
        peak = f"{r['peak_mb']:.1f}" if r["peak_mb"] is not None else "n/a"
        print(f"{r['variant']:<22}{r['step_ms']:>10.1f}{r['median_ms']:>10.1f}{r['wall_ms_min']:>10.1f}"
              f"{r['steps_per_s']:>10.2f}{r['samples_per_s']:>11.1f}{peak:>10}")
    print(f"train() loop on precomputed latents: {loop_steps_per_s:.2f} steps per CPU second (after start-up)")
    if "precompute_s_per_clip" in setup:
        print(f"precompute: {setup['precompute_s_per_clip']:.2f} s per clip (video, image condition, mask and box maps)")
    for name, value in ratios.items():
        print(f"  {name}: {value:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(dict(rows=rows, ratios=ratios, train_loop_steps_per_s=loop_steps_per_s,
                                             setup=setup, batch=args.batch, threads=torch.get_num_threads()),
                                        indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
