"""Phase `bench`: MagicBench-style evaluation of the tiny model on the held-out clips, with the VAE's
round trip as the ceiling and no control as the floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .common import FRAMES, log, round_trip, to_tensor


def vae_round_trip(vae_dir: Path, device: torch.device | str = "cpu"):
    """A bench generator (`run_bench(generate_fn=...)`) that returns each clip's own frames after a
    round trip through the VAE at `vae_dir` (run on `device`): the best any model on that VAE can
    score."""
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(vae_dir).eval().to(device)

    def generate(clip, trajectory) -> np.ndarray:
        x = to_tensor(np.asarray(clip.frames)[None]).to(device)
        with torch.no_grad():
            y = round_trip(vae, x).clamp(-1, 1)
        return ((y[0].permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()

    return generate


# The bench phase also scores every model with trajectory guidance (the pipelines'
# `trajectory_guidance_scale`; not in the paper, off by default), at this scale.
BENCH_TRAJECTORY_GUIDANCE = 2.0


def phase_bench(work: Path, model_dir: Path, docs: Path, steps: int = 20, per_bucket: int = 25,
                device: torch.device | str = "cpu") -> dict:
    """Held-out MagicBench-style evaluation of the shipped model, the ablations, the floor (control
    scale 0), the ceiling (ground-truth videos) and the VAE's ceiling (those videos through the VAE),
    written to work/bench-report (copied into docs/tiny-model/ by hand). Generates on `device`, in
    float32 on every device (so the figures compare), and scores on the CPU."""
    from ...bench.report import report
    from ...bench.runner import run_bench
    from ...bench.score import score_run
    from ...bench.sets import build_bench
    from ...pipelines.loading import TINY_GUIDANCE

    bench = work / "bench"
    build_bench(work / "data" / "heldout", bench, per_bucket=per_bucket, num_frames=FRAMES,
                buckets=("1", "2", "3", "4", "5"))
    runs = work / "bench-runs"
    runs.mkdir(exist_ok=True)
    base = model_dir / "base"
    plan = [
        ("ground truth (ceiling)", "gt", dict(ground_truth=True, kind="box")),
        ("ground truth through the VAE", "vae", dict(generate_fn=vae_round_trip(base / "vae", device), kind="box")),
        ("control scale 0 (floor)", "scale0", dict(controlnet=model_dir / "stage2" / "controlnet",
                                                   kind="box", control_scale=0.0)),
    ]
    models = [
        ("stage 1, mask", "stage1-mask", dict(controlnet=model_dir / "stage1" / "controlnet", kind="mask")),
        ("stage 2, box", "stage2-box", dict(controlnet=model_dir / "stage2" / "controlnet", kind="box")),
        ("stage 3, sparse box", "stage3-sparse", dict(controlnet=model_dir / "stage3" / "controlnet",
                                                      kind="sparse_box")),
        ("stage 2 w/o progressive training", "ablation-scratch",
         dict(controlnet=work / "stage2-from-scratch" / "final" / "controlnet", kind="box")),
        ("stage 2 w/o latent seg. loss", "ablation-noseg",
         dict(controlnet=work / "stage2-no-seg" / "final" / "controlnet", kind="box")),
    ]
    # each model as the paper samples it, then with trajectory guidance
    w = BENCH_TRAJECTORY_GUIDANCE
    plan += models
    plan += [(f"{label}, trajectory guidance {w:g}", f"{name}-tg", dict(kw, trajectory_guidance=w))
             for label, name, kw in models]
    done = []
    for label, name, kw in plan:
        if "controlnet" in kw and not Path(kw["controlnet"]).exists():
            log(f"bench: skipping {label} ({kw['controlnet']} missing)")
            continue
        run_bench(bench, runs / name, base=base, num_inference_steps=steps, guidance_scale=TINY_GUIDANCE,
                  seed=0, label=label, device=str(device), dtype=torch.float32, **kw)
        score_run(runs / name, segmenter="classic")
        done.append((label, runs / name))
        log(f"bench: {label} scored")
    return report([d for _, d in done], work / "bench-report", labels=[l for l, _ in done])
