"""Two nodes without a scheduler, for real: one `hpcgpu run local --nnodes 2` per network namespace
(tests/helpers/netns.py: 10.231.10.1 and 10.231.10.2 joined by a veth pair, one host name), real
torch elastic rendezvous and gloo traffic across the veth. A choice that works only on loopback
(gloo on the host name's address, MASTER_ADDR = the host name, the interface `lo`) fails here: the
host name resolves to 127.0.0.1, which in each namespace is that namespace alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.netns import NetnsPair, tcp_sockets
from tests.helpers.relkit import base_env, faulty, hpcgpu, small_spec, write_spec

pytestmark = pytest.mark.slow

PORT = 29400


def node_command(ns, spec: Path, rank: int, endpoint: str, *extra: str) -> list[str]:
    return ns.argv(sys.executable, "-m", "hpcgpu", "run", "local", "-f", str(spec), "--nproc", "1", "--nnodes", "2",
                   "--node-rank", str(rank), "--rdzv-endpoint", endpoint, "--rdzv-id", "t1", *extra)


def wait_for(path: Path, procs: list[subprocess.Popen], timeout: float = 180) -> None:
    """Until path exists; fail early, with the output, if a node ended first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        ended = [p for p in procs if p.poll() is not None]
        if ended or time.monotonic() > deadline:
            for p in procs:
                p.kill()
            outputs = "\n".join(p.communicate()[0] for p in procs)
            pytest.fail(f"{path} did not appear ({'a node ended' if ended else 'timed out'}):\n{outputs}")
        time.sleep(0.05)


