"""Golden command lines for apptainer, docker, podman and pyxis (hpcgpu/host/container.py)."""

from __future__ import annotations

import shlex

import pytest

from hpcgpu.backends.slurm.planner import SLURM_ENV_NAMES
from hpcgpu.host.container import (
    ContainerSettings,
    RunContext,
    container_prefix,
    pyxis_srun_args,
    render_shell,
)
from tests.helpers.golden import assert_golden

# A code directory with a space, the run directory inside it (mounted once), a checkpoint
# directory elsewhere: what a real user on a shared filesystem has.
CODE = "/home/ada/my project"
RUN = "/home/ada/my project/runs/demo-1"
CKPT = "/scratch/ada/ckpt"
NODE_CMD = ["python3", "-m", "hpcgpu", "train", "--run-dir", RUN]
ENV = ("HPCGPU_RUN_DIR", "HPCGPU_SPEC_FILE", "HPCGPU_CKPT_DIR", "NCCL_DEBUG")


def ctx(**over) -> RunContext:
    """The shared run context, with overrides."""
    base = dict(code_dir=CODE, run_dir=RUN, ckpt_dir=CKPT, env_names=ENV)
    return RunContext(**{**base, **over})


def pretty(prefix: list[str], command: list[str] = NODE_CMD) -> str:
    """render_shell with one flag per line, the image and the command on their own: valid shell, readable diffs."""
    argv = [*prefix, *command]
    assert shlex.split(render_shell(argv)) == argv  # quoting round-trips, spaces included
    lines = [[prefix[0]]]
    for word in prefix[1:-1]:
        if word.startswith("-"):
            lines.append([])
        lines[-1].append(word)
    lines += [[prefix[-1]], command]
    return " \\\n    ".join(render_shell(words) for words in lines) + "\n"


def cases(*pairs: tuple[str, str]) -> str:
    """One golden text from (title, rendered) pairs."""
    return "\n".join(f"# {title}\n{text}" for title, text in pairs)


def test_apptainer_golden():
    sif = ContainerSettings(runtime="apptainer", image="/images/hpcgpu 0.1.sif",
                            binds=("/datasets:/data:ro",), extra_args=("--writable-tmpfs",))
    gpu = container_prefix(sif, ctx(gpus=True, infiniband=True))
    cpu = container_prefix(ContainerSettings(runtime="apptainer", image="docker://ghcr.io/x/hpcgpu:0.1"), ctx())
    assert_golden("container_apptainer.txt", cases(
        ("GPUs, InfiniBand, user bind, extra args", pretty(gpu)), ("CPU, docker:// image", pretty(cpu))))


def test_docker_golden():
    img = ContainerSettings(runtime="docker", image="hpcgpu:latest", binds=("/datasets:/data:ro",),
                            env_passthrough=("WANDB_API_KEY",))
    gpu = container_prefix(img, ctx(gpus=True, infiniband=True, uid=1000, gid=100, scheduler_env_names=SLURM_ENV_NAMES))
    cpu = container_prefix(ContainerSettings(runtime="docker", image="hpcgpu:latest"), ctx(uid=1000, gid=1000))
    assert_golden("container_docker.txt", cases(
        ("GPUs, InfiniBand, under Slurm, uid 1000", pretty(gpu)), ("CPU, local", pretty(cpu))))


def test_podman_golden():
    img = ContainerSettings(runtime="podman", image="localhost/hpcgpu:test", extra_args=("--pull=never",))
    machine = {"HPCGPU_PODMAN_ARGS": "--runtime runc --cgroup-manager=cgroupfs --ulimit nofile=20000:20000"}
    root_cpu = container_prefix(img, ctx(uid=0, gid=0), machine)
    rootless_gpu = container_prefix(img, ctx(gpus=True, uid=1000, gid=1000))
    assert_golden("container_podman.txt", cases(
        ("root, CPU, HPCGPU_PODMAN_ARGS set", pretty(root_cpu)), ("rootless, GPUs (CDI)", pretty(rootless_gpu))))


def test_pyxis_golden():
    img = ContainerSettings(runtime="pyxis", image="nvcr.io#nvidia/pytorch:25.01-py3",
                            binds=("/datasets:/data:ro",), extra_args=("--no-container-mount-home",))
    assert container_prefix(img, ctx()) == []  # pyxis options go on srun, not before the command
    # pretty() wants the last prefix word on its own line: here that is the last srun option.
    srun = ["srun", "--ntasks-per-node=1", *pyxis_srun_args(img, ctx(gpus=True, scheduler_env_names=SLURM_ENV_NAMES))]
    assert_golden("container_pyxis.txt", cases(("srun line of the sbatch script", pretty(srun))))


@pytest.mark.parametrize("runtime", ["apptainer", "docker", "podman", "pyxis"])
def test_rendered_line_survives_the_shell(runtime):
    # What an sbatch script holds must split back into the same argv (bash does what shlex does here).
    s = ContainerSettings(runtime=runtime, image="img")
    argv = (pyxis_srun_args(s, ctx()) if runtime == "pyxis" else container_prefix(s, ctx())) + NODE_CMD
    assert shlex.split(render_shell(argv)) == argv
    assert any(CODE in a for a in argv)
