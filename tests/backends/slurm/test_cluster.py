"""The local cluster is a real two-node Slurm: sbatch + srun span node1 and node2, which are apart
on the network (a namespace, an address and a host name each; slurm/cluster.sh)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO
from tests.helpers.lock_holders import lock_holders
from tests.helpers.slurm_cluster import NET

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


def test_node_names_resolve_to_two_addresses_in_the_cluster_network(slurm_cluster):
    addrs = [ipaddress.ip_address(socket.gethostbyname(node)) for node in slurm_cluster]
    assert all(addr in NET for addr in addrs), addrs
    assert len(set(addrs)) == len(addrs), addrs


#: Run on each node of a 2-node step: the address and interface that route to the other node, and
#: one TCP connection from node 0 to node 1 whose source address node 1 reports.
PROBE = r"""
import json, os, socket, subprocess, sys, time
from pathlib import Path

out = Path(sys.argv[1])
me = os.environ["SLURMD_NODENAME"]
other = {"node1": "node2", "node2": "node1"}[me]
other_addr = socket.gethostbyname(other)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:  # connect() only picks the route
    udp.connect((other_addr, 9))
    src = udp.getsockname()[0]
route = subprocess.run(["ip", "-o", "route", "get", other_addr], capture_output=True, text=True).stdout.split()
report = {"node": me, "hostname": socket.gethostname(), "src": src, "dev": route[route.index("dev") + 1]}
if os.environ["SLURM_NODEID"] == "1":
    with socket.create_server((src, 0)) as server:
        server.settimeout(60)
        (out / "port.tmp").write_text(str(server.getsockname()[1]))
        (out / "port.tmp").rename(out / "port")
        conn, peer = server.accept()
        with conn:
            report["peer"] = peer[0]
            report["said"] = conn.recv(64).decode()
else:
    deadline = time.monotonic() + 60
    while not (out / "port").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    with socket.create_connection((other_addr, int((out / "port").read_text())), timeout=30) as conn:
        conn.sendall(me.encode())
(out / f"{me}.json").write_text(json.dumps(report))
"""


def test_the_two_nodes_are_apart_on_the_network(slurm, cancel_jobs, tmp_path):
    # Each node has its own address on the interface that routes to the other, its own host name,
    # and a connection between them arrives from the sender's address: nothing goes over loopback.
    (tmp_path / "probe.py").write_text(PROBE)
    script = (
        "#!/bin/bash\n"
        "#SBATCH --nodes=2 --ntasks-per-node=1 --time=1\n"
        f"#SBATCH --output={tmp_path}/out.txt\n"
        f"srun {sys.executable} {tmp_path}/probe.py {tmp_path}\n"
    )
    job = slurm.sbatch(script, tmp_path)
    cancel_jobs.append(job)
    info = slurm.wait_job_final(job, timeout_s=60)

    assert info.state == "COMPLETED", (tmp_path / "out.txt").read_text()
    node1, node2 = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("node1", "node2"))
    assert (node1["hostname"], node2["hostname"]) == ("node1", "node2")
    assert node1["src"] != node2["src"]
    assert ipaddress.ip_address(node1["src"]) in NET and ipaddress.ip_address(node2["src"]) in NET
    assert node1["dev"] != "lo" and node2["dev"] != "lo"
    assert node2["peer"] == node1["src"] and node2["said"] == "node1"
    assert node1["src"] == socket.gethostbyname("node1") and node2["src"] == socket.gethostbyname("node2")


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
    holders = lock_holders(lock, lambda comm: comm in ("slurmctld", "slurmd", "slurmstepd", "munged"))
    assert not holders, f"{holders} hold {lock}"
