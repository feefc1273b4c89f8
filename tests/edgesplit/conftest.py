"""Core-library tests run tiny models: one torch thread each."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a busy machine its spin-waits made
    the split-model tests 10-40x slower (a U-shaped check on a 4-layer model: 14 s against
    0.3 s, load average 12 on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
