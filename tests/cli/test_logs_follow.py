"""`hpcgpu logs RUN -f` ends when the run ends: the real CLI on run directories written by hand."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcgpu.contract import envnames
from hpcgpu.contract.procs import start_time
from hpcgpu.contract.runfiles import write_result
from hpcgpu.host.runs import RunRecord, create_run_dir, register

REPO = Path(__file__).resolve().parents[2]
#: generous, for a loaded machine; nothing here asserts speed (these pass in about a second)
TIMEOUT_S = 60


def make_run(tmp_path: Path, run_id: str, pid=None) -> Path:
    """A local run in an index under tmp_path (HPCGPU_HOME); its launcher is `pid` when given."""
    run_dir = create_run_dir(str(tmp_path / "runs"), run_id)
    register(RunRecord(id=run_id, run_dir=str(run_dir), backend="local", created=time.time(),
                       pid=pid, pid_start=start_time(pid) if pid else None),
             environ={envnames.HOME: str(tmp_path / "home")})
    return run_dir


def hpcgpu(tmp_path: Path, *args: str) -> subprocess.Popen:
    """The real CLI; unbuffered pipes, so readline() never reads ahead of what communicate() gets."""
    env = {**os.environ, envnames.HOME: str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "hpcgpu", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path, bufsize=0)


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    """stdout and stderr once proc exits; a proc still following after TIMEOUT_S fails the test."""
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"`hpcgpu logs -f` still following after {TIMEOUT_S}s; it printed:\n{out.decode()}\n{err.decode()}")
    return out.decode(), err.decode()


@pytest.fixture
def launcher():
    """A live process standing in for a running run's launcher."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def test_follow_of_a_finished_run_prints_the_log_and_exits(tmp_path):
    run_dir = make_run(tmp_path, "done-run")
    (run_dir / "logs" / "rank0.log").write_text("step 1\nstep 2\ndone\n")
    write_result(run_dir, 0)
    out, err = finish(hpcgpu(tmp_path, "logs", "done-run", "-f"))
    assert out == "step 1\nstep 2\ndone\n"
    assert "hpcgpu: run done-run ended: DONE" in err


def test_follow_of_a_running_run_goes_on_until_it_ends(tmp_path, launcher):
    run_dir = make_run(tmp_path, "live-run", pid=launcher.pid)
    log = run_dir / "logs" / "rank0.log"
    log.write_text("step 1\n")
    proc = hpcgpu(tmp_path, "logs", "live-run", "-f")
    try:
        assert proc.stdout.readline() == b"step 1\n"
        append(log, "step 2\n")
        assert proc.stdout.readline() == b"step 2\n"  # still following the running run
        assert proc.poll() is None
        append(log, "last line\n")  # as a real run ends: the ranks' last lines, then the agent's result
        write_result(run_dir, 75)
        out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out == "last line\n"
    assert "hpcgpu: run live-run ended: STOPPED" in err


def test_follow_waits_for_the_log_of_a_run_that_has_not_written_it_yet(tmp_path, launcher):
    run_dir = make_run(tmp_path, "early-run", pid=launcher.pid)
    proc = hpcgpu(tmp_path, "logs", "early-run", "-f")
    try:
        assert b"waiting for rank0.log" in proc.stderr.readline()  # no error: the ranks have not started
        (run_dir / "logs" / "rank0.log").write_text("hello\n")
        assert proc.stdout.readline() == b"hello\n"
        write_result(run_dir, 0)
        out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "ended: DONE" in err


def test_a_missing_log_is_an_error_without_follow_or_once_the_run_ended(tmp_path):
    make_run(tmp_path, "gone-run")  # no launcher and no result: LOST, an ended state
    for args in (("logs", "gone-run"), ("logs", "gone-run", "-f")):
        proc = hpcgpu(tmp_path, *args)
        _, err = finish(proc)
        assert proc.returncode == 2 and "no log for rank 0" in err, err
