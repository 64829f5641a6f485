"""Test-session settings.

One intra-op thread: the tests run tiny models whose ops do not parallelise, and on a 2-core
machine with anything else running, a second torch thread makes them 10x slower (measured).
"""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
