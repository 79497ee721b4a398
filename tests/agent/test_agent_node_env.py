"""The node agent's environment for the ranks (secret values from withheld, then the node's
environment, else a clear refusal) and its reading of the ranks' exit markers."""

from __future__ import annotations

import json
import os

import pytest

from hpcgpu.agent.node import _stopped_markers, rank_environment, ranks_done, torch_defaults_kept
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import REDACTED
from tests.helpers.plans import plan_for

PLAN = plan_for("resources: {gpus_per_node: 0}\nenv: {HF_TOKEN: t0k, MY_FLAG: 'on', EMPTY: ''}\n")


def test_the_plan_holds_the_secret_redacted_and_the_rest_as_is():
    assert PLAN.env["HF_TOKEN"] == REDACTED and PLAN.env["MY_FLAG"] == "on"


def test_withheld_values_come_first():
    out = rank_environment(PLAN, {"HF_TOKEN": "from-env"}, {"HF_TOKEN": "from-launch"})
    assert out["HF_TOKEN"] == "from-launch"


def test_then_the_nodes_environment():
    out = rank_environment(PLAN, {"HF_TOKEN": "from-env"}, {})
    assert out["HF_TOKEN"] == "from-env"


def test_non_secret_values_pass_through_unchanged():
    out = rank_environment(PLAN, {"HF_TOKEN": "x", "MY_FLAG": "node-value"}, {"MY_FLAG": "withheld-value"})
    # the plan's value, whatever the node's environment or withheld say (the plan decided it)
    assert out["MY_FLAG"] == "on" and out["EMPTY"] == ""
    assert out["HPCGPU_PLAN_FILE"] == PLAN.env["HPCGPU_PLAN_FILE"]
    assert set(out) == set(PLAN.env)


@pytest.mark.parametrize("environ", [{}, {"HF_TOKEN": REDACTED}])
def test_a_secret_nobody_has_is_refused_naming_it(environ):
    with pytest.raises(UserError) as info:
        rank_environment(PLAN, environ, {"OTHER_TOKEN": "x"})
    assert "env.HF_TOKEN" in info.value.message and "looks like a secret" in info.value.message
    assert info.value.hint.startswith("export HF_TOKEN ")


# ---------------------------------------------------------------- exit markers


def marker(run_dir, rank, status, mtime):
    path = run_dir / "exit" / f"rank{rank}.json"
    path.write_text(json.dumps({"rank": rank, "status": status}))
    os.utime(path, (mtime, mtime))
    return path


def test_only_stop_markers_of_this_attempt_count(tmp_path):
    (tmp_path / "exit").mkdir()
    since = 1_700_000_000.0
    marker(tmp_path, 0, "stopped", since + 5)
    marker(tmp_path, 1, "stopped", since - 5)  # an earlier attempt's
    marker(tmp_path, 2, "done", since + 5)
    marker(tmp_path, 3, "stopped", since)  # written at the very start of the attempt: counts
    (tmp_path / "exit" / "rank4.json").write_text("{broken")
    (tmp_path / "exit" / "notes.json").write_text(json.dumps({"status": "stopped"}))
    found = sorted(m["rank"] for m in _stopped_markers(tmp_path, since))
    assert found == [0, 3]


def test_a_signal_after_every_rank_of_this_node_finished_is_not_an_interruption(tmp_path):
    """A Ctrl-C that reaches the agent while its ranks exit after finishing: the run is done."""
    (tmp_path / "exit").mkdir()
    since = 1_700_000_000.0
    for rank in (2, 3):  # node 1 of 2 x 2 ranks
        marker(tmp_path, rank, "done", since + 5)
    marker(tmp_path, 0, "stopped", since + 5)  # another node's rank: not this node's business
    assert ranks_done(tmp_path, since, range(2, 4))
    assert not ranks_done(tmp_path, since, range(0, 2))  # rank 0 stopped, rank 1 never wrote
    assert not ranks_done(tmp_path, since + 10, range(2, 4))  # an earlier attempt's markers
    (tmp_path / "exit" / "rank3.json").write_text("{broken")
    assert not ranks_done(tmp_path, since, range(2, 4))


