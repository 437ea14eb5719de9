"""Fixtures for the benchmark tests: a small synthetic dataset, a benchmark set built from it and its
ground-truth run (made once per session), and the real samples."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real-samples"


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> Path:
    """24 synthetic clips of 9 frames at 48x48 with 1..5 objects, plus 3 clips of 5 frames."""
    from magicmotion.data.synthetic import synthesize

    root = tmp_path_factory.mktemp("synth") / "ds"
    synthesize(root, 24, frames=9, size=(48, 48), seed=3, progress=False)
    synthesize(root, 3, frames=5, size=(48, 48), seed=4, progress=False)  # too short for 9 frames
    return root


@pytest.fixture(scope="session")
def bench_set(synth_dataset, tmp_path_factory) -> Path:
    """A benchmark of at most 2 clips per bucket, 9 frames each (read-only: copy before changing)."""
    from magicmotion.bench.sets import build_bench

    out = tmp_path_factory.mktemp("bench") / "bench"
    build_bench(synth_dataset, out, per_bucket=2, num_frames=9, progress=False)
    return out


@pytest.fixture(scope="session")
def ground_truth_run(bench_set, tmp_path_factory) -> Path:
    from magicmotion.bench.runner import run_bench

    out = tmp_path_factory.mktemp("runs") / "ground-truth"
    run_bench(bench_set, out, ground_truth=True, progress=False)
    return out


@pytest.fixture
def real_samples() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"real samples not found at {REAL.resolve()} (a user's clone without shared data)")
    return REAL
