"""One launcher per local run: `run local --resume RUN` of a run that is still running is refused,
naming the launcher, and the running one is left alone (two launchers in one run dir would train
twice into the same checkpoints and overwrite run.json's pid)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from hpcgpu.backends.local.backend import hold_launch_lock, launch_lock_free
from hpcgpu.contract import exitcodes
from hpcgpu.contract.errors import UserError
from tests.helpers.launch import REPO, demo_spec, logged_step, start, wait_until

PROBE = ("import sys\nfrom hpcgpu.backends.local.backend import launch_lock_free\n"
         "from hpcgpu.contract.errors import UserError\n"
         "try:\n    launch_lock_free(sys.argv[1])\nexcept UserError as e:\n    print(e.message); sys.exit(2)\n")


def test_the_lock_is_held_for_the_life_of_the_process_and_names_its_pid(tmp_path):
    fd = hold_launch_lock(str(tmp_path))
    try:
        out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert out.returncode == 2, out.stdout + out.stderr
        assert f"is still running here (launcher pid {os.getpid()})" in out.stdout
    finally:
        os.close(fd)
    launch_lock_free(str(tmp_path))  # released with its holder: free again
    assert oct(os.stat(tmp_path / ".launch.lock").st_mode & 0o777) == "0o600"


def training_run(tmp_path):
    """A real run slowed to stay busy, once it has trained 2 steps; with the CLI's environment.

    One rank: the lock is the launcher's, whatever the ranks do (a second rank only costs start-up)."""
    slow = {"task": "hpcgpu.examples.mlp:make_task", "task_args": {"n_samples": 1024, "delay_s": 0.03}}
    launch = start(tmp_path, demo_spec(entry=slow), nproc=1)
    run_dir = launch.run_dir()
    wait_until(lambda: logged_step(run_dir) >= 2, 90, "step 2")
    return launch, run_dir, {**os.environ, "HPCGPU_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_resuming_a_running_run_is_refused_and_leaves_it_running(tmp_path):
    launch, run_dir, env = training_run(tmp_path)
    second = subprocess.run([sys.executable, "-m", "hpcgpu", "run", "local", "--resume", str(run_dir)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"still running here (launcher pid {launch.proc.pid})" in second.stderr, second.stderr
    assert launch.proc.poll() is None  # untouched: still training
    with pytest.raises(UserError):
        launch_lock_free(str(run_dir))
    os.kill(launch.proc.pid, signal.SIGTERM)
    assert launch.wait().rc == exitcodes.STOPPED_RESUMABLE
    launch_lock_free(str(run_dir))  # the launcher is gone: a resume may start now


@pytest.mark.slow
def test_a_launcher_killed_with_sigkill_leaves_a_lost_run_that_cancel_leaves_alone(tmp_path):
    launch, run_dir, env = training_run(tmp_path)

    def hpcgpu(*args):
        return subprocess.run([sys.executable, "-m", "hpcgpu", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)

    assert "RUNNING" in hpcgpu("status", str(run_dir)).stdout
    os.kill(launch.proc.pid, signal.SIGKILL)  # no result.json: nobody is left to write it
    launch.proc.wait()
    status = hpcgpu("status", str(run_dir))
    assert re.search(r"^state:\s+LOST$", status.stdout, re.MULTILINE), status.stdout
    assert f"its launcher (pid {launch.proc.pid}) ended without recording how" in status.stdout
    cancel = hpcgpu("cancel", str(run_dir))
    assert cancel.returncode == 2 and "is not running (LOST" in cancel.stderr, cancel.stdout + cancel.stderr
