"""examples/train_script.py with plain `python` (no launcher) trains as one process, as the
`hpcgpu.dist` helpers promise: DDP needs a process group, so init() makes a group of one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID", "SLURM_PROCID")


@pytest.mark.slow
def test_the_example_script_trains_and_resumes_under_plain_python(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and not k.startswith("HPCGPU_")}
    env.update(PYTHONPATH=str(REPO), HPCGPU_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    script = str(REPO / "examples" / "train_script.py")

    def run(steps: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, script, "--steps", str(steps), "--every", "10"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)

    first = run(20)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "done at step 20" in first.stdout
    second = run(30)  # the same directory: continues from its own step-20 checkpoint
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed at step 20" in second.stdout and "done at step 30" in second.stdout
    assert "destroy_process_group" not in first.stderr + second.stderr  # the group of one is torn down
