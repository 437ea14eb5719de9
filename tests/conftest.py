"""The test suite's root: pytest puts this folder on sys.path, so every test may import `shared_helpers`."""

import pytest


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one intra-op thread: two threads spin against each other on a busy
    2-core machine (10-20x slower here). Restored after the test. Use it with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
