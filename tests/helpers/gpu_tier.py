"""The GPU tests (`pytest.mark.gpu`) and when they may skip. A pytest plugin, registered for the whole
tree by tests/conftest.py; `make test-gpu` and `make gpu-check` run the tier.

They skip only on a machine without an NVIDIA GPU (CI, laptops). Where `nvidia-smi -L` lists a GPU,
or HPCGPU_REQUIRE_GPU=1, a torch that cannot use CUDA (a +cpu wheel, a CUDA build newer than the
driver) fails every GPU test with the reason: a tier that skips there would be green having run
nothing, as HPCGPU_REQUIRE_SLURM does for the Slurm tier.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

_FAILURE = pytest.StashKey[str]()


def listed_gpus() -> list[str]:
    """The `GPU N: ...` lines of `nvidia-smi -L` ([] without nvidia-smi, or when it fails: no driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in out.stdout.splitlines() if line.startswith("GPU ")] if out.returncode == 0 else []


def why_torch_sees_no_gpu() -> str:
    import torch

    build = f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none: a CPU build'})"
    return (f"{build} cannot use a GPU here. Install a CUDA build of torch that this driver supports "
            "(docs/install.md); `python -c 'import torch; print(torch.cuda.is_available())'` must print True")


@pytest.hookimpl(trylast=True)  # after -m has deselected: no torch import when no GPU test is left
def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    gpus = listed_gpus()
    if gpus or os.environ.get("HPCGPU_REQUIRE_GPU") == "1":
        seen = f"nvidia-smi lists {len(gpus)} GPU(s), but " if gpus else "HPCGPU_REQUIRE_GPU=1, but "
        for item in gpu_items:
            item.stash[_FAILURE] = seen + why_torch_sees_no_gpu()
        return
    skip = pytest.mark.skip(reason="no NVIDIA GPU here (no nvidia-smi lists one): the GPU tier runs on a GPU machine")
    for item in gpu_items:
        item.add_marker(skip)


def pytest_runtest_setup(item):
    failure = item.stash.get(_FAILURE, None)
    if failure:
        pytest.fail(failure, pytrace=False)
