"""The plan that is printed is the plan that runs: `--dry-run --json` equals the plan.json a real
run writes (apart from run id and time), and the ranks see exactly the planned device, with
neither pydantic nor the host layer loaded."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

SCRIPT = """
import json, os, sys
from hpcgpu import dist
info = dist.init()
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "pydantic" or m.startswith(("hpcgpu.host", "hpcgpu.cli")))
with open(f"rank{info.rank}.json", "w") as f:
    json.dump({"device": os.environ.get("HPCGPU_DEVICE"), "dist_device": str(dist.device()),
               "backend": __import__("torch").distributed.get_backend(), "loaded": loaded}, f)
"""


def hpcgpu(args, cwd, home):
    env = {**os.environ, "HPCGPU_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hpcgpu", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180)


def without_identity(text: str) -> str:
    """plan.json's bytes with its run id and creation time taken out."""
    plan = json.loads(text)
    return re.sub(r'"created": [0-9.e+]+', '"created": 0', text).replace(plan["run_id"], "RUN-ID")


def test_the_dry_run_json_is_the_plan_that_runs_and_ranks_get_their_planned_device(tmp_path):
    (tmp_path / "probe.py").write_text(SCRIPT)
    args = ["run", "local", "--nproc", "2", "--", "probe.py"]
    dry = hpcgpu([*args[:4], "--dry-run", "--json", *args[4:]], tmp_path, tmp_path / "home")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert [(r["device"], r["backend"]) for r in planned["ranks"]] == [("cpu", "gloo"), ("cpu", "gloo")]
    assert not (tmp_path / "runs").exists()  # a dry run creates nothing

    out = hpcgpu(args, tmp_path, tmp_path / "home")
    assert out.returncode == 0, out.stdout + out.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    # the same bytes, apart from the run id and the time
    assert without_identity((run_dir / "plan.json").read_text()) == without_identity(dry.stdout)
    assert oct((run_dir / "plan.json").stat().st_mode & 0o777) == "0o600"
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen == {"device": "cpu", "dist_device": "cpu", "backend": "gloo", "loaded": []}, seen
