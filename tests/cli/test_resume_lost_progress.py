"""`hpcgpu run local --resume` of a run whose checkpoints are all broken: refused (exit 2, nothing
launched, nothing changed) unless --allow-restart-from-zero. The real CLI on a run dir made by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hpcgpu.contract import envnames
from hpcgpu.contract.checkpoints import FORMAT, MANIFEST
from hpcgpu.host.runs import RunRecord, create_run_dir, register
from hpcgpu.host.spec import dump_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]


def stopped_run(tmp_path: Path) -> Path:
    """A local run that stopped, with two checkpoints whose state.pt were cut short afterwards."""
    run_dir = create_run_dir(str(tmp_path / "runs"), "lost-run")
    (run_dir / "spec.yaml").write_text(dump_spec(parse_spec("name: lost\nresources: {gpus_per_node: 0, procs_per_node: 1}\n")))
    register(RunRecord(id="lost-run", run_dir=str(run_dir), backend="local", created=time.time(), pid=None),
             environ={envnames.HOME: str(tmp_path / "home")})
    for step in (10, 20):
        path = run_dir / "checkpoints" / f"step_{step:08d}"
        path.mkdir()
        (path / MANIFEST).write_text(json.dumps({"format": FORMAT, "step": step,
                                                 "files": {"state.pt": {"bytes": 1000, "sha256": "0" * 64}}}))
        (path / "state.pt").write_bytes(b"x" * 10)
    return run_dir


def hpcgpu(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, envnames.HOME: str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "hpcgpu", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


def test_resume_of_a_run_whose_checkpoints_are_all_broken_is_refused(tmp_path):
    run_dir = stopped_run(tmp_path)
    run_json = (run_dir / "run.json").read_text()
    out = hpcgpu(tmp_path, "run", "local", "--resume", "lost-run")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "every checkpoint of run lost-run is corrupt or incomplete: resuming would start from step 0" in out.stderr
    assert "hpcgpu run local --resume lost-run --allow-restart-from-zero" in out.stderr
    assert (run_dir / "run.json").read_text() == run_json  # nothing launched, nothing changed
    assert not (run_dir / "plan.json").exists() and list((run_dir / "logs").iterdir()) == []
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_00000010", "step_00000020"]


def test_the_flag_lets_the_resume_go_past_the_check(tmp_path):
    run_dir = stopped_run(tmp_path)
    out = hpcgpu(tmp_path, "run", "local", "--resume", "lost-run", "--allow-restart-from-zero", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["run_id"] == "lost-run"  # stdout holds only the plan
    assert "starting it over from step 0 (--allow-restart-from-zero)" in out.stderr
    assert not (run_dir / "plan.json").exists()


def test_the_flag_without_resume_is_bad_input(tmp_path):
    out = hpcgpu(tmp_path, "run", "local", "--allow-restart-from-zero", "--dry-run")
    assert out.returncode == 2 and "--allow-restart-from-zero goes with --resume RUN" in out.stderr
    assert "--allow-restart-from-zero" in hpcgpu(tmp_path, "run", "local", "--help").stdout
    assert "--allow-restart-from-zero" in hpcgpu(tmp_path, "submit", "slurm", "--help").stdout
