"""The Slurm backend's node half: the job's key and restart count, and where a node agent sits."""

from __future__ import annotations

import socket

import pytest

from hpcgpu.backends import node_facts as any_node_facts
from hpcgpu.backends.slurm.node import job_key, job_restarts, node_facts
from hpcgpu.contract.errors import UserError
from tests.helpers.plans import plan_for

TWO_NODES = plan_for("resources: {nodes: 2, gpus_per_node: 2}\n", backend="slurm", run_id="two-1")
ONE_NODE = plan_for("resources: {nodes: 1, gpus_per_node: 2}\n", backend="slurm", run_id="one-1")


@pytest.mark.parametrize("requeues, environ, expected", [
    (0, {}, 0),
    (0, {"SLURM_RESTART_COUNT": ""}, 0),
    (2, {}, 2),
    (0, {"SLURM_RESTART_COUNT": "3"}, 3),
    (2, {"SLURM_RESTART_COUNT": "3"}, 3),
    (4, {"SLURM_RESTART_COUNT": "1"}, 4),
])
def test_job_restarts_is_the_larger_count(requeues, environ, expected):
    assert job_restarts(requeues, environ) == expected


def test_job_restarts_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("SLURM_RESTART_COUNT", "5")
    assert job_restarts(1) == 5


@pytest.mark.parametrize("environ, key", [
    ({"SLURM_ARRAY_JOB_ID": "100", "SLURM_ARRAY_TASK_ID": "7", "SLURM_JOB_ID": "107"}, "100_7"),
    ({"SLURM_ARRAY_JOB_ID": "100", "SLURM_JOB_ID": "107"}, "100_0"),
    ({"SLURM_JOB_ID": "55"}, "55"),
    ({"SLURM_ARRAY_JOB_ID": "", "SLURM_JOB_ID": "55"}, "55"),
    ({}, "local"),
])
def test_job_key(environ, key):
    assert job_key(environ) == key


def test_a_second_node_takes_its_rank_endpoint_and_restarts_from_its_environment():
    node = node_facts(TWO_NODES, {"SLURM_NODEID": "1", "HPCGPU_RDZV_ENDPOINT": "n0:29500", "SLURM_JOB_ID": "9",
                                  "HPCGPU_JOB_RESTARTS": "2", "SLURMD_NODENAME": "n1"})
    assert (node.nnodes, node.node_rank, node.endpoint, node.rdzv_id, node.restarts, node.host) == (
        2, 1, "n0:29500", "9-2", 2, "n1")
    assert not node.is_head


def test_node_zero_is_the_head():
    node = node_facts(TWO_NODES, {"SLURM_NODEID": "0", "HPCGPU_RDZV_ENDPOINT": "n0:1", "SLURM_JOB_ID": "9"})
    assert node.node_rank == 0 and node.is_head and node.restarts == 0 and node.rdzv_id == "9-0"


def test_several_nodes_need_the_published_endpoint():
    for environ in ({"SLURM_NODEID": "1", "SLURM_JOB_ID": "9"},
                    {"SLURM_NODEID": "1", "SLURM_JOB_ID": "9", "HPCGPU_RDZV_ENDPOINT": ""}):
        with pytest.raises(UserError, match="HPCGPU_RDZV_ENDPOINT is not set") as info:
            node_facts(TWO_NODES, environ)
        assert "2 nodes" in info.value.message and "NodeCommand" in info.value.hint


def test_the_rendezvous_id_changes_with_every_restart():
    base = {"SLURM_NODEID": "0", "HPCGPU_RDZV_ENDPOINT": "n0:1", "SLURM_JOB_ID": "9"}
    ids = [node_facts(TWO_NODES, {**base, "SLURM_RESTART_COUNT": str(n)}).rdzv_id for n in range(3)]
    assert ids == ["9-0", "9-1", "9-2"]
    # NodeCommand's own count (exported to the agent) is what the node uses when it is there
    node = node_facts(TWO_NODES, {**base, "SLURM_RESTART_COUNT": "1", "HPCGPU_JOB_RESTARTS": "3"})
    assert (node.restarts, node.rdzv_id) == (3, "9-3")


def test_array_jobs_meet_under_their_array_key():
    node = node_facts(TWO_NODES, {"SLURM_NODEID": "0", "HPCGPU_RDZV_ENDPOINT": "n0:1", "SLURM_JOB_ID": "107",
                                  "SLURM_ARRAY_JOB_ID": "100", "SLURM_ARRAY_TASK_ID": "7"})
    assert node.rdzv_id == "100_7-0"


def test_a_single_node_runs_on_loopback_without_an_endpoint():
    node = node_facts(ONE_NODE, {"SLURM_NODEID": "0", "SLURM_JOB_ID": "9", "SLURM_RESTART_COUNT": "1"})
    assert (node.nnodes, node.node_rank, node.endpoint, node.rdzv_id, node.restarts) == (1, 0, "127.0.0.1:0", "9-1", 1)
    assert node.is_head and node.host == socket.gethostname()


def test_the_registry_sends_slurm_plans_to_this_node_half():
    node = any_node_facts(TWO_NODES, {"SLURM_NODEID": "1", "HPCGPU_RDZV_ENDPOINT": "n0:2", "SLURM_JOB_ID": "3"})
    assert (node.node_rank, node.endpoint, node.rdzv_id) == (1, "n0:2", "3-0")
