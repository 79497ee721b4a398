"""slurm/cluster.sh's /etc/hosts handling, on a copy: it maps node1-node3 to their namespace
addresses, replaces only lines it wrote (including the 127.0.0.1 lines of the layout before the
node namespaces), and refuses to fight a mapping someone else wrote. The functions are sourced."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers.paths import REPO

OURS = ("10.231.1.1 node1 # hpcgpu-dev-cluster\n"
        "10.231.1.2 node2 # hpcgpu-dev-cluster\n"
        "10.231.1.3 node3 # hpcgpu-dev-cluster\n")


def call(hosts: Path, function: str) -> subprocess.CompletedProcess:
    """Run one cluster.sh function with HOSTS pointing at a copy (arguments, never spliced)."""
    return subprocess.run(
        ["bash", "-c", 'source "$1" && HOSTS="$2" && NET=10.231.1 && "$3"', "bash",
         str(REPO / "slurm/cluster.sh"), str(hosts), function],
        capture_output=True, text=True, timeout=30)


def test_up_replaces_the_old_loopback_lines_and_keeps_everything_else(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.1 vm\n127.0.0.1 node1\n127.0.0.1 node2\n# node1 here\n")
    out = call(hosts, "install_hosts")
    assert out.returncode == 0, out.stderr
    assert hosts.read_text() == "127.0.0.1 localhost\n127.0.0.1 vm\n# node1 here\n" + OURS


def test_up_twice_writes_the_lines_once(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    assert call(hosts, "install_hosts").returncode == 0
    again = call(hosts, "install_hosts")
    assert again.returncode == 0 and "mapped" not in again.stderr, again.stderr
    assert hosts.read_text() == "127.0.0.1 localhost\n" + OURS


def test_up_refuses_a_node_name_mapped_by_someone_else(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n192.0.2.7 gpu7 node2\n")
    out = call(hosts, "install_hosts")
    assert out.returncode != 0
    assert "192.0.2.7 gpu7 node2" in out.stderr and "did not write" in out.stderr
    assert hosts.read_text() == "127.0.0.1 localhost\n192.0.2.7 gpu7 node2\n"


def test_up_refuses_the_third_node_mapped_by_someone_else_too(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n192.0.2.8 gpu8 node3 # theirs\n")
    out = call(hosts, "install_hosts")
    assert out.returncode != 0 and "192.0.2.8 gpu8 node3" in out.stderr, out.stderr


def test_down_removes_only_our_lines(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + OURS + "10.0.0.9 other\n")
    out = call(hosts, "remove_hosts")
    assert out.returncode == 0, out.stderr
    assert hosts.read_text() == "127.0.0.1 localhost\n10.0.0.9 other\n"
