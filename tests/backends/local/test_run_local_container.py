"""`hpcgpu run local --container IMAGE` for real: podman, the CPU test image, two gloo ranks.

The host command builds the prefix (hpcgpu/host/container.py), checks runtime and image, and runs
`podman run ... IMAGE python3 -m hpcgpu train --run-dir RUN` as a child; the run dir and code dir
are mounted at the same paths. The task records where each rank ran (tests/helpers/where_task.py),
so the tests can tell the image's Python from the host's. Rebuild the image after changing hpcgpu
(`make image-test`): it holds a wheel of the tree.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.paths import WHERE_TASK

pytestmark = pytest.mark.container

#: 16 steps of 2 ranks x 16 samples; the slow variant leaves time to signal mid-training
SPEC = {
    "name": "ctr",
    "entry": {"task": "where_task:make_task", "task_args": {"n_samples": 512}},
    "train": {"batch_size": 16, "epochs": 1, "log_every": 2, "seed": 3},
    "checkpoint": {"every_steps": 1000},
    "logging": {"progress": "lines", "tensorboard": False},
    "distributed": {"stop_grace_s": 30},
}
SLOW = {**SPEC, "entry": {"task": "where_task:make_task", "task_args": {"n_samples": 1024, "delay_s": 0.05}}}


@pytest.fixture
def project(tmp_path, test_image, machine_args) -> dict:
    """A code dir with the spec and the task module, and the environment a user's shell would have."""
    shutil.copy(WHERE_TASK, tmp_path / "where_task.py")
    env = {**os.environ, "HPCGPU_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1",
           "HPCGPU_PODMAN_ARGS": shlex.join(machine_args)}
    return {"dir": tmp_path, "env": env, "image": test_image}


