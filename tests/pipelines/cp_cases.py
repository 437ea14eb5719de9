"""The runs of the context-parallel test: each case once whole (in the test's process) and once split
across two processes (tests/pipelines/cp_worker.py). A tiny Wan I2V pipeline built in code (the same
seeded weights in every process) with a ControlNet whose projectors are random, as if trained (its
residuals move the video), 9 frames at 64x32 (3 x 2 x 4 = 24 tokens, 12 per process),
classifier-free guidance on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipelines_helpers import make_image, make_trajectory, randomize_projectors  # noqa: E402

from magicmotion.trajectory import Trajectory  # noqa: E402

WIDTH, HEIGHT, FRAMES = 64, 32, 9
CASES = {
    "ulysses": dict(mode="ulysses"),
    "ring": dict(mode="ring"),
    # the options valid under a split, together: ControlNet reuse, branches one after the other,
    # trajectory guidance; and the two caches that stay valid
    "ulysses_reuse": dict(mode="ulysses", call=dict(control_every=2, control_branches="cond", cfg_mode="sequential",
                                                    trajectory_guidance_scale=2.0)),
    "ulysses_taylorseer": dict(mode="ulysses", cache="taylorseer", steps=7),
    "ring_faster": dict(mode="ring", cache="faster", steps=7),
    # the other Wan families: a CLIP image branch (Wan2.1-I2V-14B, Fun-InP), Wan2.2 TI2V-5B (per-token
    # timesteps, split with the tokens: 3 x 1 x 2 = 6 tokens at 64x32), Wan2.2 A14B (two experts, a
    # ControlNet each: 4 steps, two on each)
    "clip_ulysses": dict(mode="ulysses", family="clip"),
    "ti2v_ring": dict(mode="ring", family="ti2v"),
    "a14b_ulysses": dict(mode="ulysses", family="a14b", steps=4, call=dict(guidance_scale_2=3.0)),
    # the ControlNet left whole: its full-length residuals do not fit the split base (an error) ...
    "whole": dict(mode="ring", controlnet_whole=True, expect_error=True),
    # ... and made to fit by adding their first half on both processes: the wrong video (last: it patches)
    "unsplit": dict(mode="ring", controlnet_whole=True),
}


def load_case(case: dict):
    from magicmotion.models import WanTrajectoryControlNet
    from magicmotion.pipelines import MagicMotionWanPipeline, tiny_wan_components
    from magicmotion.pipelines.loading import enable_memory_options
    from magicmotion.pipelines.tiny import tiny_wan22_components

    family = case.get("family", "wan2.1")
    controlnets = {}
    if family == "clip":
        from test_pipeline_wan_clip import clip_components

        parts = clip_components(seed=0)
    elif family in ("ti2v", "a14b"):
        parts = tiny_wan22_components(family, seed=0)
    else:
        parts = tiny_wan_components(seed=0)
    if family == "a14b":
        for name, part, expert, seed in (("controlnet", "transformer", "high", 1),
                                         ("controlnet_2", "transformer_2", "low", 2)):
            controlnets[name] = randomize_projectors(
                WanTrajectoryControlNet.from_transformer(parts[part], expert=expert), seed=seed)
    else:
        controlnets["controlnet"] = randomize_projectors(
            WanTrajectoryControlNet.from_transformer(parts["transformer"], expand_timesteps=family == "ti2v"))
    pipe = MagicMotionWanPipeline(**parts, **controlnets)
    pipe.set_progress_bar_config(disable=True)
    return enable_memory_options(pipe, "cpu", cache=case.get("cache", "none"))


def run_case(pipe, case: dict) -> np.ndarray:
    """The video as float frames (T, H, W, 3) in [0, 1]."""
    image = np.concatenate([make_image(HEIGHT, seed=0), make_image(HEIGHT, seed=1)], axis=1)
    square = make_trajectory(HEIGHT, FRAMES).objects[0]  # a square moving right by half the height
    trajectory = Trajectory(WIDTH, HEIGHT, FRAMES, [square])
    out = pipe(image=image, prompt="a red square moves right", trajectory=trajectory,
               kind="box", num_frames=FRAMES, height=HEIGHT, width=WIDTH, num_inference_steps=case.get("steps", 3),
               guidance_scale=6.0, generator=torch.Generator().manual_seed(0), output_type="np",
               **case.get("call", {}))
    return np.asarray(out.frames[0], dtype=np.float32)
