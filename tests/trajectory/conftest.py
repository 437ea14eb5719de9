"""Fixtures for the trajectory tests: small specs written to tmp_path, and the real samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real-samples"


def disk(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    """bool (h, w): pixels whose centre is within r of (cx, cy)."""
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2


@pytest.fixture
def write_spec(tmp_path):
    """write_spec(data, name="spec.json") -> path of the JSON written into tmp_path."""

    def write(data, name: str = "spec.json") -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return path

    return write


@pytest.fixture
def basic_spec() -> dict:
    """A valid spec: 40x30, 5 frames, two objects with key boxes (no masks)."""
    return {
        "version": 1, "width": 40, "height": 30, "num_frames": 5,
        "objects": [
            {"id": 1, "label": "dog", "boxes": {"0": [2, 3, 12, 9], "4": [22, 13, 38, 29]}},
            {"id": 3, "boxes": {"0": [20, 2, 30, 10.5]}},
        ],
    }


@pytest.fixture
def real_samples() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"real samples not found at {REAL.resolve()} (a user's clone without shared data)")
    return REAL
