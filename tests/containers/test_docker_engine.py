"""The CPU test image under a real Docker engine (make docker-up): the commands users type.

`docker run ... IMAGE train` trains a mounted spec; `docker stop` makes it checkpoint and exit 75, and
the command it prints continues the run in a new container to the loss of an uninterrupted run; and
`hpcgpu run local --container IMAGE` with `runtime: docker` runs the ranks inside docker. Each run
is 2 gloo ranks, one short epoch; the task records where each rank ran (tests/helpers/where_task.py).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.container_image import DOCKER_DIR
from tests.helpers.lock_holders import lock_holders
from tests.helpers.paths import REPO, WHERE_TASK

pytestmark = pytest.mark.container

#: 64 steps of 2 ranks x 16 samples (the training itself takes a fraction of a second)
SPEC = {
    "name": "dk",
    "entry": {"task": "where_task:make_task", "task_args": {"n_samples": 2048}},
    "train": {"batch_size": 16, "epochs": 1, "log_every": 1, "seed": 3},
    "resources": {"procs_per_node": 2},
    "checkpoint": {"every_steps": 1000},
    "logging": {"progress": "lines", "tensorboard": False},
    "distributed": {"stop_grace_s": 30},
}
STEPS = 64
#: the same run with each step slowed to ~50 ms, so that `docker stop` lands mid-run; the sleep
#: changes no number, so it ends with SPEC's loss
SLOW = {**SPEC, "entry": {"task": "where_task:make_task", "task_args": {"n_samples": 2048, "delay_s": 0.05}}}
#: what the stop message says in place of the user's own `docker run` options and image
SAME = "<the same options and image>"


def project(directory: Path, spec: dict = SPEC) -> Path:
    """A code dir with the spec and the task module (what users mount at /work)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hpcgpu.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(WHERE_TASK, directory / "where_task.py")
    return directory


def run_options(work: Path) -> list[str]:
    """`docker run` options as docs/containers.md gives them: host network and IPC, /work mounted,
    the caller's uid (files in runs/ are theirs) with a writable HOME."""
    return ["--rm", "--network", "host", "--ipc=host", "--user", f"{os.getuid()}:{os.getgid()}",
            "-e", "HOME=/tmp", "-e", "OMP_NUM_THREADS=1", "-v", f"{work}:/work"]


def only_run(work: Path) -> Path:
    (run_dir,) = (work / "runs").iterdir()
    return run_dir


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def where(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "where.jsonl").read_text().splitlines()]


def in_image(records: list[dict]) -> bool:
    """Every rank ran the image's Python and hpcgpu (/.dockerenv alone proves nothing: some hosts have it)."""
    return bool(records) and all(
        r["dockerenv"] and not r["containerenv"] and r["executable"] == "/usr/bin/python3"
        and r["hpcgpu"].startswith("/usr/local/lib/python3") for r in records)


