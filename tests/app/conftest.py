"""Fixtures for the app tests: a synthetic first frame with objects on a plain background, and the
real samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real-samples"


def scene(w: int = 160, h: int = 120) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A textured dark background with a red square and a blue disc: (image uint8 (h, w, 3),
    {"square": bool mask, "disc": bool mask})."""
    rng = np.random.default_rng(0)
    image = (30 + rng.integers(0, 20, size=(h, w, 3))).astype(np.uint8)
    square = np.zeros((h, w), dtype=bool)
    square[40:80, 30:70] = True
    yy, xx = np.mgrid[:h, :w]
    disc = (xx - 120.5) ** 2 + (yy - 30.5) ** 2 <= 12 ** 2
    image[square] = (220, 50, 40)
    image[disc] = (40, 80, 230)
    return image, {"square": square, "disc": disc}


@pytest.fixture
def first_frame():
    return scene()


@pytest.fixture
def real_samples() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"real samples not found at {REAL.resolve()} (a user's clone without shared data)")
    return REAL