def write_spec(directory: Path, spec: dict) -> Path:
    path = directory / "hpcgpu.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def hpcgpu(project: dict, *args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    """The CLI from the project directory, like a user runs it."""
    return subprocess.run([sys.executable, "-m", "hpcgpu", *args], cwd=project["dir"], env=project["env"],
                          capture_output=True, text=True, timeout=timeout)


def run_dirs(project: dict) -> list[Path]:
    runs = project["dir"] / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []


def where(run_dir: Path) -> list[dict]:
    path = run_dir / "where.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def container_exists(name: str) -> bool:
    return subprocess.run(["podman", "container", "exists", name], capture_output=True).returncode == 0


def test_trains_the_demo_inside_the_image_to_the_same_loss_as_on_the_host(project):
    write_spec(project["dir"], SPEC)
    start = time.monotonic()
    out = hpcgpu(project, "run", "local", "--nproc", "2", "--container", project["image"])
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stdout + out.stderr
    (inside,) = run_dirs(project)
    assert f"hpcgpu: {inside.name} done" in out.stdout
    assert (summary(inside)["status"], summary(inside)["steps"]) == ("done", 16)
    # both ranks ran the image's Python and the image's hpcgpu, in a podman container
    records = where(inside)
    assert sorted(r["rank"] for r in records) == [0, 1], records
    for r in records:
        assert r["containerenv"] and r["executable"] == "/usr/bin/python3", r
        assert r["hpcgpu"].startswith("/usr/local/lib/python3"), r
    plan = json.loads((inside / "plan.json").read_text())  # what ran is what the plan says
    assert plan["container_prefix"][:3] == ["podman", "run", "--rm"] and plan["node_argv"][0] == "python3"
    assert not container_exists(f"hpcgpu-{inside.name}")  # --rm: nothing left behind

    # The same spec on the host: the host's interpreter, and the same numbers bit for bit
    out = hpcgpu(project, "run", "local", "--nproc", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    (bare,) = [d for d in run_dirs(project) if d != inside]
    assert all(not r["containerenv"] and r["executable"] == sys.executable for r in where(bare))
    assert summary(bare)["final_loss"] == summary(inside)["final_loss"]
    print(f"container run: {elapsed:.1f} s")


def test_sigterm_to_the_host_command_checkpoints_inside_and_resume_continues(project):
    # held after 3 steps (batch 16 per rank) until the test has looked and sent SIGTERM: however fast
    # the machine, the signal lands mid-run
    hold = project["dir"] / "hold"
    hold.touch()
    held = {**SLOW["entry"]["task_args"], "hold_after": 48, "hold_file": str(hold)}
    write_spec(project["dir"], {**SLOW, "entry": {**SLOW["entry"], "task_args": held}})
    log_file = open(project["dir"] / "first.log", "w")
    first = subprocess.Popen([sys.executable, "-m", "hpcgpu", "run", "local", "--nproc", "2", "--container",
                              project["image"]], cwd=project["dir"], env=project["env"], stdout=log_file,
                             stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not re.search(r"^step [2-9]/", _text(run_dirs(project), "logs/rank0.log"), re.M):
            assert first.poll() is None and time.monotonic() < deadline, _text([project["dir"]], "first.log")
            time.sleep(0.2)
        (run_dir,) = run_dirs(project)
        name = f"hpcgpu-{run_dir.name}"
        assert container_exists(name)

        # the run is still going: resuming it now would train twice in one run dir
        early = hpcgpu(project, "run", "local", "--resume", run_dir.name, timeout=60)
        # (the launch lock answers first; the container's name is the backstop when a launcher was SIGKILLed)
        assert early.returncode == 2 and f"still running here (launcher pid {first.pid})" in early.stderr, early.stderr

        first.send_signal(signal.SIGTERM)  # the host process only; it forwards to podman, podman to the agent
        deadline = time.monotonic() + 60  # the ranks have the stop request before they go on
        while "SIGTERM received" not in _text(run_dirs(project), "logs/rank0.log"):
            assert first.poll() is None and time.monotonic() < deadline, _text([project["dir"]], "first.log")
            time.sleep(0.2)
        hold.unlink()
        rc = first.wait(timeout=90)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        log_file.close()
    output = (project["dir"] / "first.log").read_text()
    assert rc == 75, output
    assert f"continue with: hpcgpu run local --resume {run_dir.name}" in output
    log = (run_dir / "logs" / "rank0.log").read_text()
    assert "hpcgpu: SIGTERM received: stopping at the next step boundary with a checkpoint" in log, log
    step = int(re.search(r"^hpcgpu: checkpoint step (\d+) -> ", log, re.M).group(1))
    assert 2 <= step < 32 and summary(run_dir)["status"] == "stopped"
    assert not container_exists(name)

    # From another directory: the run index finds the run, which resumes where it was started (the
    # code dir holding where_task.py is mounted again), inside the image, from the checkpoint
    elsewhere = project["dir"].parent / f"{project['dir'].name}-elsewhere"
    elsewhere.mkdir()
    out = hpcgpu({**project, "dir": elsewhere}, "run", "local", "--resume", run_dir.name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"hpcgpu: resuming in {project['dir']}, where the run was started" in out.stdout
    log = (run_dir / "logs" / "rank0.log").read_text()
    assert re.search(rf"^hpcgpu: resuming from {run_dir}/checkpoints/step_{step:08d}: step {step},", log, re.M), log
    assert (summary(run_dir)["status"], summary(run_dir)["steps"]) == ("done", 32)
    assert [r["containerenv"] for r in where(run_dir)] == [True] * 4  # 2 ranks x 2 attempts, all inside


def test_a_signal_after_the_run_finished_does_not_turn_done_into_failed(project):
    # a `docker stop` or Ctrl-C that lands while the container is being torn down, after the agent
    # inside recorded the run as done: the run is done, and the command says so and exits 0
    # one rank: what is recorded at the end is the launcher's and the agent's, not the ranks'
    write_spec(project["dir"], SPEC)
    log_file = open(project["dir"] / "late.log", "w")
    launcher = subprocess.Popen([sys.executable, "-m", "hpcgpu", "run", "local", "--nproc", "1", "--container",
                                 project["image"]], cwd=project["dir"], env=project["env"], stdout=log_file,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 150
        while not list(project["dir"].glob("runs/*/result.json")):
            assert launcher.poll() is None and time.monotonic() < deadline, _text([project["dir"]], "late.log")
            time.sleep(0.02)
        launcher.send_signal(signal.SIGTERM)  # a zombie ignores it: the assertions hold whenever it lands
        rc = launcher.wait(timeout=90)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        log_file.close()
    output = (project["dir"] / "late.log").read_text()
    assert rc == 0, output
    assert re.search(r"^hpcgpu: ctr-\S+ done$", output, re.M), output
    (run_dir,) = run_dirs(project)
    assert json.loads((run_dir / "result.json").read_text())["exit_code"] == 0


def test_missing_image_is_refused_before_anything_starts(project):
    write_spec(project["dir"], SPEC)
    out = hpcgpu(project, "run", "local", "--nproc", "2", "--container", "localhost/hpcgpu:no-such-tag", timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "podman image 'localhost/hpcgpu:no-such-tag' does not exist here" in out.stderr
    assert "make image-test" in out.stderr
    assert run_dirs(project) == []


def _text(dirs: list[Path], name: str) -> str:
    """The text of dirs[0]/name, or "" while it does not exist."""
    try:
        return (dirs[0] / name).read_text() if dirs else ""
    except FileNotFoundError:
        return ""
