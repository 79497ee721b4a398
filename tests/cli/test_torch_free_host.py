"""The host side is torch-free in practice: with `import torch` made to fail, dry runs still work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# A sitecustomize that makes every import of torch fail, as on a login node without it.
NO_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed here (tests/cli/test_torch_free_host.py)")
        return None

sys.meta_path.insert(0, NoTorch())
"""


def hpcgpu(args, tmp_path):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_TORCH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "HPCGPU_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, "-m", "hpcgpu", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)


def test_the_probe_really_blocks_torch(tmp_path):
    out = hpcgpu(["train", "--plan", str(tmp_path / "missing.json")], tmp_path)
    assert out.returncode == 2 and "cannot read the plan" in out.stderr  # no torch needed to say so
    site = tmp_path / "site"
    blocked = subprocess.run([sys.executable, "-c", "import torch"], env={**os.environ, "PYTHONPATH": str(site)},
                             capture_output=True, text=True, timeout=60)
    assert blocked.returncode != 0 and "torch is not installed here" in blocked.stderr


@pytest.mark.parametrize("args", [
    ["run", "local", "--nproc", "2", "--dry-run"],
    ["submit", "slurm", "--nodes", "2", "--nproc-per-node", "1", "--dry-run"],
])
def test_dry_runs_work_without_torch(tmp_path, args):
    out = hpcgpu(args, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "rank  node  local  device   backend" in out.stdout
    as_json = hpcgpu([*args, "--json"], tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    plan = json.loads(as_json.stdout)
    assert [r["backend"] for r in plan["ranks"]] == ["gloo", "gloo"] and not (tmp_path / "runs").exists()
