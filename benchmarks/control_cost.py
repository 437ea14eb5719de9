"""Per-step cost of the pipelines' ControlNet speed options against the base, side by side in one run.

At the released proportions (a base of L blocks, a Trajectory ControlNet of L/2 blocks) and with
classifier-free guidance (two branches per step), it runs `magicmotion.pipelines.guidance.
GuidedPrediction` (the code the pipelines' denoising loops call) over a run of steps for each option
set, and the base alone (both branches as one batch) for the reference:

- plain (the default: ControlNet every step, in both branches);
- control_every=2, control_every=3 (residuals reused between);
- control_branches="cond" (one ControlNet pass, on the conditional text, for both branches);
- cond + control_every=2, cond + control_every=3 (combined);
- cfg_mode="sequential" (branches one after the other: same work, smaller batches).

Per step = the time of the whole run of steps / steps (default 6, a multiple of 2 and 3, so the reuse
is exact). The figure is the process CPU time, the least over interleaved rounds (see
benchmarks/controlnet.py for why); one thread by default. The expected ratio is
1 + (control blocks run per step x their batch) / (L x 2), e.g. 1.5 plain, 1.25 every 2, 1.25 cond.

    .venv/bin/python benchmarks/control_cost.py [--family wan cogvideox] [--blocks 8] [--heads 4]
        [--head-dim 64] [--frames 4 --height 32 --width 32] [--steps 6] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

OPTIONS = {
    "plain": {},
    "control_every=2": dict(control_every=2),
    "control_every=3": dict(control_every=3),
    "cond-only control": dict(control_branches="cond"),
    "cond + control_every=2": dict(control_branches="cond", control_every=2),
    "cond + control_every=3": dict(control_branches="cond", control_every=3),
    "cfg_mode=sequential": dict(cfg_mode="sequential"),
}


def expected_ratio(options: dict, steps: int) -> float:
    """1 + the ControlNet's share of a step: half the base's blocks, on one or both branches, on the
    steps the schedule runs it."""
    from magicmotion.pipelines.guidance import control_steps

    runs = sum(control_steps(steps, options.get("control_every", 1))) / steps
    branches = 0.5 if options.get("control_branches") == "cond" else 1.0
    return 1 + 0.5 * branches * runs


def build(family: str, args):
    """(model, base_step(), option -> run of `steps` steps)."""
    import torch

    from magicmotion.models import (CogVideoXTrajectoryControlNet, MagicMotionTransformer, WanTrajectoryControlNet,
                                    tiny_cogvideox_inputs, tiny_cogvideox_transformer, tiny_wan_inputs,
                                    tiny_wan_transformer)
    from magicmotion.pipelines.guidance import GuidedPrediction

    L, width = args.blocks, args.heads * args.head_dim
    if family == "wan":
        base = tiny_wan_transformer(num_layers=L, num_attention_heads=args.heads, attention_head_dim=args.head_dim,
                                    text_dim=width, freq_dim=256, ffn_dim=4 * width, rope_max_seq_len=1024)
        inputs = tiny_wan_inputs(base, batch=1, frames=args.frames, height=args.height, width=args.width,
                                 text_tokens=args.text_tokens)
        controlnet = WanTrajectoryControlNet.from_transformer(base, num_layers=L // 2)
        shared = {}
    else:
        base = tiny_cogvideox_transformer(
            num_layers=L, num_attention_heads=args.heads, attention_head_dim=args.head_dim, text_embed_dim=width,
            time_embed_dim=128, sample_height=args.height, sample_width=args.width,
            sample_frames=(args.frames - 1) * 4 + 1, max_text_seq_length=args.text_tokens)
        inputs = tiny_cogvideox_inputs(base, batch=1, text_tokens=args.text_tokens)
        controlnet = CogVideoXTrajectoryControlNet.from_transformer(base, num_layers=L // 2)
        shared = dict(image_rotary_emb=inputs.pop("image_rotary_emb", None))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # "trained" projectors, so the residuals are not zero
        for proj in controlnet.out_projectors:
            proj.weight.copy_(torch.randn(proj.weight.shape, generator=g) * 0.02)
    model = MagicMotionTransformer(base, controlnet)
    x, trajectory = inputs["hidden_states"], inputs["trajectory_latents"]
    positive = inputs["encoder_hidden_states"]
    negative = torch.randn(positive.shape, generator=g)
    t = inputs["timestep"][0]
    tokens = x.shape[-1] * x.shape[-2] * (x.shape[2] if family == "wan" else x.shape[1]) // 4

    batch = dict(hidden_states=torch.cat([x, x]), timestep=t.expand(2),
                 encoder_hidden_states=torch.cat([negative, positive]), **shared)

    def base_run():
        for _ in range(args.steps):
            base(**batch)

    def option_run(options):
        def run():
            predict = GuidedPrediction(model, args.steps, 1.0, **options)
            for i in range(args.steps):
                predict(i, x, trajectory, t, negative, positive, shared=shared)
        return run

    return tokens, base_run, {name: option_run(o) for name, o in OPTIONS.items()}


def bench_family(family: str, args) -> dict:
    import torch

    tokens, base_run, runs = build(family, args)
    runs = {"base (CFG batch of 2)": base_run, **runs}
    times = {name: [] for name in runs}
    with torch.inference_mode():
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(args.rounds):
            for name, fn in runs.items():
                c0 = time.process_time()
                fn()
                times[name].append((time.process_time() - c0) / args.steps)
    t_base = min(times["base (CFG batch of 2)"])
    rows = []
    for name, ts in times.items():
        options = OPTIONS.get(name)
        rows.append(dict(variant=name, ms=1000 * min(ts), median_ms=1000 * statistics.median(ts),
                         ratio=min(ts) / t_base,
                         expected=None if options is None else expected_ratio(options, args.steps)))
    return dict(family=family, config=dict(blocks=args.blocks, control_blocks=args.blocks // 2,
                                           width=args.heads * args.head_dim, tokens=tokens,
                                           latent=[args.frames, args.height, args.width], steps=args.steps,
                                           rounds=args.rounds, threads=torch.get_num_threads()), rows=rows)


def report(results: list[dict]) -> str:
    names = [r["variant"] for r in results[0]["rows"]]
    lines = []
    for res in results:
        c = res["config"]
        lines.append(f"{res['family']}: base {c['blocks']} blocks, ControlNet {c['control_blocks']}, width {c['width']}, "
                     f"{c['tokens']} video tokens (latent {'x'.join(map(str, c['latent']))}), CFG, "
                     f"{c['steps']} steps x {c['rounds']} rounds, {c['threads']} thread(s)")
    header = f"  {'per-step cost vs base':<26}" + "".join(f" {r['family'] + ' ms':>10} {'x base':>7}" for r in results)
    lines += [header + f" {'expected':>9}"]
    for i, name in enumerate(names):
        row = results[0]["rows"][i]
        expected = f"{row['expected']:.2f}" if row["expected"] is not None else "1.00"
        lines.append(f"  {name:<26}" + "".join(f" {r['rows'][i]['ms']:>10.1f} {r['rows'][i]['ratio']:>7.2f}"
                                              for r in results) + f" {expected:>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", nargs="+", choices=["wan", "cogvideox"], default=["wan", "cogvideox"])
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--frames", type=int, default=4, help="latent frames")
    parser.add_argument("--height", type=int, default=32, help="latent height")
    parser.add_argument("--width", type=int, default=32, help="latent width")
    parser.add_argument("--text-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    results = []
    for family in args.family:
        results.append(bench_family(family, args))
        print(f"{family} done", file=sys.stderr, flush=True)
    print(report(results), flush=True)
    if args.json:
        from magicmotion.io import atomic_path

        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
