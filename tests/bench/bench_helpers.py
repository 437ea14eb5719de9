"""Helpers shared by the benchmark tests (a module of its own: conftest modules are not importable)."""

from __future__ import annotations

import numpy as np


def frozen(clip, trajectory):
    """A fake model that ignores the trajectory: every frame is the first frame."""
    return np.repeat(clip.frames[:1], len(clip.frames), axis=0)


def recording(calls: list, generate=frozen):
    """`generate` that also appends each clip id to `calls`."""

    def run(clip, trajectory):
        calls.append(clip.id)
        return generate(clip, trajectory)

    return run
