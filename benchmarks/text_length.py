"""What padding the prompt to 64 text tokens instead of Wan's 512 buys the tiny model.

The shipped tiny model's transformer (`magicmotion.training.tiny.BASE_CONFIG`, random weights: speed
does not depend on them) on one batch of 17 x 64 x 64 clips (5 latent frames of 16 x 16, 320 video
tokens), three kinds of step, each with 512 and with 64 text tokens:

- base step: forward + backward of the base (the `base` phase of `make tiny-model`);
- stage step: the base without gradients + a ControlNet of all 6 blocks with them (stages 1-3);
- sampling step: one denoising forward of base + ControlNet (generation, the benchmark).

Variants run in interleaved rounds so machine load hits them alike; the figure is the process CPU time
of a step, the least over rounds; peak memory is the growth of the resident set during one step
(Linux VmHWM, reset through /proc/self/clear_refs), measured in a child process with
MALLOC_MMAP_THRESHOLD_ fixed so that freed tensors go back to the system (times are measured without
it: it makes every step slower). Prints the 512 / 64 ratio per kind.

    .venv/bin/python benchmarks/text_length.py [--rounds 5] [--batch 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json

from train import interleaved_cpu_times, json_from_child, peak_step_memory_mb  # benchmarks/train.py

LENGTHS = (512, 64)
KINDS = ("base step", "stage step", "sampling step")


def steps_for(batch: int):
    """{(kind, text length): a function running one step}."""
    import torch
    from diffusers import WanTransformer3DModel

    from magicmotion.models import MagicMotionTransformer, WanTrajectoryControlNet
    from magicmotion.pipelines.settings import is_ti2v
    from magicmotion.training.tiny import BASE_CONFIG

    torch.manual_seed(0)
    base = WanTransformer3DModel(**BASE_CONFIG)  # trained by the base step
    frozen = WanTransformer3DModel(**BASE_CONFIG)
    control = WanTrajectoryControlNet.from_transformer(frozen, expand_timesteps=is_ti2v(frozen.config))
    joint = MagicMotionTransformer(frozen, control, freeze_base=True)
    x = torch.randn(batch, BASE_CONFIG["in_channels"], 5, 16, 16)
    traj = torch.randn(batch, BASE_CONFIG["out_channels"], 5, 16, 16)
    t = torch.rand(batch) * 1000
    fns = {}
    for n in LENGTHS:
        text = torch.randn(batch, n, BASE_CONFIG["text_dim"])

        def base_step(text=text):
            base(x, t, text, return_dict=False)[0].square().mean().backward()

        def stage_step(text=text):
            joint(x, t, text, traj, return_dict=False)[0].square().mean().backward()

        def sampling_step(text=text):
            with torch.no_grad():
                joint(x, t, text, traj, return_dict=False)

        fns.update({("base step", n): base_step, ("stage step", n): stage_step, ("sampling step", n): sampling_step})
    return [base, joint], fns


def memory_in_child(args) -> dict:
    """{(kind, text length): peak MiB or None}, from a child process with MALLOC_MMAP_THRESHOLD_ set."""
    rows = json_from_child(__file__, ["--batch", str(args.batch), "--threads", str(args.threads), "--memory-child"])
    return {(kind, n): mb for kind, n, mb in rows or []}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="the tiny recipe's batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="the recipe's cpu_threads")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    models, fns = steps_for(args.batch)
    if args.memory_child:
        for fn in fns.values():
            fn()
        print(json.dumps([[*key, peak_step_memory_mb(fn)] for key, fn in fns.items()]))
        return 0

    def drop_grads():
        for m in models:
            m.zero_grad(set_to_none=True)

    cpu = interleaved_cpu_times(fns, args.rounds, after=drop_grads)
    memory = memory_in_child(args)

    print(f"tiny Wan base (6 blocks of 4x32) + ControlNet (6 blocks), batch {args.batch}, 17x64x64 clips "
          f"(320 video tokens), {torch.get_num_threads()} thread(s), {args.rounds} rounds")
    print(f"{'step':<16}{'text tokens':>12}{'CPU ms':>10}{'peak MiB':>10}")
    for key in fns:
        mem = f"{memory[key]:.1f}" if memory.get(key) is not None else "n/a"
        print(f"{key[0]:<16}{key[1]:>12}{1000 * min(cpu[key]):>10.1f}{mem:>10}")
    for kind in KINDS:
        ratio = min(cpu[(kind, 512)]) / min(cpu[(kind, 64)])
        print(f"  {kind}: 512 tokens take {ratio:.2f}x the time of 64")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
