"""Cost of the Trajectory ControlNet per denoising step, measured side by side in one run.

For each base family (Wan I2V, CogVideoX I2V) at a mid-size CPU config (default 8 blocks of
4 heads x 64, latent 4 x 16 x 16, batch 2 as in a classifier-free-guidance step) it times:

- base alone;
- base + ControlNet with all L blocks;
- base + ControlNet with L/2 blocks (what the released checkpoint holds, instantiated as we do);
- the released layout: L control blocks instantiated and run, only the first L/2 with weights
  (the rest have zero projectors, so they change nothing; the output equals the L/2 model's).

Variants are timed in interleaved rounds so that machine load hits them alike. The figure used for the
ratios is the process CPU time of a step, the least over the rounds (as `timeit` advises: the least
disturbed run): with one thread it equals the wall time on an idle machine and, unlike wall time, does
not count time the process spent descheduled while other jobs share the cores. The median CPU time and
the fastest wall time are printed beside it.
Target: time(base + k blocks) <= (1 + k/L + 0.05) x time(base).
Peak memory is the growth of the resident set during one step (Linux: VmHWM after resetting it with
/proc/self/clear_refs), measured in a child process started with MALLOC_MMAP_THRESHOLD_ fixed so that
freed tensors go back to the system and each step's peak is seen on its own (that setting slows
allocation, so timings are taken in this process, without it).
Default: one thread, because on a shared machine several OpenMP threads per process make small
operations wait on each other far more than they compute; `--threads N` to change.

    .venv/bin/python benchmarks/controlnet.py [--family wan cogvideox] [--rounds 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from train import json_from_child, peak_step_memory_mb  # benchmarks/train.py, beside this script


def build(family: str, args):
    """(base, inputs, trajectory, variants: name -> (model or None, conditioning_scale))."""
    import torch

    from magicmotion.models import (
        CogVideoXTrajectoryControlNet,
        MagicMotionTransformer,
        WanTrajectoryControlNet,
        tiny_cogvideox_inputs,
        tiny_cogvideox_transformer,
        tiny_wan_inputs,
        tiny_wan_transformer,
    )

    L, half = args.blocks, args.blocks // 2
    width = args.heads * args.head_dim
    if family == "wan":
        base = tiny_wan_transformer(
            num_layers=L, num_attention_heads=args.heads, attention_head_dim=args.head_dim, text_dim=width,
            freq_dim=256, ffn_dim=4 * width, rope_max_seq_len=1024,
        )
        inputs = tiny_wan_inputs(base, batch=args.batch, frames=args.frames, height=args.height, width=args.width,
                                 text_tokens=args.text_tokens)
        cls = WanTrajectoryControlNet
    else:
        base = tiny_cogvideox_transformer(
            num_layers=L, num_attention_heads=args.heads, attention_head_dim=args.head_dim, text_embed_dim=width,
            time_embed_dim=128, sample_height=args.height, sample_width=args.width,
            sample_frames=(args.frames - 1) * 4 + 1, max_text_seq_length=args.text_tokens,
        )
        inputs = tiny_cogvideox_inputs(base, batch=args.batch, text_tokens=args.text_tokens)
        cls = CogVideoXTrajectoryControlNet
    trajectory = inputs.pop("trajectory_latents")

    def perturbed(controlnet, trained: int):
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for i, proj in enumerate(controlnet.out_projectors):
                if i < trained:  # "trained" projectors; the rest stay zero as in the release
                    proj.weight.copy_(torch.randn(proj.weight.shape, generator=g) * 0.02)
        return controlnet

    full = perturbed(cls.from_transformer(base), L)
    ours = perturbed(cls.from_transformer(base, num_layers=half), half)
    released = perturbed(cls.from_transformer(base), half)
    released.load_state_dict(ours.state_dict(), strict=False)  # same weights in the first L/2 blocks
    variants = {
        "base": (None, 1.0),
        f"+ControlNet {L}/{L} blocks": (MagicMotionTransformer(base, full), 1.0),
        f"+ControlNet {half}/{L} blocks": (MagicMotionTransformer(base, ours), 1.0),
        f"released layout ({L} run, {half} trained)": (MagicMotionTransformer(base, released), 1.0),
    }
    return base, inputs, trajectory, variants


def steps_for(family: str, args) -> dict:
    """variant name -> a function running one denoising step of it."""
    base, inputs, trajectory, variants = build(family, args)

    def step_fn(model, scale):
        if model is None:
            return lambda: base(**inputs).sample
        return lambda: model(trajectory_latents=trajectory, conditioning_scale=scale, **inputs).sample

    return {name: step_fn(*v) for name, v in variants.items()}


def measure_memory(family: str, args) -> dict:
    """Peak memory growth (MiB) of one step of each variant; run in the child process."""
    import torch

    steps = steps_for(family, args)
    with torch.inference_mode():
        for fn in steps.values():
            fn()
        return {name: peak_step_memory_mb(fn) for name, fn in steps.items()}


def memory_in_child(family: str, argv: list[str]) -> dict:
    return json_from_child(__file__, [*argv, "--family", family, "--memory-child"]) or {}


def bench_family(family: str, args, argv: list[str]) -> dict:
    import torch

    steps = steps_for(family, args)
    L, half = args.blocks, args.blocks // 2
    names = list(steps)
    with torch.inference_mode():
        outs = {name: fn() for name, fn in steps.items()}  # also a warm-up
        for _ in range(args.warmup):
            for fn in steps.values():
                fn()
        same = (outs[names[2]] - outs[names[3]]).abs().max().item()
        times = {name: [] for name in names}
        walls = {name: [] for name in names}
        for _ in range(args.rounds):
            for name in names:
                t0, c0 = time.perf_counter(), time.process_time()
                steps[name]()
                times[name].append(time.process_time() - c0)
                walls[name].append(time.perf_counter() - t0)

    del steps
    memory = memory_in_child(family, argv)
    best = {name: min(ts) for name, ts in times.items()}
    t_base = best["base"]
    rows = []
    for name, k in zip(names, (0, L, half, L)):
        ratio = best[name] / t_base
        target = 1 + k / L + 0.05
        rows.append(dict(variant=name, control_blocks_run=k, ms=1000 * best[name],
                         median_ms=1000 * statistics.median(times[name]),
                         wall_ms_min=1000 * min(walls[name]), ratio=ratio,
                         target=target if k else None, ok=(ratio <= target) if k else None,
                         peak_mb=memory.get(name)))
    return dict(
        family=family,
        config=dict(blocks=L, heads=args.heads, head_dim=args.head_dim, latent=[args.frames, args.height, args.width],
                    batch=args.batch, text_tokens=args.text_tokens, threads=torch.get_num_threads()),
        rows=rows,
        speedup_over_released=best[names[3]] / best[names[2]],
        released_vs_ours_max_abs_diff=same,
    )


def report(result: dict) -> str:
    c = result["config"]
    lines = [
        f"{result['family']}: {c['blocks']} blocks, {c['heads']} heads x {c['head_dim']}, latent "
        f"{'x'.join(map(str, c['latent']))} (F x H x W), batch {c['batch']}, {c['threads']} threads",
        f"  {'variant':<34} {'cpu ms':>8} {'x base':>7} {'target':>7} {'median':>8} {'wall ms':>8} {'peak MiB':>9}",
    ]
    for r in result["rows"]:
        target = f"{r['target']:.2f}" if r["target"] else "-"
        ok = "" if r["ok"] is None else ("  ok" if r["ok"] else "  OVER")
        mem = f"{r['peak_mb']:.1f}" if r["peak_mb"] is not None else "n/a"
        lines.append(f"  {r['variant']:<34} {r['ms']:>8.1f} {r['ratio']:>7.2f} {target:>7} "
                     f"{r['median_ms']:>8.1f} {r['wall_ms_min']:>8.1f} {mem:>9}{ok}")
    lines.append(f"  speed-up of {c['blocks'] // 2} trained blocks over the released layout: "
                 f"{result['speedup_over_released']:.2f}x (outputs differ by "
                 f"{result['released_vs_ours_max_abs_diff']:.1e})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", nargs="+", choices=["wan", "cogvideox"], default=["wan", "cogvideox"])
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--frames", type=int, default=4, help="latent frames")
    parser.add_argument("--height", type=int, default=16, help="latent height")
    parser.add_argument("--width", type=int, default=16, help="latent width")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--text-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(measure_memory(args.family[0], args)))
        return 0
    child_argv = [a for a in _without_option(argv, "--family") if a != "--memory-child"]
    results = []
    for family in args.family:
        result = bench_family(family, args, child_argv)
        print(report(result), flush=True)
        results.append(result)
    if args.json:
        from magicmotion.io import atomic_path

        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(results, indent=2))
    return 0


def _without_option(argv: list[str], option: str) -> list[str]:
    """argv without `option` and the values that follow it (up to the next --flag)."""
    out, skipping = [], False
    for a in argv:
        if a == option:
            skipping = True
            continue
        if skipping and not a.startswith("--"):
            continue
        skipping = False
        out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
