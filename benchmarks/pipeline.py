"""Speed and memory of the MagicMotion pipelines.

Default (CPU, tiny components from `magicmotion.pipelines.tiny`, a trained-looking ControlNet): the
whole pipeline against the sum of its parts, each measured alone on the same inputs:

- conditions: reading / rendering the trajectory at the output size (`prepare_trajectory`);
- text: `encode_prompt` (prompt + negative prompt);
- VAE encode: `prepare_latents` (noise + first-frame latents) + `encode_trajectory`;
- denoiser: one forward of base + ControlNet on the classifier-free-guidance batch, x steps;
- scheduler: the scheduler's updates for all steps;
- decode: `decode_latents`.

overhead = pipeline / sum(parts) - 1: what the pipeline's own glue costs (checks, concatenation, casting,
progress bar, diffusers' device lookups). Running the pipeline at N and 2N steps splits it into a
per-step part (the slope) and a once-per-call part. On a busy machine those differences drown in the
noise of the parts themselves (and a sum of per-part minima is biased low against the minimum of the
whole), so the glue is also timed directly: the same call with every model
call stubbed to return its cached result, less the conditions and scheduler time; glue / sum(parts)
is the figure held to the target (<= 3%). Rounds interleave the pipeline and its parts; each figure is the
least process CPU time over the rounds (one thread: equal to wall time on an idle machine, but not
counting time the process waited while other jobs used the cores). Peak memory: the resident set's
high-water mark over one pipeline call, minus the resident set before it (Linux /proc), and the total.

`--real PRESET` (CUDA; random weights at real size, bf16; VAE fp32 for Wan as Wan recommends):
`wan-1.3b` (81 x 480 x 832) and `cogvideox-5b` (49 x 480 x 720, the release's 21-of-42 control blocks
unless `--control-layers`), run with no offload, model CPU offload, and model offload + VAE tiling;
reports seconds per denoising step (median over steps, from the step callback) and peak GPU memory
(`torch.cuda.max_memory_allocated`). `--meta` only builds the real configs on the meta device and
prints their sizes (runs anywhere). `wan-small` / `cogvideox-small` run the same code on CPU at toy size.

    .venv/bin/python benchmarks/pipeline.py [--model wan cogvideox] [--frames 17] [--size 64] [--steps 10]
    .venv/bin/python benchmarks/pipeline.py --real wan-1.3b cogvideox-5b [--steps 4] [--json out.json]
    .venv/bin/python benchmarks/pipeline.py --real wan-1.3b cogvideox-5b --meta
    .venv/bin/python benchmarks/pipeline.py --options [--model wan cogvideox] [--steps 10]
    .venv/bin/python benchmarks/pipeline.py --plan

`--options` (CPU, tiny components, guidance 6): each speed and memory option of the pipelines against
the plain run, in one process: seconds per denoising step (median of the steps, process CPU time),
the peak tensor memory of the denoising steps (torch's profiler on CPU: activations and live tensors), the
transformer's and ControlNet's weight bytes, and how far the latents move from the plain run's
(relative L2). On CPU the group offload's onload device is the CPU itself, so it saves nothing here:
its figure is the cost of the hooks. `--plan` writes the expected GPU peak of CogVideoX-5B-I2V + a
21-block ControlNet at 49 x 480 x 720 for each option, from `magicmotion plan`'s parameter counts and
activation formula (magicmotion/training/plan.py; estimates, not measurements).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline_options import bench_options
from pipeline_runs import bench_tiny, build_real, run_real


def report_tiny(r: dict) -> str:
    c = r["config"]
    lines = [f"{r['model']}: tiny pipeline on CPU, {c['frames']} frames {c['width']}x{c['height']}, {c['steps']} steps, "
             f"CFG {c['guidance']}, {c['threads']} thread(s), least CPU time of {c['rounds']} rounds",
             "  params: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in c["params"].items())]
    for name in ("conditions", "text", "vae_encode", "denoiser_step", "scheduler_all_steps", "decode"):
        lines.append(f"  {name:<22}{r['ms'][name]:9.1f} ms")
    lines.append(f"  {'sum of parts':<22}{r['parts_sum_ms']:9.1f} ms  (denoiser x {c['steps']})")
    lines.append(f"  {'pipeline':<22}{r['ms']['pipeline']:9.1f} ms  vs sum of parts {r['overhead_pct']:+.1f}%")
    lines.append(f"  pipeline's own work (models stubbed, less conditions and scheduler): {r['glue_ms']:.1f} ms = "
                 f"{r['glue_pct']:.1f}% of the parts (target <= 3%: {'ok' if r['ok'] else 'MISSED'})")
    lines.append(f"  per step (from {c['steps']} vs {2 * c['steps']} steps): pipeline {r['step_ms_pipeline']:.2f} ms vs "
                 f"denoiser + scheduler {r['step_ms_parts']:.2f} ms ({r['step_overhead_pct']:+.1f}%)")
    lines.append(f"  once per call: pipeline {r['fixed_ms_pipeline']:.1f} ms vs conditions + text + VAE encode + decode "
                 f"{r['fixed_ms_parts']:.1f} ms ({r['fixed_ms_pipeline'] - r['fixed_ms_parts']:+.1f} ms)")
    if r["peak_rss_mb"] is not None:
        lines.append(f"  peak memory: +{r['peak_rss_growth_mb']:.0f} MiB over the call, {r['peak_rss_mb']:.0f} MiB resident")
    return "\n".join(lines)


def report_real(r: dict) -> str:
    mem = f", peak GPU {r['peak_gpu_gb']:.1f} GiB" if r["peak_gpu_gb"] is not None else ""
    step = f"{r['s_per_step']:.2f} s/step" if r["s_per_step"] is not None else "? s/step"
    return (f"{r['model']:<16} {r['frames']}x{r['height']}x{r['width']} {r['dtype']} offload={r['offload']:<5} "
            f"tiling={'on' if r['vae_tiling'] else 'off'}: {step}{mem}, {r['total_s']:.0f} s for {r['steps']} steps "
            f"(ControlNet {r['control_layers']}/{r['base_layers']} blocks, {r['device']})")


def report_meta(preset: str, models: dict, cfg: dict) -> str:
    sizes = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    run = cfg["run"]
    return (f"{preset}: {run['frames']}x{run['height']}x{run['width']}; " +
            ", ".join(f"{k} {v / 1e9:.2f}B" for k, v in sizes.items()) +
            f"; bf16 weights {2 * sum(sizes.values()) / 2**30:.1f} GiB "
            f"(ControlNet {cfg['control_layers']}/{cfg['transformer']['num_layers']} blocks)")


def report_options(r: dict) -> str:
    base = r["options"]["plain"]
    lines = [f"{r['model']}: base 8 blocks x 256 wide, ControlNet 4; {r['frames']} x {r['size']} x {r['size']}, "
             f"{r['steps']} steps, guidance 6 (CPU)",
             f"{'option':<22} {'s/step':>8} {'ratio':>6} {'peak MB':>8} {'ratio':>6} {'weights MB':>10} {'ratio':>6} "
             f"{'drift':>6}"]
    for name, o in r["options"].items():
        peak = "-" if o["peak_growth_mb"] is None else f"{o['peak_growth_mb']:.1f}"
        peak_ratio = ("-" if not base["peak_growth_mb"] or o["peak_growth_mb"] is None
                      else f"{o['peak_growth_mb'] / base['peak_growth_mb']:.2f}")
        lines.append(f"{name:<22} {o['step_s']:>8.4f} {o['step_s'] / base['step_s']:>6.2f} {peak:>8} {peak_ratio:>6} "
                     f"{o['weights_mb']:>10.2f} {o['weights_mb'] / base['weights_mb']:>6.2f} {o['drift']:>6.3f}")
    return "\n".join(lines)


def plan_options(frames: int = 49, size: tuple[int, int] = (720, 480), control_layers: int = 21) -> str:
    """Expected GPU peak (GiB) per option for CogVideoX-5B-I2V + ControlNet, from `magicmotion plan`'s
    parameter counts and its activation formula, with the options' changes:

    - cfg sequential: one guidance branch through the transformer at a time (half the block working
      set), the two branches' control residuals still held; cond branch: one set of residuals;
    - model offload: the largest of (transformer + ControlNet + activations) and each other part;
    - group offload (block level): the GPU holds one block of the transformer or ControlNet, the
      non-block layers and the activations (the text encoder and VAE likewise, one block at a time);
    - fp8: the transformer's and ControlNet's weights in 1 byte instead of 2;
    - sequential offload: one layer's weights + the activations.
    """
    from magicmotion.training.plan import CONTEXT_BYTES, GIB, plan, resolve_base

    p = plan("cogvideox-5b-i2v", size, frames, controlnet_layers=control_layers)
    cogvideox = resolve_base("cogvideox-5b-i2v")
    cfg = cogvideox["parts"]["transformer"][2]
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    ffn = 4 * dim
    text = cogvideox["latent"].get("text_tokens", 226)
    tokens, k, layers = p.tokens, p.control_layers, p.base_layers
    seq = tokens + text
    bf16 = 2

    def act(branches: int, residual_sets: int) -> float:  # as plan(): block working set + held residuals
        return branches * seq * (8 * dim + ffn) * bf16 + residual_sets * k * tokens * dim * bf16

    vae_act = 8 * 128 * min(8, frames) * size[0] * size[1] * bf16
    enc = {n: p.params.get(n, 0) * bf16 for n in ("vae", "text_encoder", "image_encoder")}
    block = p.params["transformer"] / layers  # one block's parameters (the blocks are most of the model)

    def peak(offload: str, wbytes: int, activations: float) -> float:
        dit = (p.params["transformer"] + p.params["controlnet"]) * wbytes
        if offload == "none":
            return dit + sum(enc.values()) + max(activations, vae_act) + CONTEXT_BYTES
        if offload == "model":
            return max(dit + activations, enc["vae"] + vae_act, enc["text_encoder"]) + CONTEXT_BYTES
        if offload == "group":  # a block of weights, the non-block layers (~5% of the model), activations
            return 2 * block * wbytes + 0.05 * dit + max(activations, vae_act) + CONTEXT_BYTES
        return block / 8 * wbytes + max(activations, vae_act) + CONTEXT_BYTES  # sequential: a layer at a time

    rows = [("bf16, all on GPU, cfg batched (default)", "none", 2, act(2, 2)),
            ("bf16, cfg sequential", "none", 2, act(1, 2)),
            ("bf16, cfg sequential, control cond branch", "none", 2, act(1, 1)),
            ("bf16, model offload", "model", 2, act(2, 2)),
            ("bf16, model offload, cfg sequential", "model", 2, act(1, 2)),
            ("bf16, group offload", "group", 2, act(2, 2)),
            ("bf16, group offload, cfg sequential", "group", 2, act(1, 2)),
            ("fp8, all on GPU", "none", 1, act(2, 2)),
            ("fp8, cfg sequential", "none", 1, act(1, 2)),
            ("fp8, model offload", "model", 1, act(2, 2)),
            ("fp8, model offload, cfg sequential", "model", 1, act(1, 2)),
            ("bf16, sequential offload", "sequential", 2, act(2, 2))]
    lines = [f"CogVideoX-5B-I2V + ControlNet ({k} of {layers} blocks), {frames} x {size[1]} x {size[0]}, CFG: "
             f"expected GPU peak (estimates; formulas in benchmarks/pipeline.py plan_options)",
             f"{'option':<44} {'GiB':>6}  {'24 GB GPU':>9}"]
    for label, offload, wbytes, a in rows:
        gib = peak(offload, wbytes, a) / GIB
        lines.append(f"{label:<44} {gib:>6.1f}  {'fits' if gib <= 0.92 * 24 else 'no':>9}")  # as plan's GPU fit
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=["wan", "cogvideox"], choices=["wan", "cogvideox"])
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=64, help="width = height (multiple of 16)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--real", nargs="+", choices=["wan-1.3b", "cogvideox-5b", "wan-small", "cogvideox-small"])
    parser.add_argument("--offload", nargs="+", default=["none", "model", "model+tiling"],
                        choices=["none", "model", "model+tiling"])
    parser.add_argument("--control-layers", type=int, default=None)
    parser.add_argument("--meta", action="store_true", help="with --real: build on the meta device, print sizes")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--options", action="store_true", help="each speed / memory option against the plain run")
    parser.add_argument("--plan", action="store_true", help="expected GPU peak per option, CogVideoX-5B at 49x480x720")
    args = parser.parse_args(argv)

    import torch
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    results = []
    if args.plan:
        print(plan_options(), flush=True)
    if args.options:
        for model in args.model:
            r = bench_options(model, args)
            results.append(r)
            print(report_options(r), flush=True)
    elif args.plan:
        pass
    elif args.real:
        for preset in args.real:
            if args.meta:
                models, cfg = build_real(preset, "meta", None, args.control_layers, meta=True)
                print(report_meta(preset, models, cfg), flush=True)
                continue
            if not preset.endswith("small") and not torch.cuda.is_available():
                print(f"{preset}: needs a CUDA GPU (use --meta to check the configs)", file=sys.stderr)
                return 2
            for mode in args.offload:
                r = run_real(preset, "model" if mode.startswith("model") else "none", mode.endswith("tiling"), args)
                results.append(r)
                print(report_real(r), flush=True)
    else:
        for model in args.model:
            r = bench_tiny(model, args)
            results.append(r)
            print(report_tiny(r), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
