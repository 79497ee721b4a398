"""The GPU tests (`pytest.mark.gpu`) run only where torch sees a CUDA device (never in CI); `make test-gpu`
runs them. A pytest plugin, registered for the whole tree by tests/conftest.py."""

import pytest


@pytest.hookimpl(trylast=True)  # after -m has deselected: no torch import when no GPU test is left
def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device here: the GPU tier runs on a machine with an NVIDIA GPU")
    for item in gpu_items:
        item.add_marker(skip)