def test_two_nodes_in_two_namespaces_train_as_one_node_with_two_ranks_over_the_veth(tmp_path, netns_pair: NetnsPair):
    head, other = netns_pair.head, netns_pair.other
    endpoint = f"{head.addr}:{PORT}"
    env = base_env(tmp_path / "home")
    (tmp_path / "one").mkdir()
    # the baseline, 1 node x 2 ranks on the host's loopback, runs meanwhile (it shares nothing with the nodes)
    baseline = subprocess.Popen([sys.executable, "-m", "hpcgpu", "run", "local", "-f",
                                 str(write_spec(tmp_path / "one" / "job.yaml", small_spec(name="one"))), "--nproc", "2"],
                                cwd=tmp_path / "one", env=env, stdout=(tmp_path / "one" / "out.log").open("w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # rank 1 (node 1) holds at its 2nd step until `go`: every connection of the run is open meanwhile
        # a broken network choice fails within the timeouts (gloo cannot connect) instead of hanging
        spec = write_spec(tmp_path / "job.yaml", small_spec(name="mn", entry=faulty("gate", rank=1, step=2),
                                                             distributed={"timeout_s": 60, "rdzv_timeout_s": 60}))
        procs = [subprocess.Popen(node_command(ns, spec, rank, endpoint), cwd=tmp_path, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
                 for rank, ns in ((0, head), (1, other))]
        node1_dir = tmp_path / "runs" / "mn-t1-node1"
        wait_for(node1_dir / "fault-rank1.json", procs)

        listening = [local for local, _ in tcp_sockets(head, listening=True)]
        assert f"{head.addr}:{PORT}" in listening, listening  # the rendezvous store, on the head's address
        assert all(local.startswith(f"{head.addr}:") for local in listening), f"a server off the veth: {listening}"
        crossing = tcp_sockets(other, listening=False)
        assert f"{head.addr}:{PORT}" in {peer for _, peer in crossing}, crossing  # node 1's agent at the head's store
        assert len(crossing) >= 3, crossing  # agent store, ranks' store, gloo pair(s)
        assert all(local.startswith(f"{other.addr}:") and peer.startswith(f"{head.addr}:")
                   for local, peer in crossing), f"node 1 talks over loopback: {crossing}"

        (node1_dir / "go").touch()
        outputs = [p.communicate(timeout=180)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
        node1_status = hpcgpu(["status", str(node1_dir), "--json"], tmp_path, env)
        assert '"DONE"' in node1_status.stdout, node1_status.stdout + node1_status.stderr  # not LOST: its own result.json
        assert baseline.wait(timeout=180) == 0, (tmp_path / "one" / "out.log").read_text()
        (baseline_dir,) = (tmp_path / "one" / "runs").iterdir()
        node0_dir = tmp_path / "runs" / "mn-t1"
        final = json.loads((node0_dir / "summary.json").read_text())["final_loss"]
        assert final == json.loads((baseline_dir / "summary.json").read_text())["final_loss"]
        # global rank 0 on node 0 (the plan's rank table), and each node said which interface it used
        assert (node0_dir / "logs" / "rank0.log").exists() and (node1_dir / "logs" / "rank1.log").exists()
        assert f"node 0 network: {head.addr} on {head.ifname}" in outputs[0]
        assert f"node 1 network: {other.addr} on {other.ifname}" in (node1_dir / "logs" / "rank1.log").read_text()
    finally:
        if baseline.poll() is None:  # a failure above: end the baseline run and its ranks
            os.killpg(baseline.pid, signal.SIGKILL)


def test_each_node_picks_its_veth_never_lo_and_the_dry_run_says_so(tmp_path, netns_pair: NetnsPair):
    """The head's endpoint is its own address, which the kernel routes through lo: the interface must
    still be the veth that the other node reaches (GLOO_SOCKET_IFNAME=lo would strand node 1)."""
    head, other = netns_pair.head, netns_pair.other
    env = base_env(tmp_path / "home")
    spec = write_spec(tmp_path / "job.yaml", small_spec(name="dry"))
    for rank, ns in ((0, head), (1, other)):
        out = subprocess.run(node_command(ns, spec, rank, f"{head.addr}:{PORT}", "--dry-run"), cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"this node: node {rank} of 2" in out.stdout
        assert f"network:    {ns.addr} on {ns.ifname}:" in out.stdout
        assert f"GLOO_SOCKET_IFNAME={ns.ifname}, NCCL_SOCKET_IFNAME={ns.ifname}" in out.stdout


def test_a_hung_rank_on_node_1_is_named_by_node_0_and_both_nodes_end_hung(tmp_path, netns_pair: NetnsPair):
    """The watchdogs of the two agents pool their views on the rendezvous store: node 0 writes the
    one report, naming the rank on node 1 that never reached the collective rank 0 waits in."""
    head, other = netns_pair.head, netns_pair.other
    env = base_env(tmp_path / "home")
    spec = write_spec(tmp_path / "job.yaml", small_spec(name="mn", entry=faulty("pause", rank=1, step=3),
                                                         watchdog={"stall_s": 3},
                                                         distributed={"timeout_s": 600, "rdzv_timeout_s": 60}))
    procs = [subprocess.Popen(node_command(ns, spec, rank, f"{head.addr}:{PORT}"), cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
             for rank, ns in ((0, head), (1, other))]
    try:
        outputs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert [p.returncode for p in procs] == [76, 76], "\n".join(outputs)
    (md,) = (tmp_path / "runs" / "mn-t1").glob("hang-*.md")
    report = json.loads(md.with_suffix(".json").read_text())
    assert report["culprits"] == [1], md.read_text()
    ranks = {r["rank"]: r for r in report["ranks"]}
    assert (ranks[0]["node_rank"], ranks[1]["node_rank"]) == (0, 1)
    assert ranks[1]["flight"]["entered"] < ranks[0]["flight"]["entered"], md.read_text()
    assert "**Stalled: rank(s) 1 on node 1 (" in md.read_text()
    assert "hpcgpu: hang: rank(s) 1 on node 1 (" in outputs[0] and "hpcgpu: hang: rank(s) 1 on node 1 (" in outputs[1]
    assert not list((tmp_path / "runs" / "mn-t1-node1").glob("hang-*.md"))  # one report, on node 0
