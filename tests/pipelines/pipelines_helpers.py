"""Helpers shared by the pipeline tests: tiny trajectories and images, trained-looking ControlNets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from magicmotion.trajectory import ObjectTrack, Trajectory

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real-samples"
RUN = dict(num_frames=9, height=32, width=32, num_inference_steps=2, guidance_scale=6.0)


def randomize_projectors(controlnet, seed: int = 1, std: float = 0.5):
    """Give the zero-initialised output projectors random weights, as if trained."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for proj in controlnet.out_projectors:
            proj.weight.copy_(torch.randn(proj.weight.shape, generator=g) * std)
    return controlnet


def make_trajectory(size: int = 32, frames: int = 9, dx: float = 16.0) -> Trajectory:
    """One square moving right by `dx` pixels (boxes on frames 0 and the last), on a size x size frame."""
    s = size / 32
    return Trajectory(size, size, frames, [
        ObjectTrack(1, "square", boxes={0: np.array([4, 8, 12, 16]) * s,
                                        frames - 1: np.array([4 + dx, 8, 12 + dx, 16]) * s}),
    ])


def make_image(size: int = 32, seed: int = 0) -> np.ndarray:
    return (np.random.RandomState(seed).rand(size, size, 3) * 255).astype(np.uint8)


def make_blob_trajectory(dx: int = 16, size: int = 32, frames: int = 9) -> Trajectory:
    """A large square (3/4 of the height, half the width) moving `dx` pixels over the clip, with masks on
    every frame: a trajectory a random tiny VAE still sees clearly."""
    from magicmotion.trajectory import from_label_masks

    labels = np.zeros((frames, size, size), np.int32)
    half, start = size // 2, (0 if dx >= 0 else size // 2)
    for t in range(frames):
        x = start + int(round(t * dx / (frames - 1)))
        labels[t, size // 8: size - size // 8, max(x, 0): max(x, 0) + half] = 1
    return from_label_masks(labels)


def check_trajectory_guidance(pipe, run) -> None:
    """Trajectory guidance (`run(pipe, **kw)` -> frames): at 0 it gives the base's video; one step's
    latents move linearly with the scale; with text guidance on, the move is the same, so it comes
    from the conditional branch with and without the ControlNet."""
    # float32 through the VAE, frames in [0, 1]: measured 7.8e-7
    np.testing.assert_allclose(run(pipe, guidance_scale=1.0, trajectory_guidance_scale=0.0),
                               run(pipe, guidance_scale=1.0, controlnet_conditioning_scale=0.0), atol=1e-5)
    one = dict(num_inference_steps=1, output_type="latent")
    plain = {w: run(pipe, guidance_scale=1.0, trajectory_guidance_scale=w, **one) for w in (0.0, 1.0, 2.5)}
    assert (plain[1.0] - plain[0.0]).abs().max() > 1e-3  # the ControlNet moves this step (1000x float32 noise)
    # linear in exact arithmetic; float32 rounding measured 4.8e-7 and 1.2e-6 (latents up to ~5)
    torch.testing.assert_close(plain[2.5], plain[0.0] + 2.5 * (plain[1.0] - plain[0.0]), atol=1e-5, rtol=1e-4)
    text = {w: run(pipe, guidance_scale=4.0, trajectory_guidance_scale=w, **one) for w in (1.0, 2.5)}
    torch.testing.assert_close(text[2.5] - text[1.0], plain[2.5] - plain[1.0], atol=1e-5, rtol=1e-4)
    # one extra pass of the joint model per step, none when every control scale is 0
    from magicmotion.models import MagicMotionTransformer

    forward, calls = MagicMotionTransformer.forward, []
    MagicMotionTransformer.forward = lambda self, *a, **k: calls.append(1) or forward(self, *a, **k)
    try:
        for scale in (1.0, 0.0):
            run(pipe, controlnet_conditioning_scale=scale, trajectory_guidance_scale=3.0, num_inference_steps=2)
    finally:
        MagicMotionTransformer.forward = forward
    assert len(calls) == 2 * 2 + 2
