"""`hpcgpu train --plan` executes the plan it is given and nothing else: a plan for a GPU this
node does not have stops with the planned device named, never a silent fallback to the CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hpcgpu.host.runs import create_run_dir
from tests.helpers.plans import plan_for

pytestmark = pytest.mark.slow


def test_a_planned_gpu_the_node_lacks_is_an_error_naming_it(tmp_path):
    run_dir = create_run_dir(str(tmp_path / "runs"), "gpu-1")
    plan = plan_for("resources: {gpus_per_node: 1}\ntrain: {max_steps: 2}\n", run_id="gpu-1", run_dir=str(run_dir),
                    visible_gpus=1, python=sys.executable, cwd=str(tmp_path))
    (run_dir / "plan.json").write_text(plan.to_json())
    env = {**os.environ, "HPCGPU_HOME": str(tmp_path / "home"), "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-m", "hpcgpu", "train", "--plan", str(run_dir / "plan.json")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "the plan gives this rank cuda:0, but this node has 0 usable GPU(s) (CUDA_VISIBLE_DEVICES=)" in out.stderr
    assert '"exit_code": 1' in (run_dir / "result.json").read_text()  # node 0 recorded how it ended
