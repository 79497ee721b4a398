"""`hpcgpu run local --sweep` end to end (docs/sweeps.md): 4 tasks of the slowed demo, 2 at a time;
Ctrl-C mid-sweep stops the running tasks after a checkpoint and starts no more; `--resume SWEEP`
finishes every task with the final loss of a plain run with the same overrides."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.jobs import wait_for_text
from tests.helpers.session_once import session_once
from tests.helpers.sweeps import GRID_ARGS, final_loss, hpcgpu, plain_losses, write_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> list[float]:
    # the same 4 runs as the other sweep module's: trained once per session
    return session_once(tmp_path_factory, "sweep-plain-losses", lambda: plain_losses(tmp_path_factory.mktemp("plain")))


def most_at_once(output: str) -> int:
    """The most tasks running at once, from the runner's started / ended lines (printed in order)."""
    running = most = 0
    for line in output.splitlines():
        if re.match(r"hpcgpu: task \d+ .*started on ", line):
            running += 1
            most = max(most, running)
        elif re.match(r"hpcgpu: task \d+ (done|stopped|ended|was refused)", line):
            running -= 1
    return most


def test_ctrl_c_mid_sweep_then_resume_finishes_every_task_as_its_plain_run(plain, tmp_path):
    spec = write_spec(tmp_path)
    home = tmp_path / "home"
    runner = subprocess.Popen([sys.executable, "-m", "hpcgpu", "run", "local", "-f", str(spec), "--nproc", "1",
                               "--parallel", "2", *GRID_ARGS], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "HPCGPU_HOME": str(home), "OMP_NUM_THREADS": "1"})
    try:
        (sweep_dir,) = _wait_for_sweep_dir(tmp_path / "runs")
        record = json.loads((sweep_dir / "sweep.json").read_text())
        first = Path(record["tasks"][0]["run_dir"])
        wait_for_text(first / "logs" / "rank0.log", r"^step 4/32 ", 120)
        runner.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C reaches the runner alone
        out, _ = runner.communicate(timeout=120)
    finally:
        runner.kill()
    assert runner.returncode == 75, out
    assert "2 queued task(s) will not start" in out
    assert re.search(r"task 0 stopped after a checkpoint", out), out
    assert not (Path(record["tasks"][2]["run_dir"]) / "run.json").exists()  # never started
    assert f"continue with: hpcgpu run local --resume {record['id']}" in out

    resumed = hpcgpu(["run", "local", "--resume", record["id"]], tmp_path, home, timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert most_at_once(out) <= 2 and most_at_once(resumed.stdout) <= 2, out + resumed.stdout
    assert most_at_once(resumed.stdout) == 2  # the slots were used
    log0 = (first / "logs" / "rank0.log").read_text()
    assert re.search(r"^hpcgpu: resuming from \S+t0-lr=0.001,seed=1/checkpoints/step_\d+", log0, re.MULTILINE), log0
    losses = [final_loss(Path(t["run_dir"])) for t in record["tasks"]]
    assert losses == plain  # bit for bit: each task is the plain run with its overrides
    table = resumed.stdout.split("results, best first by final_loss (min):")[1]
    rows = re.findall(r"^\s+(\d) +(\d) +(\S+) +(\S+)", table, re.MULTILINE)
    assert [int(r[1]) for r in rows] == sorted(range(4), key=lambda i: plain[i])  # all 4, best first
    assert {r[2] for r in rows} == {"lr=0.001,seed=1", "lr=0.001,seed=2", "lr=0.0003,seed=1", "lr=0.0003,seed=2"}

    status = hpcgpu(["status", record["id"], "--json"], tmp_path, home)
    tasks = json.loads(status.stdout)["tasks"]
    assert [t["state"] for t in tasks] == ["DONE"] * 4
    assert [t["loss"] for t in tasks] == plain
    assert [t["restarts"] for t in tasks] == [1, 1, 0, 0]  # tasks 0 and 1 were resumed once
    listing = hpcgpu(["status"], tmp_path, home).stdout
    assert re.search(rf"recent sweeps .*\n  {record['id']} +local +4 task\(s\)", listing), listing
    logs = hpcgpu(["logs", record["id"], "--task", "3"], tmp_path, home)
    assert f"final_loss={plain[3]!r}" in logs.stdout


def _wait_for_sweep_dir(runs: Path):
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [p for p in runs.glob("*") if (p / "sweep.json").exists()] if runs.exists() else []
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"no sweep dir appeared under {runs}")


def test_an_invalid_combination_is_refused_before_anything_starts(tmp_path):
    spec = write_spec(tmp_path)
    for args in (["run", "local", "--nproc", "1"], ["submit", "slurm", "--nproc-per-node", "1"]):
        out = hpcgpu([*args, "-f", str(spec), "--sweep", "train.seed=1,2", "--sweep", "train.lr=0.001,-1"],
                     tmp_path, tmp_path / "home")
        assert out.returncode == 2, out.stdout + out.stderr
        assert "error: sweep task 1 (seed=1,lr=-1) is invalid:" in out.stderr, out.stderr
        assert "train.lr: Input should be greater than 0" in out.stderr
        assert not (tmp_path / "runs").exists() and not (tmp_path / "home").exists()
