"""hpcgpu.host.container: mounts, refusals, env names, and check_runtime against faked processes."""

from __future__ import annotations

import subprocess

import pytest

from hpcgpu.host.container import (
    ContainerSettings,
    RunContext,
    check_runtime,
    container_prefix,
    env_extra_args,
    mount_dirs,
    pyxis_srun_args,
)
from hpcgpu.backends.slurm.planner import SLURM_ENV_NAMES
from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import parse_spec


def settings(runtime: str, **over) -> ContainerSettings:
    return ContainerSettings(runtime=runtime, image=over.pop("image", "img"), **over)


@pytest.mark.parametrize(
    "code, run, ckpt, expected",
    [
        ("/c", "/c/runs/1", "/c/runs/1/checkpoints", ["/c"]),  # all inside the code dir: one mount
        ("/c", "/r/1", None, ["/c", "/r/1"]),
        ("/c/sub", "/c", None, ["/c"]),  # a later parent replaces the child
        ("/c/", "/c/./runs/../runs/1", "/x", ["/c", "/x"]),  # normalised before comparing
        ("/c", "/cc", None, ["/c", "/cc"]),  # a name prefix is not a parent
    ],
)
def test_mount_dirs(code, run, ckpt, expected):
    assert mount_dirs(RunContext(code_dir=code, run_dir=run, ckpt_dir=ckpt)) == expected


def test_relative_mount_is_refused():
    with pytest.raises(UserError, match="not an absolute path"):
        mount_dirs(RunContext(code_dir="code", run_dir="/r"))


@pytest.mark.parametrize("runtime, path", [("docker", "/a:b"), ("podman", "/a:b"), ("apptainer", "/a,b"), ("pyxis", "/a,b")])
def test_paths_the_mount_syntax_cannot_carry_are_refused(runtime, path):
    ctx = RunContext(code_dir=path, run_dir="/r")
    with pytest.raises(UserError, match="mount syntax splits"):
        pyxis_srun_args(settings(runtime), ctx) if runtime == "pyxis" else container_prefix(settings(runtime), ctx)


@pytest.mark.parametrize("flag", ["--cleanenv", "-e", "--containall", "-C"])
def test_apptainer_clean_environment_is_refused(flag):
    with pytest.raises(UserError, match="clean environment"):
        container_prefix(settings("apptainer", extra_args=(flag,)), RunContext(code_dir="/c", run_dir="/r"))


def test_unknown_runtime_and_bad_env_name():
    ctx = RunContext(code_dir="/c", run_dir="/r")
    with pytest.raises(UserError, match="not one of"):
        container_prefix(settings("lxc"), ctx)
    with pytest.raises(UserError, match="bare name"):
        container_prefix(settings("docker", env_passthrough=("A=1",)), ctx)


def test_values_never_reach_argv():
    ctx = RunContext(code_dir="/c", run_dir="/r", env_names=("HPCGPU_RUN_DIR", "SECRET_TOKEN"))
    for runtime in ("docker", "podman"):
        argv = container_prefix(settings(runtime), ctx)
        assert argv[argv.index("SECRET_TOKEN") - 1] == "-e"
        assert not any("=" in a and a.split("=")[0] in ("SECRET_TOKEN", "HPCGPU_RUN_DIR") for a in argv)
    assert "SECRET_TOKEN" not in " ".join(container_prefix(settings("apptainer"), ctx))  # inherited


def test_slurm_names_only_under_slurm_and_only_for_oci():
    plain = container_prefix(settings("docker"), RunContext(code_dir="/c", run_dir="/r"))
    slurm = container_prefix(settings("docker"), RunContext(code_dir="/c", run_dir="/r", scheduler_env_names=SLURM_ENV_NAMES))
    assert "SLURM_NODEID" not in plain and set(SLURM_ENV_NAMES) <= set(slurm)
    pyxis = pyxis_srun_args(settings("pyxis"), RunContext(code_dir="/c", run_dir="/r", scheduler_env_names=SLURM_ENV_NAMES))
    assert not any("SLURM_NODEID" in a for a in pyxis)  # slurmstepd sets them in the container itself