def container_exists(name: str) -> bool:
    return subprocess.run(["docker", "container", "inspect", name], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def baseline(docker_image, tmp_path_factory) -> dict:
    """One uninterrupted `docker run ... IMAGE train` of SPEC: the reference the other tests compare to."""
    work = project(tmp_path_factory.mktemp("docker-baseline"))
    start = time.monotonic()
    out = subprocess.run(["docker", "run", *run_options(work), docker_image, "train"],
                         capture_output=True, text=True, timeout=300)
    return {"work": work, "out": out, "elapsed": time.monotonic() - start}


def test_docker_run_image_train_trains_the_mounted_spec_to_completion(baseline):
    out = baseline["out"]
    assert out.returncode == 0, out.stdout + out.stderr
    run_dir = only_run(baseline["work"])
    assert re.search(rf"^hpcgpu: {run_dir.name} done$", out.stdout, re.M), out.stdout
    assert (summary(run_dir)["status"], summary(run_dir)["steps"]) == ("done", STEPS)
    records = where(run_dir)
    assert sorted(r["rank"] for r in records) == [0, 1] and in_image(records), records
    print(f"docker run train: {baseline['elapsed']:.1f} s")


def test_docker_stop_checkpoints_exits_75_and_the_printed_command_resumes_to_the_same_loss(
        baseline, docker_image, tmp_path):
    # held after 3 steps (batch 16 per rank) until the stop request has reached the ranks: however
    # fast the machine, `docker stop` lands mid-run (/work is the mounted project dir)
    held = {**SLOW["entry"]["task_args"], "hold_after": 48, "hold_file": "/work/hold"}
    work = project(tmp_path / "work", {**SLOW, "entry": {**SLOW["entry"], "task_args": held}})
    (work / "hold").touch()
    name = f"hpcgpu-test-stop-{os.getpid()}"
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as log_file:
        first = subprocess.Popen(["docker", "run", "--name", name, *run_options(work), docker_image, "train"],
                                 stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not re.search(r"^step ([2-9]|\d\d)/", _text(work, "runs/*/logs/rank0.log"), re.M):  # under way
            assert first.poll() is None and time.monotonic() < deadline, first_log.read_text()
            time.sleep(0.2)
        # SIGTERM to tini; -t 120 as docs/containers.md advises (SIGKILL only after 120 s, not 10)
        stop = subprocess.Popen(["docker", "stop", "-t", "120", name], stdout=subprocess.DEVNULL)
        while "SIGTERM received" not in _text(work, "runs/*/logs/rank0.log"):
            assert first.poll() is None and time.monotonic() < deadline + 60, first_log.read_text()
            time.sleep(0.2)
        (work / "hold").unlink()
        assert stop.wait(timeout=240) == 0
        rc = first.wait(timeout=120)
    finally:
        if first.poll() is None:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
            first.wait()
    output = first_log.read_text()
    assert rc == 75, output
    run_dir = only_run(work)
    stopped = summary(run_dir)
    assert stopped["status"] == "stopped" and 2 <= stopped["steps"] < STEPS, (stopped, output)
    assert not container_exists(name)

    # The stop message says how to go on *there*: a new container of the image, the run named by its
    # directory (the old container's run index went with it). Run exactly that, with our options.
    found = re.search(rf"continue with: docker run {re.escape(SAME)} (.+)$", output, re.M)
    assert found, output
    args = shlex.split(found.group(1))
    assert args == ["run", "local", "--resume", f"/work/runs/{run_dir.name}"], args
    out = subprocess.run(["docker", "run", *run_options(work), docker_image, *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    log = (run_dir / "logs" / "rank0.log").read_text()
    step = stopped["steps"]
    assert re.search(rf"^hpcgpu: resuming from /work/runs/{run_dir.name}/checkpoints/step_{step:08d}: step {step},",
                     log, re.M), log
    resumed = summary(run_dir)
    assert (resumed["status"], resumed["steps"]) == ("done", STEPS)
    assert resumed["final_loss"] == summary(only_run(baseline["work"]))["final_loss"]  # as if never stopped
    assert in_image(where(run_dir))


def test_run_local_container_with_the_docker_runtime_trains_inside_docker(baseline, docker_image, tmp_path):
    # runtime from the spec, image from --container (it replaces the spec's): the host command builds
    # `docker run ... IMAGE python3 -m hpcgpu train --run-dir RUN` and mounts the code dir in place.
    spec = {**SPEC, "container": {"runtime": "docker", "image": "localhost/hpcgpu:no-such-tag"}}
    work = project(tmp_path / "work", spec)
    env = {**os.environ, "HPCGPU_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "hpcgpu", "run", "local", "--container", docker_image],
                         cwd=work, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stdout + out.stderr
    run_dir = only_run(work)
    assert f"hpcgpu: {run_dir.name} done" in out.stdout
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["container_prefix"][:3] == ["docker", "run", "--rm"] and plan["container_prefix"][-1] == docker_image
    records = where(run_dir)
    assert sorted(r["rank"] for r in records) == [0, 1] and in_image(records), records
    # the same spec, ranks and seed as `docker run IMAGE train`: the same numbers
    assert summary(run_dir)["final_loss"] == summary(only_run(baseline["work"]))["final_loss"]
    assert not container_exists(f"hpcgpu-{run_dir.name}")  # --rm: nothing left behind
    print(f"run local --container (docker): {elapsed:.1f} s")


@pytest.mark.skipif(os.geteuid() != 0, reason="docker-engine.sh up needs root")
def test_docker_engine_sh_up_is_a_noop_when_up_and_status_succeeds(docker_image):
    up = subprocess.run([str(REPO / "containers/docker-engine.sh"), "up"], capture_output=True, text=True,
                        timeout=120, env={**os.environ, "HPCGPU_TEST_IMAGE": docker_image})
    assert up.returncode == 0, up.stderr
    assert "the same as podman's" in up.stderr and "installing" not in up.stderr, up.stderr
    assert "starting dockerd" not in up.stderr and "loading" not in up.stderr, up.stderr
    status = subprocess.run([str(REPO / "containers/docker-engine.sh"), "status"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "HPCGPU_TEST_IMAGE": docker_image})
    assert status.returncode == 0 and "engine answers" in status.stderr, status.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="reading other processes' fds needs root")
def test_no_docker_daemon_holds_the_docker_engine_sh_lock(docker_image):
    # The docker tests wait for that lock (`up --background` under make test): an engine that
    # inherited it would hold it for its whole life, and they would wait 10 minutes, then fail.
    lock = str(DOCKER_DIR / ".lock")
    holders = lock_holders(lock, lambda comm: comm.startswith(("dockerd", "containerd", "docker-proxy", "runc")))
    assert not holders, f"{holders} hold {lock}"


def _text(work: Path, pattern: str) -> str:
    """The text of the first file matching pattern under work, or "" while there is none."""
    for path in work.glob(pattern):
        try:
            return path.read_text()
        except FileNotFoundError:
            pass
    return ""