def test_no_markers_or_no_exit_dir_is_none(tmp_path):
    assert _stopped_markers(tmp_path, 0.0) == []
    (tmp_path / "exit").mkdir()
    marker(tmp_path, 0, "done", 10.0)
    assert _stopped_markers(tmp_path, 0.0) == []


# ---------------------------------------------------------------- several nodes: the network


def two_node_facts(endpoint: str, node_rank: int = 1):
    from hpcgpu.contract.node import NodeFacts

    return NodeFacts(nnodes=2, node_rank=node_rank, endpoint=endpoint, rdzv_id="r", restarts=0, host="h")


def test_several_nodes_get_the_interface_toward_the_endpoint_for_gloo_and_nccl_and_the_reason():
    from hpcgpu.agent.node import network_environment
    from tests.agent.test_agent_rendezvous import non_loopback_address

    addr = non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    address, added = network_environment(two_node_facts(f"{addr}:29400"), {"NCCL_SOCKET_IFNAME": "ib0"})
    assert address.addr == addr and address.ifname != "lo"
    assert added["GLOO_SOCKET_IFNAME"] == address.ifname and "NCCL_SOCKET_IFNAME" not in added
    assert f"{addr}:29400" in added["HPCGPU_NETWORK"] and "NCCL_SOCKET_IFNAME=ib0 (yours, kept)" in added["HPCGPU_NETWORK"]


def test_several_nodes_advertise_the_chosen_address_and_bind_the_stores_to_it():
    from hpcgpu.agent.node import _launch_config
    from hpcgpu.contract.netaddr import NodeAddress

    plan = plan_for("resources: {nodes: 2, gpus_per_node: 0}\n",
                    environ={"HPCGPU_NODE_RANK": "0", "HPCGPU_RDZV_ENDPOINT": "10.231.10.1:29400"})
    address = NodeAddress(addr="10.231.10.1", ifname="veth-a", reason="test")
    config = _launch_config(plan, two_node_facts("10.231.10.1:29400", node_rank=0), {}, None, address)
    assert config.local_addr == "10.231.10.1"  # MASTER_ADDR on the head: not the host name
    assert config.rdzv_configs["bind"] == "10.231.10.1" and config.rdzv_configs["loopback"] is False
    assert '"nproc_per_node": 2' in config.rdzv_configs["plan"]  # what node 0 and the others compare


def test_node_0_away_from_the_endpoint_is_refused_before_it_waits_alone():
    """Two nodes started with --node-rank 0: the one not at the endpoint would serve a rendezvous nobody joins."""
    from hpcgpu.agent.node import network_environment
    from tests.agent.test_agent_rendezvous import non_loopback_address

    addr = non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    endpoint = "203.0.113.1:29400"  # TEST-NET-3: routable wherever non_loopback_address found addr, never held here
    with pytest.raises(UserError) as info:
        network_environment(two_node_facts(endpoint, node_rank=0), {})
    assert f"node 0 must run on the node at the rendezvous endpoint {endpoint}" in info.value.message
    assert "--node-rank 0" in info.value.hint
    _, added = network_environment(two_node_facts(endpoint, node_rank=1), {})  # another node: fine
    assert added["GLOO_SOCKET_IFNAME"] != "lo"


def test_ranks_get_torchs_own_async_error_handling_not_torch_elastics_1():
    # torch elastic's LocalElasticAgent would hand every rank TORCH_NCCL_ASYNC_ERROR_HANDLING=1
    assert torch_defaults_kept({}) == {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "3"}


def test_an_async_error_handling_the_user_set_stays_whatever_its_value():
    assert torch_defaults_kept({"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}) == {}
    assert torch_defaults_kept({"TORCH_NCCL_ASYNC_ERROR_HANDLING": ""}) == {}
