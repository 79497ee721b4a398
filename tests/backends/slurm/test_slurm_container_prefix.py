"""The container prefix of a Slurm node (planner.container_parts), built from the submit host's facts
(docs/containers.md): docker/podman run as the submitting user, mount the code, run and checkpoint
directories, get /dev/infiniband when the submit host has it, the SLURM_* variables by name, the
machine's HPCGPU_<RUNTIME>_ARGS and the user's NCCL_* names; with GPUs the line starts with
`python -m hpcgpu.backends.slurm.node_gpus --` (the job's GPUs are known only on the node)."""

from __future__ import annotations

from hpcgpu.host.spec import parse_spec
from tests.helpers.plans import plan_for

PY = "/venv/bin/python"


def prefix(spec_text: str, **facts_over) -> list[str]:
    plan = plan_for(parse_spec(spec_text), backend="slurm", run_id="t-1", run_dir="/shared/runs/t-1",
                    python=PY, **facts_over)
    return list(plan.container_prefix)


DOCKER_1GPU = ("container: {runtime: docker, image: img}\nresources: {gpus_per_node: 1}\n"
               "checkpoint: {dir: /scratch/ada/ckpt}\n")


def test_a_one_gpu_docker_node_gets_the_jobs_gpus_on_the_node():
    got = prefix(DOCKER_1GPU)
    assert got[:4] == [PY, "-m", "hpcgpu.backends.slurm.node_gpus", "--"]
    assert got[4:6] == ["docker", "run"]
    assert "--gpus" not in got  # never every GPU of the node


def test_docker_runs_as_the_submitting_user_and_group():
    got = prefix(DOCKER_1GPU, uid=1234, gid=5678)
    i = got.index("--user")
    assert got[i + 1] == "1234:5678"


def test_docker_mounts_a_checkpoint_dir_outside_the_run_dir():
    got = prefix(DOCKER_1GPU)
    assert "/scratch/ada/ckpt:/scratch/ada/ckpt" in got


def test_docker_gets_infiniband_when_the_submit_host_has_it():
    assert "/dev/infiniband" in prefix(DOCKER_1GPU, infiniband=True)
    assert "/dev/infiniband" not in prefix(DOCKER_1GPU, infiniband=False)


def test_docker_is_given_the_slurm_variables_by_name():
    got = prefix(DOCKER_1GPU)
    for name in ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_RESTART_COUNT", "HPCGPU_RDZV_ENDPOINT"):
        assert name in got and got[got.index(name) - 1] == "-e"


def test_docker_takes_the_machines_args_and_the_users_nccl_names_from_the_environment():
    got = prefix(DOCKER_1GPU, environ={"HPCGPU_DOCKER_ARGS": "--runtime runc", "NCCL_DEBUG": "INFO"})
    assert got[-3:] == ["--runtime", "runc", "img"]
    assert got[got.index("NCCL_DEBUG") - 1] == "-e"
    assert "INFO" not in got  # the value stays in the environment


def test_a_cpu_docker_node_is_not_wrapped_for_gpus():
    got = prefix("container: {runtime: docker, image: img}\nresources: {gpus_per_node: 0}\n",
                 environ={"HPCGPU_DOCKER_ARGS": "--runtime runc"})
    assert got[:2] == ["docker", "run"]
    assert got[-3:] == ["--runtime", "runc", "img"]


def test_a_one_gpu_apptainer_node_gets_nv_and_the_machines_args():
    got = prefix("container: {runtime: apptainer, image: /images/x.sif}\nresources: {gpus_per_node: 1}\n",
                 environ={"HPCGPU_APPTAINER_ARGS": "--writable-tmpfs"})
    assert got[:3] == ["apptainer", "exec", "--nv"]
    assert got[-2:] == ["--writable-tmpfs", "/images/x.sif"]
