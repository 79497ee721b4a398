"""What the rendezvous checks and decides when several nodes meet: one plan on every node, one node
per node rank, and global ranks numbered by node rank (real TCPStores on loopback; the whole run over
two network namespaces is tests/backends/local/test_local_multinode_netns.py)."""

from __future__ import annotations

import json
import pickle

import pytest
from torch.distributed.elastic.rendezvous import RendezvousParameters
from torch.distributed.elastic.rendezvous.api import RendezvousError
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import _NodeDesc

from hpcgpu.agent import elastic, rendezvous
from hpcgpu.agent.agreement import differences, shared_view
from hpcgpu.agent.rendezvous import _agree_on_plan, _arrive, _create_rdzv_handler, _tcp_store, describe_rdzv_failure
from hpcgpu.contract.node import NodeFacts
from tests.helpers.plans import plan_for

NODE0 = {"HPCGPU_NODE_RANK": "0", "HPCGPU_RDZV_ENDPOINT": "10.0.0.1:29400"}


def two_node_plan(spec: str = "", **over):
    return plan_for("resources: {nodes: 2, gpus_per_node: 0}\n" + spec, environ=NODE0, **over)


@pytest.fixture
def store():
    return _tcp_store("127.0.0.1", 0, is_master=True, loopback=True, timeout_s=30)


def test_nodes_may_differ_only_in_where_their_files_go():
    a = two_node_plan("checkpoint: {dir: /scratch/a}\n", cwd="/home/a", run_dir="/home/a/runs/demo-1")
    b = two_node_plan("checkpoint: {dir: /scratch/b}\n", cwd="/home/b", run_dir="/home/b/runs/demo-1-node1")
    assert differences(shared_view(a), shared_view(b)) == []


def test_another_proc_count_or_run_id_is_named_with_both_values():
    a = shared_view(two_node_plan())
    b = shared_view(plan_for("resources: {nodes: 2, gpus_per_node: 0, procs_per_node: 4}\n", environ=NODE0, run_id="x"))
    lines = differences(b, a)
    assert "nproc_per_node: 4 here, 2 on node 0" in lines and 'run_id: "x" here, "demo-1" on node 0' in lines


def test_a_node_with_another_plan_is_refused_and_node_0_can_say_why(store, monkeypatch):
    head = json.dumps(shared_view(two_node_plan()))
    mine = json.dumps(shared_view(two_node_plan("train: {lr: 0.5}\n")))
    _agree_on_plan(store, True, 0, head)
    _arrive(store, "demo-1", 0)
    with pytest.raises(RendezvousError) as info:
        _agree_on_plan(store, False, 1, mine)
    assert "node 1 was started with another plan than node 0" in str(info.value) and "spec.train.lr: 0.5 here" in str(info.value)
    # node 0 times out waiting for node 1; its report carries node 1's reason
    monkeypatch.setattr(rendezvous, "_rdzv", {"store": store, "run_id": "demo-1"})
    role = NodeFacts(nnodes=2, node_rank=0, endpoint="10.0.0.1:29400", rdzv_id="demo-1", restarts=0, host="h")
    report = describe_rdzv_failure(RendezvousError("timed out"), role, 30)
    assert "missing: node 1" in report and "refused: node 1 was started with another plan" in report


def test_the_same_plan_joins(store):
    view = json.dumps(shared_view(two_node_plan()))
    _agree_on_plan(store, True, 0, view)
    _agree_on_plan(store, False, 1, view)


def test_two_nodes_with_one_node_rank_are_refused(store):
    _arrive(store, "run-1", 1)
    _arrive(store, "run-1", 0)
    store_again = _tcp_store("127.0.0.1", store.port, is_master=False, loopback=True, timeout_s=30)
    store_again.set("hpcgpu/run-1/arrived/1", "other-host (pid 1)")  # as if another node had arrived first
    with pytest.raises(RendezvousError, match=r"node rank 1 is taken: other-host \(pid 1\) arrived with it first"):
        _arrive(store, "run-1", 1)


def test_global_ranks_follow_node_ranks_not_addresses():
    ranked = elastic.ranked_node_class()
    # "10.0.0.10" sorts before "10.0.0.9" as text: torch alone would make node 1 the holder of rank 0
    head, other = ranked("10.0.0.9", 100, 0, 0), ranked("10.0.0.10", 200, 0, 1)
    assert sorted([other, head]) == [head, other]
    assert sorted([_NodeDesc("10.0.0.9", 100, 0), _NodeDesc("10.0.0.10", 200, 0)])[0].addr == "10.0.0.10"


def test_the_ranked_node_survives_the_rendezvous_state_pickle():
    node = elastic.ranked_node_class()("10.0.0.9", 100, 3, 1)
    again = pickle.loads(pickle.dumps(node))
    assert again == node and hash(again) == hash(node) and again.node_rank == 1
    assert type(again).__module__ == "hpcgpu.agent.elastic" and {again: 0}[node] == 0


def test_the_real_handler_carries_the_node_rank_into_the_rendezvous(monkeypatch):
    monkeypatch.setattr(rendezvous, "_rdzv", {})
    params = RendezvousParameters(backend="hpcgpu", endpoint="127.0.0.1:0", run_id="job-9", min_nodes=1,
                                  max_nodes=1, is_host=True, loopback=True, node_rank=0, join_timeout=30)
    handler = _create_rdzv_handler(params)
    assert handler._this_node.node_rank == 0 and handler._op_executor._node is handler._this_node


def test_a_head_whose_endpoint_port_is_taken_says_so(monkeypatch):
    import socket

    from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError

    monkeypatch.setattr(rendezvous, "_rdzv", {})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        endpoint = f"127.0.0.1:{taken.getsockname()[1]}"
        params = RendezvousParameters(backend="hpcgpu", endpoint=endpoint, run_id="job-5", min_nodes=2,
                                      max_nodes=2, is_host=True, loopback=False, node_rank=0, join_timeout=5,
                                      bind="127.0.0.1")
        with pytest.raises(RendezvousConnectionError, match=f"could not listen on {endpoint}.*in use"):
            _create_rdzv_handler(params)
