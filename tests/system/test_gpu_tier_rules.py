"""The GPU tier cannot be green without running: where nvidia-smi lists a GPU (a fake one on PATH
here, at the process boundary) and torch cannot use CUDA, every GPU test fails and says why."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers.paths import REPO

GPU_TEST = "import pytest\n\n@pytest.mark.gpu\ndef test_needs_a_gpu():\n    assert True\n"
FAKE_NVIDIA_SMI = "#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-00000000-1111-2222-3333-444444444444)'\n"


def run_tier(tmp_path, path_dirs: list[str], extra_env: dict | None = None) -> subprocess.CompletedProcess:
    (tmp_path / "test_one_gpu_test.py").write_text(GPU_TEST)
    env = {k: v for k, v in os.environ.items() if k != "HPCGPU_REQUIRE_GPU"}
    env.update({"PATH": os.pathsep.join(path_dirs), "PYTHONPATH": str(REPO), **(extra_env or {})})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p",
                           "tests.helpers.gpu_tier", "-m", "gpu", "-o", "markers=gpu", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_without_an_nvidia_gpu_the_tier_skips(tmp_path):
    out = run_tier(tmp_path, [os.path.dirname(sys.executable), "/usr/bin", "/bin"])
    assert out.returncode == 0 and "1 skipped" in out.stdout, out.stdout + out.stderr
    assert "no NVIDIA GPU here" in out.stdout


def test_a_listed_gpu_that_torch_cannot_use_fails_the_tier_with_the_reason(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    out = run_tier(tmp_path, [str(bin_dir), os.path.dirname(sys.executable), "/usr/bin", "/bin"])
    assert out.returncode == 1 and "1 error" in out.stdout, out.stdout + out.stderr  # failed in setup
    assert "nvidia-smi lists 1 GPU(s), but torch" in out.stdout and "cannot use a GPU here" in out.stdout
    assert "docs/install.md" in out.stdout


def test_require_gpu_fails_the_tier_even_without_nvidia_smi(tmp_path):
    out = run_tier(tmp_path, [os.path.dirname(sys.executable), "/usr/bin", "/bin"], {"HPCGPU_REQUIRE_GPU": "1"})
    assert out.returncode == 1 and "HPCGPU_REQUIRE_GPU=1, but torch" in out.stdout, out.stdout + out.stderr
