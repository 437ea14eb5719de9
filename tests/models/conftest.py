"""Fixtures for the model tests. Tiny random bases are built in code (no downloads) by
`magicmotion.models.tiny`, so pipeline and training tests can use the same builders."""

from __future__ import annotations

import pytest
from models_helpers import FAMILIES


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    """Base family: wan (Wan I2V without CLIP, like the 1.3B InP models), wan_clip (like Wan2.1-I2V-14B), cogvideox."""
    return request.param


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from more threads, and on shared cores OpenMP threads waiting on each
    other make small ops many times slower; restored afterwards for other test folders."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
