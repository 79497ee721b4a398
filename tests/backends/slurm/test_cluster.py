"""The local cluster is a real two-node Slurm: sbatch + srun span node1 and node2."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

pytestmark = pytest.mark.slurm


def test_two_node_job_gives_node_ids_0_and_1(slurm, cancel_jobs, tmp_path):
    script = (
        "#!/bin/bash\n"
        "#SBATCH --nodes=2 --ntasks-per-node=1 --time=1\n"
        f"#SBATCH --output={tmp_path}/out.txt\n"
        "srun bash -c 'echo \"node $SLURM_NODEID $SLURMD_NODENAME $SLURM_JOB_NODELIST\"'\n"
    )
    job = slurm.sbatch(script, tmp_path)
    cancel_jobs.append(job)
    info = slurm.wait_job_final(job, timeout_s=45)

    assert info.state == "COMPLETED", info.raw
    lines = sorted(line for line in (tmp_path / "out.txt").read_text().splitlines() if line.startswith("node "))
    assert lines == ["node 0 node1 node[1-2]", "node 1 node2 node[1-2]"]


def test_job_can_use_two_cpus_per_node(slurm, cancel_jobs, tmp_path):
    # A node agent with 2 CPU ranks asks for cpus_per_task=2 on each node.
    script = (
        "#!/bin/bash\n"
        "#SBATCH --nodes=2 --ntasks-per-node=1 --cpus-per-task=2 --time=1\n"
        f"#SBATCH --output={tmp_path}/out.txt\n"
        "srun bash -c 'echo \"cpus $SLURM_NODEID $SLURM_CPUS_PER_TASK\"'\n"
    )
    job = slurm.sbatch(script, tmp_path)
    cancel_jobs.append(job)
    assert slurm.wait_job_final(job).state == "COMPLETED"
    lines = sorted(line for line in (tmp_path / "out.txt").read_text().splitlines() if line.startswith("cpus "))
    assert lines == ["cpus 0 2", "cpus 1 2"]


def test_node_names_resolve_for_rendezvous(slurm_cluster):
    for node in slurm_cluster:
        assert socket.gethostbyname(node) == "127.0.0.1"


def test_config_is_the_dev_cluster_one(slurm_cluster):
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    config = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition("=") for line in out.stdout.splitlines()) if v
    )
    assert config["SLURM_CONF"] == "/etc/slurm/slurm.conf"
    assert config["ClusterName"] == "hpcgpu-dev"
    assert config["JobRequeue"] == "1"
    assert config["AccountingStorageType"] == "accounting_storage/none"  # no sacct


@pytest.mark.skipif(os.geteuid() != 0, reason="cluster.sh up needs root")
def test_cluster_sh_up_is_a_noop_when_up_and_status_succeeds(slurm_cluster):
    up = subprocess.run(["bash", str(REPO / "slurm/cluster.sh"), "up"], capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    assert "already up" in up.stderr and "starting" not in up.stderr, up.stderr
    status = subprocess.run(["bash", str(REPO / "slurm/cluster.sh"), "status"], capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    assert "node1" in status.stdout and "node2" in status.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="reading other processes' fds needs root")
def test_no_daemon_holds_the_cluster_sh_lock(slurm_cluster):
    # A daemon that inherits cluster.sh's flock fd holds the lock for its whole life, and every later
    # `cluster.sh up` then waits 120 s for it (this is what failed the first CI run).
    lock = Path(os.environ.get("HPCGPU_SLURM_DIR", "/tmp/hpcgpu-slurm")) / ".lock"
    holders = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            if comm not in ("slurmctld", "slurmd", "slurmstepd", "munged"):
                continue
            if any(os.readlink(fd) == str(lock) for fd in (proc / "fd").iterdir()):
                holders.append(f"{comm} (pid {proc.name})")
        except OSError:
            continue  # exited while we looked
    assert not holders, f"{holders} hold {lock}"
