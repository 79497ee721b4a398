"""The CPU test image (make image-test) runs for real under podman: CLI, imports, env, training."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from hpcgpu.host.container import ContainerSettings, RunContext, container_prefix

pytestmark = pytest.mark.container


def test_entrypoint_runs_the_cli(podman_run, test_image):
    out = podman_run(test_image, "--help")
    assert out.returncode == 0, out.stderr
    assert "train" in out.stdout and "Usage: hpcgpu" in out.stdout


def test_torch_and_hpcgpu_import(podman_run, test_image):
    code = "import torch, hpcgpu; print(torch.__version__, hpcgpu.__version__)"
    out = podman_run("--entrypoint", "python3", test_image, "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("2.13.0")


def test_init_is_pid_1_and_user_is_not_root(podman_run, test_image):
    out = podman_run("--entrypoint", "tini", test_image, "--", "sh", "-c", 'cat /proc/1/comm; id -u; echo "$PWD"')
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["tini", "1000", "/work"]


def test_hpcgpu_prefix_mounts_and_passes_names_not_values(test_image, machine_args, tmp_path):
    # The real command line hpcgpu builds: a path with a space is mounted at the same path, it is
    # the working directory, and a variable set only in podman's environment reaches the container.
    code = tmp_path / "my project"
    code.mkdir()
    (code / "marker.txt").write_text("here")
    settings = ContainerSettings(runtime="podman", image=test_image)
    ctx = RunContext(code_dir=str(code), run_dir=str(code / "runs" / "r1"), env_names=("HPCGPU_PROBE",), uid=os.getuid(), gid=os.getgid())
    prefix = container_prefix(settings, ctx, {"HPCGPU_PODMAN_ARGS": " ".join(machine_args)})
    assert not any("s3cret" in a for a in prefix)
    probe = "import json, os; print(json.dumps([os.getcwd(), open('marker.txt').read(), os.environ.get('HPCGPU_PROBE')]))"
    out = subprocess.run([*prefix, "python3", "-c", probe], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HPCGPU_PROBE": "s3cret"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [str(code), "here", "s3cret"]


def _summary(work) -> dict:
    """summary.json of the only run under WORK/runs."""
    (run,) = (work / "runs").iterdir()
    return json.loads((run / "summary.json").read_text())


def test_train_runs_the_bundled_demo_by_default(podman_run, test_image):
    # `docker run IMAGE`: CMD is `train`, /work has no spec, so the bundled demo trains as user hpcgpu.
    out = podman_run(test_image)
    assert out.returncode == 0, out.stdout + out.stderr
    assert " done" in out.stdout


def test_train_uses_the_spec_mounted_at_work(podman_run, test_image, tmp_path):
    # `docker run --user $(id -u):$(id -g) -v $PWD:/work IMAGE train` with the user's spec.
    (tmp_path / "hpcgpu.yaml").write_text("name: mounted\ntrain:\n  max_steps: 20\n")
    out = podman_run("--user", f"{os.getuid()}:{os.getgid()}", "-v", f"{tmp_path}:/work", test_image, "train")
    assert out.returncode == 0, out.stdout + out.stderr
    summary = _summary(tmp_path)
    assert (summary["status"], summary["steps"]) == ("done", 20)
    assert next((tmp_path / "runs").iterdir()).name.startswith("mounted-")


def test_sigterm_reaches_the_ranks_through_tini(test_image, machine_args, tmp_path):
    # `docker stop` / preemption: SIGTERM to the container's PID 1 (tini) must reach the node agent
    # and the ranks, which checkpoint and stop with the documented resumable status 75.
    (tmp_path / "hpcgpu.yaml").write_text("train:\n  epochs: 1000\n")
    name = f"hpcgpu-sigterm-{os.getpid()}"
    argv = ["podman", "run", "--rm", "--name", name, *machine_args, "--user", f"{os.getuid()}:{os.getgid()}",
            "-v", f"{tmp_path}:/work", test_image, "train"]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("runs/*/checkpoints/step_*")):  # training is under way
            assert child.poll() is None and time.monotonic() < deadline, "training never reached a checkpoint"
            time.sleep(0.2)
        subprocess.run(["podman", "kill", "--signal", "TERM", name], check=True, capture_output=True)
        output, _ = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            subprocess.run(["podman", "kill", name], capture_output=True)
            child.wait()
    assert child.returncode == 75, output
    assert _summary(tmp_path)["status"] == "stopped"
    # how to go on there: a new container of the image (tests/containers/test_docker_engine.py runs it)
    (run,) = (tmp_path / "runs").iterdir()
    assert f"continue with: podman run <the same options and image> run local --resume /work/runs/{run.name}" in output
