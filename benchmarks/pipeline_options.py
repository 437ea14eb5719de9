"""`benchmarks/pipeline.py --options`: each speed / memory option of the pipelines against the plain
run (tiny components on CPU, one forked process per option)."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline_runs import moving_square, trained_like


# ---------------------------------------------------------------------------------------- options


OPTIONS = {  # name -> (enable_memory_options arguments, pipeline call arguments)
    "plain": ({}, {}),
    "cfg sequential": ({}, {"cfg_mode": "sequential"}),
    "control every 3": ({}, {"control_every": 3}),
    "control cond branch": ({}, {"control_branches": "cond"}),
    "group offload": ({"offload": "group"}, {}),
    "fp8 weights": ({"weights_dtype": "fp8"}, {}),
    "first-block cache": ({"cache": "first-block"}, {}),
    "taylorseer cache": ({"cache": "taylorseer"}, {}),
    "faster cache": ({"cache": "faster"}, {}),
}


def build_options_pipe(model: str):
    """Tiny VAE and text encoder, a transformer of 8 blocks at width 256 and a ControlNet of 4 (the
    release's half): large enough for the transformer to dominate a step."""
    from magicmotion.models import CogVideoXTrajectoryControlNet, WanTrajectoryControlNet
    from magicmotion.pipelines import MagicMotionCogVideoXPipeline, MagicMotionWanPipeline
    from magicmotion.pipelines.tiny import tiny_cogvideox_components, tiny_wan_components

    wide = dict(num_attention_heads=4, attention_head_dim=64, num_layers=8)
    if model == "wan":
        c = tiny_wan_components(transformer=dict(wide, ffn_dim=1024))
        cn = WanTrajectoryControlNet.from_transformer(c["transformer"], num_layers=4)
        pipe = MagicMotionWanPipeline(controlnet=trained_like(cn), **c)
    else:
        c = tiny_cogvideox_components(transformer=wide)
        cn = CogVideoXTrajectoryControlNet.from_transformer(c["transformer"], num_layers=4)
        pipe = MagicMotionCogVideoXPipeline(controlnet=trained_like(cn), **c)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def denoising_peak_mb(run) -> float:
    """Peak of the tensor memory allocated during `run()` (torch's profiler, CPU allocations), taken over
    the denoising steps only (each `GuidedPrediction` call): activations and the step's live tensors,
    not the weights (allocated before) nor the VAE encoding before the loop."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from magicmotion.pipelines import guidance

    step = guidance.GuidedPrediction.__call__

    def marked(self, *a, **k):
        with record_function("magicmotion_denoising_step"):
            return step(self, *a, **k)

    guidance.GuidedPrediction.__call__ = marked
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run()
    finally:
        guidance.GuidedPrediction.__call__ = step
    events = list(prof.profiler.kineto_results.events())
    windows = [(e.start_ns(), e.end_ns()) for e in events if e.name() == "magicmotion_denoising_step"]
    allocs = sorted((e.start_ns(), e.nbytes()) for e in events
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for t, nbytes in allocs:
        live += nbytes
        if any(a <= t <= b for a, b in windows):
            peak = max(peak, live)
    return peak / 2**20


def _option_row(model: str, memory: dict, call: dict, args) -> dict:
    """One option in this (fresh, forked) process: the peak tensor memory of the denoising steps
    (`denoising_peak_mb`), the median step time (process CPU time) of the best of the rounds, and the
    latents."""
    import torch

    from magicmotion.pipelines.loading import enable_memory_options

    torch.set_num_threads(args.threads)
    size, frames = (args.size, args.size), args.frames
    rng = np.random.RandomState(0)
    image = (rng.rand(size[1], size[0], 3) * 255).astype(np.uint8)
    traj = moving_square(size, frames)
    pipe = enable_memory_options(build_options_pipe(model), "cpu", **memory)
    weights = sum(p.numel() * p.element_size() for m in (pipe.transformer, pipe.controlnet) for p in m.parameters())
    times, out = [], {}

    def step_end(p, i, t, tensors):
        times.append(time.process_time())
        return {}

    def run():
        times.append(time.process_time())
        out["latents"] = pipe(image=image, prompt="a red square moves right", negative_prompt="blurry",
                              trajectory=traj, kind="box", num_frames=frames, height=size[1], width=size[0],
                              num_inference_steps=args.steps, guidance_scale=6.0, output_type="latent",
                              generator=torch.Generator().manual_seed(0), callback_on_step_end=step_end,
                              **call).frames

    with torch.inference_mode():
        growth = denoising_peak_mb(run)
        best = None
        for _ in range(max(1, args.rounds // 3)):
            times.clear()
            run()
            step = statistics.median(np.diff(times[1:]))  # the steps after the first
            best = step if best is None else min(best, step)
    return {"step_s": best, "peak_growth_mb": growth, "weights_mb": weights / 2**20,
            "latents": out["latents"].float().numpy()}


def bench_options(model: str, args) -> dict:
    """Step time, peak resident growth, weight bytes and latent drift of each OPTIONS entry (CPU), each
    option in a process of its own (forked), so that one's allocations do not hide the next one's peak."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    rows, plain = {}, None
    for name, (memory, call) in OPTIONS.items():
        with ctx.Pool(1) as pool:
            row = pool.apply(_option_row, (model, memory, call, args))
        latents = row.pop("latents")
        plain = latents if plain is None else plain
        row["drift"] = float(np.linalg.norm(latents - plain) / np.linalg.norm(plain))
        rows[name] = row
    return {"model": model, "frames": args.frames, "size": args.size, "steps": args.steps, "options": rows}
