"""docker/podman under Slurm get exactly the job's GPUs, resolved on the node (issue 17, item 6).

`--gpus all` would expose every GPU of the node, other jobs' included, while CUDA_VISIBLE_DEVICES
numbers the job's GPUs relative to its cgroup. hpcgpu.backends.slurm.node_gpus resolves them to UUIDs
at node start; these tests feed it canned `nvidia-smi` output (pure), then run it as a process with a
fake `nvidia-smi` and a fake `docker` on PATH.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hpcgpu.backends.slurm.node_gpus import job_gpu_uuids, runtime_argv
from hpcgpu.contract.oci import oci_gpu_args
from tests.helpers.plans import plan_for

#: `nvidia-smi --query-gpu=index,uuid --format=csv,noheader` on a node where the job sees all 4 GPUs
#: (no ConstrainDevices: host numbering)
FOUR = """0, GPU-aaaaaaaa-0000-0000-0000-000000000000
1, GPU-bbbbbbbb-1111-1111-1111-111111111111
2, GPU-cccccccc-2222-2222-2222-222222222222
3, GPU-dddddddd-3333-3333-3333-333333333333
"""
A, B, C, D = (line.split(", ")[1] for line in FOUR.splitlines())


@pytest.mark.parametrize("visible, uuids", [
    (None, [A, B, C, D]),        # no CUDA_VISIBLE_DEVICES: every GPU nvidia-smi lists in the job's cgroup
    ("2,3", [C, D]),             # Slurm's indices, numbered as nvidia-smi numbers them in the same cgroup
    ("3,1", [D, B]),             # in CUDA_VISIBLE_DEVICES order
    (C, [C]),                    # a UUID is kept as it is
    ("MIG-1234", ["MIG-1234"]),  # so is a MIG device
    ("", []), ("-1", []), ("NoDevFiles", []),  # none
])
def test_the_jobs_gpus_as_uuids(visible, uuids):
    assert job_gpu_uuids(FOUR, visible) == uuids


def test_under_constrain_devices_the_indices_are_the_cgroups():
    # ConstrainDevices=yes: nvidia-smi in the job lists only its 2 GPUs, renumbered 0 and 1, as Slurm's
    # CUDA_VISIBLE_DEVICES=0,1 numbers them
    constrained = "0, " + C + "\n1, " + D + "\n"
    assert job_gpu_uuids(constrained, "0,1") == [C, D]


def test_an_index_nvidia_smi_does_not_list_is_an_error_not_another_gpu():
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES index 7"):
        job_gpu_uuids(FOUR, "0,7")


def test_the_runtime_flags_for_exactly_those_gpus():
    # docker parses --gpus as CSV: two devices need the inner double quotes
    assert oci_gpu_args("docker", [A, B]) == ["--gpus", f'"device={A},{B}"']
    assert oci_gpu_args("podman", [A, B]) == ["--device", f"nvidia.com/gpu={A}", "--device", f"nvidia.com/gpu={B}"]
    assert oci_gpu_args("docker", None) == ["--gpus", "all"]
    assert oci_gpu_args("podman", None) == ["--device", "nvidia.com/gpu=all"]
    assert oci_gpu_args("docker", []) == []


def test_the_flags_go_right_after_run_and_the_container_numbers_from_zero():
    argv, env = runtime_argv(["docker", "run", "--rm", "img", "python3"], [C, D], {"CUDA_VISIBLE_DEVICES": "2,3"})
    assert argv == ["docker", "run", "--gpus", f'"device={C},{D}"', "--rm", "img", "python3"]
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"  # inside, the two GPUs are devices 0 and 1
    argv, env = runtime_argv(["podman", "run", "img"], [], {"CUDA_VISIBLE_DEVICES": "2"})
    assert argv == ["podman", "run", "img"] and env == {"CUDA_VISIBLE_DEVICES": "2"}  # no GPUs: nothing added
    with pytest.raises(ValueError):
        runtime_argv(["apptainer", "exec", "img"], [A], {})


# --- the process boundary: fake nvidia-smi and docker on PATH ----------------------------------------------


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def run_step(tmp_path: Path, env: dict, smi: str | None) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if smi is not None:
        executable(bin_dir / "nvidia-smi", "#!/bin/sh\ncat <<'OUT'\n" + smi + "OUT\n")
    # the fake docker prints the argv it got, one per line, then the CUDA_VISIBLE_DEVICES it was given
    executable(bin_dir / "docker", '#!/bin/sh\nfor a in "$@"; do echo "arg:$a"; done\necho "cvd:${CUDA_VISIBLE_DEVICES-unset}"\n')
    environ = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": os.getcwd(), **env}
    return subprocess.run([sys.executable, "-m", "hpcgpu.backends.slurm.node_gpus", "--", "docker", "run", "--rm",
                           "img", "python3", "-m", "hpcgpu", "train"],
                          env=environ, capture_output=True, text=True, timeout=60)


def test_the_step_resolves_the_jobs_gpus_with_nvidia_smi(tmp_path):
    out = run_step(tmp_path, {"CUDA_VISIBLE_DEVICES": "1,2"}, FOUR)
    assert out.returncode == 0, out.stderr
    args = [line[4:] for line in out.stdout.splitlines() if line.startswith("arg:")]
    assert args == ["run", "--gpus", f'"device={B},{C}"', "--rm", "img", "python3", "-m", "hpcgpu", "train"]
    assert "cvd:0,1" in out.stdout
    assert B in out.stderr  # the node's log says which GPUs the container got


def test_without_nvidia_smi_no_gpu_flags(tmp_path):
    out = run_step(tmp_path, {"CUDA_VISIBLE_DEVICES": "0"}, None)
    assert out.returncode == 0, out.stderr
    assert "arg:--gpus" not in out.stdout and "cvd:0" in out.stdout
    assert "nvidia-smi" in out.stderr


def test_an_unknown_index_fails_the_node_before_the_container_starts(tmp_path):
    out = run_step(tmp_path, {"CUDA_VISIBLE_DEVICES": "9"}, FOUR)
    assert out.returncode != 0 and "arg:" not in out.stdout
    assert "CUDA_VISIBLE_DEVICES index 9" in out.stderr


# --- the plan: the step wraps docker/podman with GPUs under Slurm, nothing else ---------------------------


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_slurm_gpu_runs_resolve_their_gpus_on_the_node(runtime):
    plan = plan_for("resources: {nodes: 2, gpus_per_node: 4}\n"
                    f"container: {{runtime: {runtime}, image: img}}\n", backend="slurm", run_id="g-1",
                    run_dir="/shared/runs/g-1", python="/venv/bin/python")
    prefix = list(plan.container_prefix)
    assert prefix[:4] == ["/venv/bin/python", "-m", "hpcgpu.backends.slurm.node_gpus", "--"]
    assert prefix[4:6] == [runtime, "run"]
    assert "all" not in prefix and "nvidia.com/gpu=all" not in prefix  # never every GPU of the node


def test_cpu_slurm_runs_and_local_runs_have_no_step():
    cpu = plan_for("resources: {nodes: 2, gpus_per_node: 0}\ncontainer: {runtime: docker, image: img}\n",
                   backend="slurm", run_id="c-1", run_dir="/shared/runs/c-1")
    assert cpu.container_prefix[0] == "docker" and "--gpus" not in cpu.container_prefix
    local = plan_for("resources: {gpus_per_node: 2}\ncontainer: {runtime: docker, image: img}\n", visible_gpus=2)
    assert local.container_prefix[:2] == ("docker", "run") and "all" in local.container_prefix
