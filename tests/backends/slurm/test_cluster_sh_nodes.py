"""slurm/cluster.sh with HPCGPU_SLURM_NODES: more nodes go only into partition scale, the default three-node
slurm.conf stays byte for byte what it was (no scale), and nodes of a larger layout are found to be
removed. The functions are sourced; nothing starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers.paths import REPO


def call(script: str, nodes: str | None, scratch: Path) -> subprocess.CompletedProcess:
    """Source cluster.sh with HPCGPU_SLURM_NODES (unset for None) and a private HPCGPU_SLURM_DIR, then run `script`."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HPCGPU_SLURM_DIR": str(scratch)}
    if nodes is not None:
        env["HPCGPU_SLURM_NODES"] = nodes
    return subprocess.run(["bash", "-c", f'source "$1" && {script}', "bash", str(REPO / "slurm/cluster.sh")],
                          capture_output=True, text=True, timeout=30, env=env)


def test_three_nodes_render_the_template_alone(tmp_path):
    default = call("render_conf", None, tmp_path)
    assert default.returncode == 0, default.stderr
    assert call("render_conf", "3", tmp_path).stdout == default.stdout
    assert "scale" not in default.stdout and "node4" not in default.stdout
    assert default.stdout.rstrip("\n").endswith("PartitionName=wide Nodes=node[1-3] MaxTime=INFINITE State=UP")


def test_eight_nodes_add_node4_to_node8_in_partition_scale_only(tmp_path):
    three = call("render_conf", None, tmp_path).stdout
    eight = call("render_conf", "8", tmp_path)
    assert eight.returncode == 0, eight.stderr
    assert eight.stdout.startswith(three)  # debug, wide and node1-node3 unchanged
    added = [line for line in eight.stdout[len(three):].splitlines() if not line.startswith("#")]
    assert added == [f"NodeName=node{n} NodeHostname=node{n} NodeAddr=10.231.1.{n} Port=17001 CPUs=4 RealMemory=8000 "
                     "State=UNKNOWN" for n in range(4, 9)] + ["PartitionName=scale Nodes=node[1-8] MaxTime=INFINITE State=UP"]


def test_every_node_gets_a_hosts_line(tmp_path):
    out = call('NET=10.231.1 && hosts_lines', "5", tmp_path)
    assert out.stdout.splitlines() == [f"10.231.1.{n} node{n} # hpcgpu-dev-cluster" for n in range(1, 6)]


def test_a_count_outside_3_to_64_is_refused(tmp_path):
    for bad in ("2", "65", "eight"):
        out = call("check_inputs", bad, tmp_path)
        assert out.returncode != 0 and "HPCGPU_SLURM_NODES must be an integer from 3 to 64" in out.stderr, (bad, out.stderr)


def test_a_slurmd_of_a_larger_layout_is_stale(tmp_path):
    (tmp_path / "run").mkdir()
    for node in ("node2", "node5", "node7"):
        (tmp_path / "run" / f"slurmd-{node}.pid").write_text("1\n")
    stale = call("stale_nodes", None, tmp_path).stdout.split()
    assert "node5" in stale and "node7" in stale and "node2" not in stale
    assert "node7" not in call("stale_nodes", "8", tmp_path).stdout.split()
