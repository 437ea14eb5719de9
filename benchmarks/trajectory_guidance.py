"""What trajectory guidance costs: the shipped tiny model with `trajectory_guidance_scale` 1 (off)
and W (`--scale`, default the tiny benchmark's `BENCH_TRAJECTORY_GUIDANCE`), side by side.

One call of the pipeline on the bundled example (`examples/`, box kind, 17 x 64 x 64, guidance 1,
as `magicmotion demo` runs it) at `--steps` denoising steps, each setting in interleaved rounds so
machine load hits them alike; the figure is the process CPU time of a call, the least over rounds,
and the extra time per denoising step. Guidance adds one pass of the base alone (no ControlNet) per
step, so a step should cost between 1x and 2x; the VAE and the rest do not change. Peak memory is
the growth of the resident set during one call, measured in a child process (see train.py).

    .venv/bin/python benchmarks/trajectory_guidance.py [--rounds 5] [--steps 10] [--scale 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json

from train import interleaved_cpu_times, json_from_child, peak_step_memory_mb  # benchmarks/train.py


def calls_for(steps: int, scale: float):
    """{trajectory guidance scale: a function running one pipeline call}."""
    import torch

    from magicmotion.demo import SPEC_FILES, examples_dir
    from magicmotion.io import read_image
    from magicmotion.pipelines import load_pipeline
    from magicmotion.pipelines.loading import TINY_GUIDANCE
    from magicmotion.trajectory import load

    pipe = load_pipeline(base=None, kind="box", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    ex = examples_dir()
    image, spec = read_image(ex / "first_frame.png"), load(ex / SPEC_FILES["box"])
    prompt = (ex / "prompt.txt").read_text().strip()

    def call(w: float):
        return lambda: pipe(image=image, prompt=prompt, trajectory=spec, kind="box", num_inference_steps=steps,
                            guidance_scale=TINY_GUIDANCE, trajectory_guidance_scale=w,
                            generator=torch.Generator().manual_seed(0))

    return {w: call(w) for w in (1.0, scale)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="denoising steps (the benchmark's 10)")
    parser.add_argument("--scale", type=float, default=None, help="W (default BENCH_TRAJECTORY_GUIDANCE)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    from magicmotion.training.tiny import BENCH_TRAJECTORY_GUIDANCE

    torch.set_num_threads(args.threads)
    args.scale = BENCH_TRAJECTORY_GUIDANCE if args.scale is None else args.scale
    fns = calls_for(args.steps, args.scale)
    if args.memory_child:
        for fn in fns.values():
            fn()
        print(json.dumps([[w, peak_step_memory_mb(fn)] for w, fn in fns.items()]))
        return 0
    cpu = interleaved_cpu_times(fns, args.rounds)
    rows = json_from_child(__file__, ["--steps", str(args.steps), "--scale", str(args.scale),
                                      "--threads", str(args.threads), "--memory-child"])
    memory = {w: mb for w, mb in rows or []}

    print(f"shipped tiny model, bundled example (box, 17x64x64), {args.steps} steps, "
          f"{torch.get_num_threads()} thread(s), {args.rounds} rounds")
    print(f"{'trajectory guidance':<22}{'CPU ms / call':>14}{'peak MiB':>10}")
    for w in fns:
        mem = f"{memory[w]:.1f}" if memory.get(w) is not None else "n/a"
        print(f"{w:<22g}{1000 * min(cpu[w]):>14.1f}{mem:>10}")
    off, on = (min(cpu[w]) for w in fns)
    print(f"  a call with guidance takes {on / off:.2f}x the time of one without "
          f"(+{1000 * (on - off) / args.steps:.1f} ms per denoising step)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
