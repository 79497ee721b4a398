"""The local cluster is a real two-node Slurm: sbatch + srun span node1 and node2."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]


def test_two_node_job_gives_node_ids_0_and_1(slurm, cancel_jobs, tmp_path):
    script = (
        "#!/bin/bash\n"
        "#SBATCH --nodes=2 --ntasks-per-node=1 --time=1\n"
        f"#SBATCH --output={tmp_path}/out.txt\n"
        "srun bash -c 'echo \"node $SLURM_NODEID $SLURMD_NODENAME $SLURM_JOB_NODELIST\"'\n"
    )
    start = time.monotonic()
    job = slurm.sbatch(script, tmp_path)
    cancel_jobs.append(job)
    info = slurm.wait_job_final(job, timeout_s=45)
    elapsed = time.monotonic() - start

    assert info.state == "COMPLETED", info.raw
    lines = sorted(line for line in (tmp_path / "out.txt").read_text().splitlines() if line.startswith("node "))
    assert lines == ["node 0 node1 node[1-2]", "node 1 node2 node[1-2]"]
    assert elapsed < 30, f"a trivial 2-node job took {elapsed:.1f}s"


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
def test_cluster_sh_up_is_a_fast_noop_and_status_succeeds(slurm_cluster):
    start = time.monotonic()
    up = subprocess.run(["bash", str(REPO / "slurm/cluster.sh"), "up"], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - start
    assert up.returncode == 0, up.stderr
    assert "already up" in up.stderr
    assert elapsed < 5
    status = subprocess.run(["bash", str(REPO / "slurm/cluster.sh"), "status"], capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    assert "node1" in status.stdout and "node2" in status.stdout
