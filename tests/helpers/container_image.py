"""Fixtures for the container tests: the CPU test image under podman and under a Docker engine, and
how to run it on this machine. A pytest plugin, registered for the whole tree by tests/conftest.py;
mark such tests `pytest.mark.container`.

Skipped unless the image exists; with HPCGPU_REQUIRE_CONTAINER=1 (CI) a missing podman or image
fails instead, so the tier cannot pass by skipping. Build the image with `make image-test`.
The docker fixtures skip unless the engine answers and holds podman's copy of the image (`make
docker-up`: containers/docker-engine.sh); HPCGPU_REQUIRE_DOCKER=1 (set by `make test`) fails instead.
`make test` sets the engine up in the background while the other tests run: the docker fixture
first waits until containers/docker-engine.sh releases its lock.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("HPCGPU_TEST_IMAGE", "localhost/hpcgpu:test")
#: containers/docker-engine.sh's directory: its lock (held while `up` runs) and up.log
DOCKER_DIR = Path(os.environ.get("HPCGPU_DOCKER_DIR", "/tmp/hpcgpu-docker"))
#: how long the docker fixture waits for a `docker-engine.sh up` under way (apt, engine, image load)
DOCKER_UP_WAIT_S = 600


def podman_machine_args() -> list[str]:
    """HPCGPU_PODMAN_ARGS, or what containers/podman-args.sh says this machine needs."""
    if "HPCGPU_PODMAN_ARGS" in os.environ:
        return shlex.split(os.environ["HPCGPU_PODMAN_ARGS"])
    out = subprocess.run([str(REPO / "containers" / "podman-args.sh")], capture_output=True, text=True, check=True)
    return shlex.split(out.stdout)


@pytest.fixture(scope="session")
def test_image() -> str:
    """The test image's name; skip (or fail under HPCGPU_REQUIRE_CONTAINER=1) when it is missing."""
    problem = None
    if shutil.which("podman") is None:
        problem = "podman is not installed"
    elif subprocess.run(["podman", "image", "exists", IMAGE], capture_output=True).returncode != 0:
        problem = f"{IMAGE} does not exist (build it: make image-test)"
    if problem:
        if os.environ.get("HPCGPU_REQUIRE_CONTAINER") == "1":
            pytest.fail(f"HPCGPU_REQUIRE_CONTAINER=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    return IMAGE


@pytest.fixture(scope="session")
def machine_args() -> list[str]:
    """Flags that go right after `podman run` on this machine (runtime, cgroups, ulimits)."""
    return podman_machine_args()


@pytest.fixture
def podman_run(test_image, machine_args):
    """Run `podman run --rm [machine flags] ARGS` and return the CompletedProcess (text, captured)."""

    def run(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
        argv = ["podman", "run", "--rm", *machine_args, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)

    return run


def _image_id(argv: list[str]) -> str | None:
    """The image id an `image inspect --format {{.Id}}` prints, without `sha256:`; None if it fails."""
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return out.stdout.strip().removeprefix("sha256:") if out.returncode == 0 else None


def wait_for_docker_up(timeout: float = DOCKER_UP_WAIT_S) -> str | None:
    """Wait while containers/docker-engine.sh holds its lock (`up --background` under `make test`);
    a problem when it still holds it after timeout seconds, else None."""
    try:
        lock = open(DOCKER_DIR / ".lock")
    except FileNotFoundError:
        return None  # never set up by the script: the checks below say what is missing
    with lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return None
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return f"containers/docker-engine.sh still holds {lock.name} after {timeout:.0f} s"
                time.sleep(0.5)


def _up_log() -> str:
    """The end of the last background `docker-engine.sh up`, to tell why the engine is not there."""
    try:
        tail = (DOCKER_DIR / "up.log").read_text().splitlines()[-8:]
    except FileNotFoundError:
        return ""
    return f"\nlast lines of {DOCKER_DIR / 'up.log'}:\n  " + "\n  ".join(tail)


def docker_problem() -> str | None:
    """Why the docker tests cannot run here, or None: the engine answers and has the test image,
    the same one podman has (a stale copy would test old code)."""
    waited = wait_for_docker_up()
    if waited:
        return waited
    if shutil.which("docker") is None:
        return "docker is not installed (make docker-up installs it)"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 60 s"
    if info.returncode != 0:
        return f"the docker engine does not answer (start it: make docker-up): {info.stderr.strip()[:200]}"
    have = _image_id(["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE])
    if have is None:
        return f"docker has no {IMAGE} (load it: make docker-up)"
    want = _image_id(["podman", "image", "inspect", "--format", "{{.Id}}", IMAGE]) if shutil.which("podman") else None
    if want is not None and want != have:
        return f"docker's {IMAGE} ({have[:12]}) is not podman's ({want[:12]}): reload it with make docker-up"
    return None


@pytest.fixture(scope="session")
def docker_image() -> str:
    """The test image's name in the docker engine; skip (fail under HPCGPU_REQUIRE_DOCKER=1) without it."""
    problem = docker_problem()
    if problem:
        problem += _up_log()
        if os.environ.get("HPCGPU_REQUIRE_DOCKER") == "1":
            pytest.fail(f"HPCGPU_REQUIRE_DOCKER=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    return IMAGE
