"""The sweep flags' refusals and `cancel SWEEP` locally (hpcgpu/cli/sweep_cmd.py, sweep_view.py):
each wrong combination names the flag and the fix and starts nothing; a local sweep's cancel
reaches its runner as SIGTERM, a sweep that is not running is refused with how to continue it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hpcgpu.cli.sweep_view import cancel_sweep
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.procs import start_time
from hpcgpu.host.sweep_record import SweepRecord, register_sweep
from tests.helpers.sweeps import hpcgpu


@pytest.mark.parametrize("args, words", [
    (["run", "local", "--nproc", "1", "--no-sweep", "--sweep", "train.seed=1,2"],
     "error: --no-sweep and --sweep contradict each other\n  hint: give one of them"),
    (["run", "local", "--nproc", "1", "--parallel", "2"],
     "error: --parallel applies to a sweep, and there is none\n  hint: add --sweep KEY=V1,V2"),
    (["run", "local", "--gpus-per-task", "1"],
     "error: --gpus-per-task applies to a sweep, and there is none\n  hint: for one run: --gpus N"),
    (["run", "local", "--nproc", "1", "--gpus-per-task", "1", "--sweep", "train.seed=1,2"],
     "error: --gpus-per-task sizes each task of a sweep; it replaces --gpus/--nproc"),
    (["run", "local", "--nproc", "1", "--dry-run", "--json", "--sweep", "train.seed=1,2"],
     "error: --json applies to one run; a sweep has many"),
    (["submit", "slurm", "--nproc-per-node", "1", "--wait", "--sweep", "train.seed=1,2"],
     "error: --wait applies to one run; a sweep has many"),
])
def test_flags_that_cannot_go_with_a_sweep_are_named(tmp_path, args, words):
    out = hpcgpu(args, tmp_path, tmp_path / "home")
    assert out.returncode == 2, out.stdout + out.stderr
    assert words in out.stderr, out.stderr
    assert not (tmp_path / "runs").exists()


def test_no_sweep_runs_the_spec_once_with_its_base_values(tmp_path):
    (tmp_path / "s.yaml").write_text("train: {lr: 0.002}\nsweep:\n  grid: {train.lr: [0.1, 0.2]}\n")
    swept = hpcgpu(["run", "local", "-f", "s.yaml", "--nproc", "1", "--dry-run"], tmp_path, tmp_path / "home")
    assert "sweep:    2 task(s)" in swept.stdout, swept.stdout + swept.stderr
    once = hpcgpu(["run", "local", "-f", "s.yaml", "--nproc", "1", "--dry-run", "--no-sweep"], tmp_path, tmp_path / "home")
    assert once.returncode == 0 and "sweep:" not in once.stdout and "world size 1" in once.stdout, once.stdout


def _record(tmp_path, backend="local", **fields) -> SweepRecord:
    sweep_dir = tmp_path / "sw-1"
    sweep_dir.mkdir(exist_ok=True)
    record = SweepRecord(id="sw-1", sweep_dir=str(sweep_dir), backend=backend, created=0.0, tasks=[
        {"index": 0, "overrides": {}, "label": "", "run_id": "sw-1-t0", "run_dir": str(sweep_dir / "t0")}], **fields)
    register_sweep(record, {"HPCGPU_HOME": str(tmp_path / "home")})
    return record


def test_cancel_of_a_local_sweep_sends_its_runner_sigterm(tmp_path):
    runner = subprocess.Popen([sys.executable, "-c",
                               "import signal, sys, time\n"
                               "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
                               "print('ready', flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout.readline() == "ready\n"
        said = cancel_sweep(_record(tmp_path, pid=runner.pid, pid_start=start_time(runner.pid)))
        assert said == "cancel requested for sweep sw-1 (its running tasks checkpoint and stop)"
        assert runner.wait(timeout=30) == 42
    finally:
        runner.kill()


def test_cancel_of_a_local_sweep_that_is_not_running_is_refused_with_how_to_continue(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = _record(tmp_path, pid=int(gone.stdout), pid_start=1)
    with pytest.raises(UserError) as info:
        cancel_sweep(record)
    assert info.value.message == "sweep sw-1 is not running; nothing was signalled"
    assert info.value.hint == "continue it with: hpcgpu run local --resume sw-1"


def test_a_local_sweep_cannot_be_resumed_as_a_slurm_one(tmp_path):
    _record(tmp_path)
    out = hpcgpu(["submit", "slurm", "--resume", "sw-1"], tmp_path, tmp_path / "home")
    assert out.returncode == 2
    assert "error: sweep sw-1 ran on local, not slurm\n  hint: continue it with: hpcgpu run local --resume sw-1" in out.stderr


def test_logs_of_a_sweep_need_a_task_and_a_run_takes_none(tmp_path):
    _record(tmp_path)
    out = hpcgpu(["logs", "sw-1"], tmp_path, tmp_path / "home")
    assert out.returncode == 2 and "error: sw-1 is a sweep of 1 task(s): say which with --task N" in out.stderr
    out = hpcgpu(["logs", "nothing-here", "--task", "0"], tmp_path, tmp_path / "home")
    assert out.returncode == 2 and "--task picks a task of a sweep; 'nothing-here' names a run, not a sweep" in out.stderr
