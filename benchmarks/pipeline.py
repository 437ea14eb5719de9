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
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


# ---------------------------------------------------------------------------------------- helpers


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb(fn) -> tuple[float | None, float | None]:
    """(growth of the resident set while fn() runs, peak resident set), MiB; None without /proc."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None, None
    before = _status_kb("VmRSS")
    fn()
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return None, None
    return (peak - before) / 1024, peak / 1024


def moving_square(size: tuple[int, int], frames: int):
    from magicmotion.trajectory import ObjectTrack, Trajectory

    w, h = size
    box0 = np.array([0.1 * w, 0.3 * h, 0.35 * w, 0.7 * h])
    shift = np.array([0.5 * w, 0, 0.5 * w, 0])
    return Trajectory(w, h, frames, [ObjectTrack(1, "square", boxes={0: box0, frames - 1: box0 + shift})])


def trained_like(controlnet, std: float = 0.02):
    import torch

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for proj in controlnet.out_projectors:
            proj.weight.copy_(torch.randn(proj.weight.shape, generator=g).to(proj.weight) * std)
    return controlnet


# ---------------------------------------------------------------------------------------- tiny CPU


def build_tiny(model: str):
    from magicmotion.models import CogVideoXTrajectoryControlNet, WanTrajectoryControlNet
    from magicmotion.pipelines import MagicMotionCogVideoXPipeline, MagicMotionWanPipeline
    from magicmotion.pipelines.tiny import tiny_cogvideox_components, tiny_wan_components

    if model == "wan":
        c = tiny_wan_components()
        pipe = MagicMotionWanPipeline(controlnet=trained_like(WanTrajectoryControlNet.from_transformer(c["transformer"])), **c)
    else:
        c = tiny_cogvideox_components()
        pipe = MagicMotionCogVideoXPipeline(
            controlnet=trained_like(CogVideoXTrajectoryControlNet.from_transformer(c["transformer"])), **c)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parts_wan(pipe, image, traj, prompt, negative, frames, size, steps, guidance):
    """name -> fn for each part of a Wan call, on the inputs the pipeline builds."""
    import torch
    from PIL import Image

    w, h = size
    device = pipe._execution_device
    cond, *_ = pipe.prepare_trajectory(image, traj, "box", frames, h, w)
    first = Image.fromarray(cond.image)
    image_tensor = pipe.video_processor.preprocess(first, height=h, width=w).to(device, dtype=torch.float32)
    pos, neg = pipe.encode_prompt(prompt=prompt, negative_prompt=negative, do_classifier_free_guidance=True,
                                  max_sequence_length=512, device=device)
    latents, condition = pipe.prepare_latents(image_tensor, 1, 16, h, w, frames, torch.float32, device,
                                              torch.Generator().manual_seed(0))
    traj_latents = pipe.encode_trajectory(cond.maps, device)
    model = pipe.joint_transformer()
    pipe.scheduler.set_timesteps(steps, device=device)
    t0 = pipe.scheduler.timesteps[0]
    dtype = pipe.transformer.dtype
    batch = dict(hidden_states=torch.cat([torch.cat([latents, condition], 1)] * 2).to(dtype),
                 timestep=t0.expand(2), encoder_hidden_states=torch.cat([neg, pos]).to(dtype),
                 trajectory_latents=torch.cat([traj_latents] * 2).to(dtype))
    noise = torch.randn_like(latents)

    def scheduler():
        pipe.scheduler.set_timesteps(steps, device=device)
        x = latents
        for t in pipe.scheduler.timesteps:
            x = pipe.scheduler.step(noise, t, x, return_dict=False)[0]

    return {
        "conditions": lambda: pipe.prepare_trajectory(image, traj, "box", frames, h, w),
        "text": lambda: pipe.encode_prompt(prompt=prompt, negative_prompt=negative, do_classifier_free_guidance=True,
                                           max_sequence_length=512, device=device),
        "vae_encode": lambda: (pipe.prepare_latents(image_tensor, 1, 16, h, w, frames, torch.float32, device,
                                                    torch.Generator().manual_seed(0)),
                               pipe.encode_trajectory(cond.maps, device)),
        "denoiser_step": lambda: model(return_dict=False, **batch)[0],
        "scheduler_all_steps": scheduler,
        "decode": lambda: pipe.decode_latents(latents),
    }


def parts_cogvideox(pipe, image, traj, prompt, negative, frames, size, steps, guidance):
    import torch
    from PIL import Image

    w, h = size
    device = pipe._execution_device
    cond, *_ = pipe.prepare_trajectory(image, traj, "box", frames, h, w)
    first = Image.fromarray(cond.image)
    image_tensor = pipe.video_processor.preprocess(first, height=h, width=w).to(device, dtype=torch.float32)
    seq = pipe.transformer.config.max_text_seq_length
    pos, neg = pipe.encode_prompt(prompt=prompt, negative_prompt=negative, do_classifier_free_guidance=True,
                                  max_sequence_length=seq, device=device)
    latents, image_latents = pipe.prepare_latents(image_tensor, 1, 16, frames, h, w, torch.float32, device,
                                                  torch.Generator().manual_seed(0))
    traj_latents = pipe.encode_trajectory(cond.maps, device, torch.float32)
    model = pipe.joint_transformer()
    pipe.scheduler.set_timesteps(steps, device=device)
    timesteps = pipe.scheduler.timesteps
    rotary = pipe._prepare_rotary_positional_embeddings(h, w, latents.size(1), device)
    batch = dict(hidden_states=torch.cat([torch.cat([latents, image_latents], 2)] * 2),
                 timestep=timesteps[0].expand(2), encoder_hidden_states=torch.cat([neg, pos]),
                 trajectory_latents=torch.cat([traj_latents] * 2), image_rotary_emb=rotary)
    noise = torch.randn_like(latents)
    extra = pipe.prepare_extra_step_kwargs(torch.Generator().manual_seed(0), 0.0)

    def scheduler():
        pipe.scheduler.set_timesteps(steps, device=device)
        x, old = latents, None
        ts = pipe.scheduler.timesteps
        for i, t in enumerate(ts):
            x, old = pipe.scheduler.step(noise, old, t, ts[i - 1] if i > 0 else None, x, **extra, return_dict=False)

    return {
        "conditions": lambda: pipe.prepare_trajectory(image, traj, "box", frames, h, w),
        "text": lambda: pipe.encode_prompt(prompt=prompt, negative_prompt=negative, do_classifier_free_guidance=True,
                                           max_sequence_length=seq, device=device),
        "vae_encode": lambda: (pipe.prepare_latents(image_tensor, 1, 16, frames, h, w, torch.float32, device,
                                                    torch.Generator().manual_seed(0)),
                               pipe.encode_trajectory(cond.maps, device, torch.float32)),
        "denoiser_step": lambda: model(return_dict=False, **batch)[0],
        "scheduler_all_steps": scheduler,
        "decode": lambda: pipe.video_processor.postprocess_video(pipe.decode_latents(latents), output_type="np"),
    }


def stub_models(pipe) -> None:
    """Make every model call of `pipe` return its first result again (same tensors, no compute): a
    pipeline call then costs only its own work, the conditions and the scheduler."""

    def cached(obj, name):
        real, box = getattr(obj, name), {}

        def fake(*a, **k):
            if "out" not in box:
                box["out"] = real(*a, **k)
            return box["out"]

        setattr(obj, name, fake)

    for name in ("encode_prompt", "prepare_latents", "encode_trajectory", "decode_latents"):
        cached(pipe, name)
    cached(pipe.video_processor, "postprocess_video")
    real_joint, box = pipe.joint_transformer, {}

    def joint():
        model = real_joint()

        def call(**k):
            if "out" not in box:
                box["out"] = model(**k)
            return box["out"]

        return call

    pipe.joint_transformer = joint


def bench_tiny(model: str, args) -> dict:
    import torch

    pipe = build_tiny(model)
    size, frames, steps = (args.size, args.size), args.frames, args.steps
    rng = np.random.RandomState(0)
    image = (rng.rand(size[1], size[0], 3) * 255).astype(np.uint8)
    traj = moving_square(size, frames)
    prompt, negative = "a red square moves right", "blurry"
    build_parts = parts_wan if model == "wan" else parts_cogvideox

    def pipeline(n):
        return lambda: pipe(image=image, prompt=prompt, negative_prompt=negative, trajectory=traj, kind="box",
                            num_frames=frames, height=size[1], width=size[0], num_inference_steps=n,
                            guidance_scale=6.0, generator=torch.Generator().manual_seed(0)).frames

    stubbed = build_tiny(model)
    stub_models(stubbed)

    with torch.inference_mode():
        parts = build_parts(pipe, image, traj, prompt, negative, frames, size, steps, 6.0)
        # the pipeline at N and 2N steps: the difference is the pipeline's own cost per step
        runs = {"pipeline": pipeline(steps), "pipeline_2x_steps": pipeline(2 * steps), **parts,
                "pipeline_models_stubbed": lambda: stubbed(
                    image=image, prompt=prompt, negative_prompt=negative, trajectory=traj, kind="box",
                    num_frames=frames, height=size[1], width=size[0], num_inference_steps=steps, guidance_scale=6.0,
                    generator=torch.Generator().manual_seed(0))}
        for fn in runs.values():  # warm-up
            fn()
        cpu = {name: [] for name in runs}
        wall = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, fn in runs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                cpu[name].append(time.process_time() - c0)
                wall[name].append(time.perf_counter() - t0)
        growth, peak = peak_rss_mb(runs["pipeline"])

    best = {name: min(v) for name, v in cpu.items()}
    fixed_parts = best["conditions"] + best["text"] + best["vae_encode"] + best["decode"]
    step_parts = best["denoiser_step"] + best["scheduler_all_steps"] / steps
    part_sum = fixed_parts + steps * step_parts
    step_pipeline = (best["pipeline_2x_steps"] - best["pipeline"]) / steps
    fixed_pipeline = best["pipeline"] - steps * step_pipeline
    overhead = best["pipeline"] / part_sum - 1
    # the pipeline's own work, timed directly: the call with every model stubbed, less the parts left in it
    glue = best["pipeline_models_stubbed"] - best["conditions"] - best["scheduler_all_steps"]
    return dict(
        model=model, mode="tiny-cpu",
        config=dict(frames=frames, width=size[0], height=size[1], steps=steps, guidance=6.0,
                    threads=torch.get_num_threads(), rounds=args.rounds,
                    params={k: sum(p.numel() for p in getattr(pipe, k).parameters())
                            for k in ("text_encoder", "vae", "transformer", "controlnet")}),
        ms={name: 1000 * v for name, v in best.items()},
        median_ms={name: 1000 * statistics.median(v) for name, v in cpu.items()},
        wall_ms_min={name: 1000 * min(v) for name, v in wall.items()},
        parts_sum_ms=1000 * part_sum,
        overhead_pct=100 * overhead,
        step_ms_pipeline=1000 * step_pipeline,
        step_ms_parts=1000 * step_parts,
        step_overhead_pct=100 * (step_pipeline / step_parts - 1),
        fixed_ms_pipeline=1000 * fixed_pipeline,
        fixed_ms_parts=1000 * fixed_parts,
        glue_ms=1000 * glue,
        glue_pct=100 * glue / part_sum,
        peak_rss_growth_mb=growth, peak_rss_mb=peak,
        ok=glue / part_sum <= 0.03,
    )


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


# ---------------------------------------------------------------------------------------- real size


def real_configs(preset: str, control_layers: int | None = None) -> dict:
    """Configs of the components at real (or toy, for *-small) size: transformer, text encoder, VAE,
    ControlNet layers, run size."""
    from magicmotion.models import COGVIDEOX_5B_I2V_CONFIG

    if preset.startswith("wan"):
        transformer = dict(  # Wan2.1 1.3B, image-to-video layout (noise 16 + mask 4 + image latents 16)
            patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=36, out_channels=16,
            text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024)
        text = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128,
                    feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True)  # UMT5-XXL
        vae = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True])
        run = dict(frames=81, width=832, height=480)
        if preset == "wan-small":
            transformer.update(num_attention_heads=2, attention_head_dim=32, text_dim=64, ffn_dim=128, num_layers=2)
            text.update(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=1, num_heads=4)
            vae.update(base_dim=8, dim_mult=[1, 1, 2, 2], num_res_blocks=1)
            run = dict(frames=9, width=64, height=48)
        layers = control_layers or transformer["num_layers"]
    else:
        transformer = dict(COGVIDEOX_5B_I2V_CONFIG)
        text = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128,
                    feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True)  # T5 v1.1 XXL
        vae = dict(block_out_channels=(128, 256, 256, 512), latent_channels=16, layers_per_block=3,
                   temporal_compression_ratio=4, sample_height=480, sample_width=720, scaling_factor=0.7,
                   invert_scale_latents=False)
        run = dict(frames=49, width=720, height=480)
        if preset == "cogvideox-small":
            transformer.update(num_attention_heads=2, attention_head_dim=32, text_embed_dim=64, time_embed_dim=64,
                               num_layers=4, sample_height=6, sample_width=8, sample_frames=9, max_text_seq_length=16)
            text.update(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=1, num_heads=4)
            vae.update(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
                       sample_height=96, sample_width=128)  # tiles (half the sample size) cover the video
            run = dict(frames=9, width=64, height=48)
        layers = control_layers or transformer["num_layers"] // 2  # the release trains about half the blocks
    return dict(transformer=transformer, text=text, vae=vae, run=run, control_layers=layers)


def build_real(preset: str, device: str, dtype, control_layers: int | None = None, meta: bool = False):
    """A MagicMotion pipeline with random weights at the preset's size, or (meta=True) its models on the
    meta device: {name: model} for counting parameters."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import (AutoencoderKLCogVideoX, AutoencoderKLWan, CogVideoXDPMScheduler,
                           CogVideoXTransformer3DModel, UniPCMultistepScheduler, WanTransformer3DModel)
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    from magicmotion.models import CogVideoXTrajectoryControlNet, WanTrajectoryControlNet
    from magicmotion.pipelines import MagicMotionCogVideoXPipeline, MagicMotionWanPipeline
    from magicmotion.pipelines.tiny import tiny_tokenizer

    cfg = real_configs(preset, control_layers)
    wan = preset.startswith("wan")
    if wan:
        classes = (WanTransformer3DModel, WanTrajectoryControlNet, AutoencoderKLWan,
                   lambda: UMT5EncoderModel(UMT5Config(**cfg["text"])))
    else:
        classes = (CogVideoXTransformer3DModel, CogVideoXTrajectoryControlNet, AutoencoderKLCogVideoX,
                   lambda: T5EncoderModel(T5Config(**cfg["text"])))
    t_cls, cn_cls, vae_cls, text_fn = classes
    if meta:
        with init_empty_weights():
            base = t_cls(**cfg["transformer"])
            text = text_fn()
            text.encoder.embed_tokens = text.shared  # tied as when built for real (meta leaves two copies)
            models = dict(transformer=base, controlnet=cn_cls.from_transformer(base, num_layers=cfg["control_layers"]),
                          text_encoder=text, vae=vae_cls(**cfg["vae"]))
        return models, cfg

    def make(fn, keep_fp32=False):
        # built on the target device (fast random init), cast, then moved where the run wants it
        with torch.device(device):
            m = fn()
        return m.to(dtype=torch.float32 if keep_fp32 else dtype).eval()

    base = make(lambda: t_cls(**cfg["transformer"]))
    controlnet = trained_like(cn_cls.from_transformer(base, num_layers=cfg["control_layers"]))
    text = make(text_fn)
    vae = make(lambda: vae_cls(**cfg["vae"]), keep_fp32=wan)
    tokenizer = tiny_tokenizer()
    if wan:
        scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
        pipe = MagicMotionWanPipeline(tokenizer=tokenizer, text_encoder=text, vae=vae, scheduler=scheduler,
                                      transformer=base, controlnet=controlnet)
    else:
        scheduler = CogVideoXDPMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
            prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True, snr_shift_scale=1.0,
            steps_offset=0, timestep_spacing="trailing")
        pipe = MagicMotionCogVideoXPipeline(tokenizer=tokenizer, text_encoder=text, vae=vae, transformer=base,
                                            controlnet=controlnet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe, cfg


def run_real(preset: str, offload: str, tiling: bool, args) -> dict:
    import gc

    import torch

    cuda = torch.cuda.is_available() and not preset.endswith("small")
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    pipe, cfg = build_real(preset, device, dtype, args.control_layers)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    if tiling:
        pipe.vae.enable_tiling()
    run = cfg["run"]
    traj = moving_square((run["width"], run["height"]), run["frames"])
    image = (np.random.RandomState(0).rand(run["height"], run["width"], 3) * 255).astype(np.uint8)
    stamps = []

    def callback(p, i, t, tensors):
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return {}

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = pipe(image=image, prompt="a red square moves right", trajectory=traj, kind="box",
               num_frames=run["frames"], height=run["height"], width=run["width"],
               num_inference_steps=args.steps, guidance_scale=6.0, generator=torch.Generator().manual_seed(0),
               callback_on_step_end=callback)
    if cuda:
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    steps = np.diff(stamps)  # step i's time for i >= 1 (the first includes no warm-up boundary)
    result = dict(
        model=preset, mode="real" if cuda else "real-code-on-cpu", offload=offload, vae_tiling=tiling,
        device=torch.cuda.get_device_name() if cuda else "cpu", dtype=str(dtype).replace("torch.", ""),
        frames=run["frames"], width=run["width"], height=run["height"], steps=args.steps,
        control_layers=cfg["control_layers"], base_layers=cfg["transformer"]["num_layers"],
        s_per_step=float(np.median(steps)) if len(steps) else None, total_s=total,
        peak_gpu_gb=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        output_shape=list(np.asarray(out.frames).shape),
    )
    del pipe, out
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


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


# ---------------------------------------------------------------------------------------- main


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
