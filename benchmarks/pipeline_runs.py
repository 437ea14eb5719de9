"""The runs of `benchmarks/pipeline.py` (which holds the command line and the reports): the tiny CPU
pipeline against its parts, and the real-size presets on CUDA (or the meta device)."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from train import _status_kb, peak_step_memory_mb  # noqa: E402  benchmarks/train.py, beside this script


# ---------------------------------------------------------------------------------------- helpers


def peak_rss_mb(fn) -> tuple[float | None, float | None]:
    """(growth of the resident set while fn() runs, peak resident set), MiB; None without /proc."""
    growth = peak_step_memory_mb(fn)
    peak = _status_kb("VmHWM")
    return (None, None) if growth is None or peak is None else (growth, peak / 1024)


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

    class Cached:
        """The joint model, its forward answered from the first call's result."""

        def __init__(self, model):
            self.model = model

        def __getattr__(self, name):  # conditioning_scales, config, dtype, ...: the model's own
            return getattr(self.model, name)

        def __call__(self, *a, **k):
            if "out" not in box:
                box["out"] = self.model(*a, **k)
            return box["out"]

        def controlnet_residuals(self, *a, **k):  # the speed options' path computes them apart
            if "residuals" not in box:
                box["residuals"] = self.model.controlnet_residuals(*a, **k)
            return box["residuals"]

    def joint(*expert):  # the pipeline asks per expert (Wan2.2 A14B); one here
        return Cached(real_joint(*expert))

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
