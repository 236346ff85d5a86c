"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch thread for the test, so tests on two cores never fight over them."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