def test_no_gpu_flags_without_gpus():
    ctx = RunContext(code_dir="/c", run_dir="/r")
    assert "--nv" not in container_prefix(settings("apptainer"), ctx)
    assert "--gpus" not in container_prefix(settings("docker"), ctx)
    assert "nvidia.com/gpu=all" not in container_prefix(settings("podman"), ctx)


def test_machine_args_come_from_the_runtime_variable():
    env = {"HPCGPU_PODMAN_ARGS": "--runtime runc --cgroup-manager=cgroupfs", "HPCGPU_DOCKER_ARGS": "--x"}
    assert env_extra_args("podman", env) == ["--runtime", "runc", "--cgroup-manager=cgroupfs"]
    argv = container_prefix(settings("podman", extra_args=("--user-flag",)), RunContext(code_dir="/c", run_dir="/r"), env)
    # machine flags, then the user's, then the image: the user's word is last
    assert argv[-4:] == ["runc", "--cgroup-manager=cgroupfs", "--user-flag", "img"]
    assert "--x" not in argv


class FakeRun:
    """Stands in for subprocess.run: answers each probe with a canned CompletedProcess."""

    def __init__(self, returncode=0, stdout="", stderr=""):
        self.result = (returncode, stdout, stderr)
        self.calls = []

    def __call__(self, argv, **kwargs):
        self.calls.append(argv)
        return subprocess.CompletedProcess(argv, self.result[0], self.result[1], self.result[2])


def found(name):
    return f"/usr/bin/{name}"


def test_check_runtime_missing_binary():
    with pytest.raises(UserError, match="needs `apptainer`") as info:
        check_runtime("apptainer", "/x.sif", which=lambda _: None)
    assert info.value.hint


@pytest.mark.parametrize(
    "runtime, run, message",
    [
        ("podman", FakeRun(1), "does not exist here"),
        ("podman", FakeRun(125, stderr="storage broken"), "cannot inspect images: storage broken"),
        ("docker", FakeRun(1, stderr="Error: No such image: img"), "does not exist here"),
        ("docker", FakeRun(1, stderr="Cannot connect to the Docker daemon"), "cannot inspect images"),
        ("pyxis", FakeRun(0, stdout="--ntasks"), "pyxis plugin is not installed"),
    ],
)
def test_check_runtime_failures(runtime, run, message):
    with pytest.raises(UserError, match=message):
        check_runtime(runtime, "img", which=found, run=run)


def test_check_runtime_success_and_probes():
    run = FakeRun(0, stdout="--container-image=...")
    check_runtime("podman", "localhost/hpcgpu:test", which=found, run=run)
    check_runtime("docker", "hpcgpu", which=found, run=run)
    check_runtime("pyxis", "nvcr.io#nvidia/pytorch:25.01-py3", which=found, run=run)
    assert run.calls[0] == ["podman", "image", "exists", "localhost/hpcgpu:test"]
    assert run.calls[1][:3] == ["docker", "image", "inspect"]


def test_check_runtime_apptainer_files(tmp_path):
    sif = tmp_path / "hpcgpu.sif"
    with pytest.raises(UserError, match="does not exist"):
        check_runtime("apptainer", str(sif), which=found)
    sif.write_bytes(b"")
    check_runtime("apptainer", str(sif), which=found)
    check_runtime("apptainer", "docker://ghcr.io/x/hpcgpu:0.1", which=found)  # remote: binary only


def test_check_runtime_timeout_is_a_user_error():
    def hang(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, 60)

    with pytest.raises(UserError, match="did not answer"):
        check_runtime("docker", "img", which=found, run=hang)


def test_host_tuning_variables_are_forwarded_by_name():
    # A value the user exported (NCCL_SOCKET_IFNAME, CUDA_VISIBLE_DEVICES, an override of one of
    # hpcgpu's defaults) must apply inside too; host cache paths and unrelated variables stay out.
    environ = {"NCCL_SOCKET_IFNAME": "ib0", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "3", "CUDA_VISIBLE_DEVICES": "2,3",
               "OMP_NUM_THREADS": "4", "FI_PROVIDER": "efa", "TORCH_HOME": "/home/ada/.cache/torch",
               "TORCHELASTIC_RUN_ID": "x", "HOME": "/home/ada", "PATH": "/usr/bin"}
    ctx = RunContext(code_dir="/c", run_dir="/r")
    argv = container_prefix(settings("podman"), ctx, environ)
    passed = {argv[i + 1] for i, a in enumerate(argv) if a == "-e"}
    assert passed == {"NCCL_SOCKET_IFNAME", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "CUDA_VISIBLE_DEVICES",
                      "OMP_NUM_THREADS", "FI_PROVIDER"}
    assert not any(v in argv for v in ("ib0", "2,3", "efa"))  # names only
    pyxis = pyxis_srun_args(settings("pyxis"), ctx, environ)
    assert "--container-env=CUDA_VISIBLE_DEVICES,FI_PROVIDER,NCCL_SOCKET_IFNAME,OMP_NUM_THREADS,TORCH_NCCL_ASYNC_ERROR_HANDLING" in pyxis
    assert "NCCL" not in " ".join(container_prefix(settings("apptainer"), ctx, environ))  # inherited anyway


def test_oci_shares_the_host_pid_namespace():
    # Two node agents on one host (--network host: one hostname) must not get the same pid, or
    # torch's rendezvous takes them for one node; podman refuses --init with --pid=host.
    for runtime in ("docker", "podman"):
        argv = container_prefix(settings(runtime), RunContext(code_dir="/c", run_dir="/r"))
        assert "--pid=host" in argv and "--init" not in argv


def test_container_flag_keeps_the_spec_runtime_binds_and_args(tmp_path):
    # `run local --container IMAGE` replaces the image only; with no container section: podman
    import os
    import sys

    (tmp_path / "job.yaml").write_text("container: {runtime: docker, image: old, binds: ['/data:/data:ro'],"
                                       " extra_args: ['--shm-size=8g']}\n")
    env = {**os.environ, "HPCGPU_HOME": str(tmp_path / "home")}
    env.pop("HPCGPU_DOCKER_ARGS", None)

    def node_command(*args):
        out = subprocess.run([sys.executable, "-m", "hpcgpu", "run", "local", "--nproc", "1", "--dry-run", *args],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.split("node command:\n", 1)[1].splitlines()[0].split()

    argv = node_command("-f", "job.yaml", "--container", "new:1")
    assert argv[:2] == ["docker", "run"] and "/data:/data:ro" in argv and "--shm-size=8g" in argv
    assert argv[argv.index("python3") - 1] == "new:1"
    assert node_command("--container", "new:1")[:2] == ["podman", "run"]
    # the runtime from --set and the image from --container make one container section
    (tmp_path / "job.yaml").unlink()
    argv = node_command("--set", "container.runtime=docker", "--container", "new:1")
    assert argv[:2] == ["docker", "run"] and argv[argv.index("python3") - 1] == "new:1"


@pytest.mark.parametrize("spec_has_container, flags, want", [
    (False, {}, {"container.image": "img:1", "container.runtime": "podman"}),  # the backend's default runtime
    (True, {}, {"container.image": "img:1"}),  # the spec's runtime stays
    (False, {"container.runtime": "docker"}, {"container.image": "img:1"}),  # so does --set's
])
def test_the_container_flag_sets_the_image_and_a_runtime_only_when_none_is_named(spec_has_container, flags, want):
    from hpcgpu.host.launch import container_overrides

    assert container_overrides(spec_has_container, flags, ("img:1", "podman")) == want
    assert container_overrides(spec_has_container, flags, (None, "podman")) == {}  # no --container
