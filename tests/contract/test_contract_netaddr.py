"""The address and interface a node of a multi-node run uses (contract/netaddr.py): the pure rule,
table-driven, and the same rule on this machine's real interfaces. The multi-node run over real
network namespaces is tests/backends/local/test_local_multinode_netns.py."""

from __future__ import annotations

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.contract.netaddr import (choose_node_address, ifname_defaults, ipv4_interfaces, node_address,
                                     split_endpoint)
from tests.agent.test_agent_rendezvous import non_loopback_address

#: two "hosts" as in the namespace test: veth ends holding 10.231.10.1 and 10.231.10.2
HEAD = {"lo": ["127.0.0.1"], "veth-a": ["10.231.10.1"]}
OTHER = {"lo": ["127.0.0.1"], "veth-b": ["10.231.10.2"]}


def test_the_head_uses_the_interface_holding_its_own_address_not_lo():
    # the kernel routes a packet to one's own address through lo; the other nodes reach veth-a
    choice = choose_node_address("10.231.10.1:29400", "10.231.10.1", "10.231.10.1", HEAD)
    assert (choice.addr, choice.ifname) == ("10.231.10.1", "veth-a")


def test_another_node_uses_its_source_address_toward_the_endpoint():
    choice = choose_node_address("10.231.10.1:29400", "10.231.10.1", "10.231.10.2", OTHER)
    assert (choice.addr, choice.ifname) == ("10.231.10.2", "veth-b")
    assert "10.231.10.1:29400" in choice.reason and "veth-b" in choice.reason


def test_a_named_endpoint_shows_the_address_it_resolved_to():
    choice = choose_node_address("head:29400", "10.231.10.1", "10.231.10.2", OTHER)
    assert "head:29400 (10.231.10.1)" in choice.reason


def test_a_secondary_address_is_found_and_a_real_interface_beats_lo():
    interfaces = {"lo": ["127.0.0.1", "10.0.0.5"], "eth1": ["192.168.1.4", "10.0.0.5"]}
    assert choose_node_address("10.0.0.5:1", "10.0.0.5", "10.0.0.5", interfaces).ifname == "eth1"


def test_an_address_no_interface_lists_sets_no_interface_and_says_so():
    choice = choose_node_address("10.1.0.1:1", "10.1.0.1", "10.9.9.9", HEAD)
    assert choice.addr == "10.9.9.9" and choice.ifname is None and "stay unset" in choice.reason


@pytest.mark.parametrize("source", ["127.0.0.1", "127.0.1.1"])
def test_a_loopback_endpoint_leaves_the_choice_to_torch_and_says_why(source):
    # e.g. the head's name mapped to 127.0.1.1 in /etc/hosts: advertising it would strand other machines
    choice = choose_node_address("node1:29400", source, source, HEAD)
    assert choice.addr is None and choice.ifname is None
    assert "loopback" in choice.reason and "GLOO_SOCKET_IFNAME" in choice.reason


def test_the_ranks_get_both_interface_variables_unless_the_user_set_them():
    choice = choose_node_address("10.231.10.1:29400", "10.231.10.1", "10.231.10.2", OTHER)
    added, notes = ifname_defaults(choice, {"NCCL_SOCKET_IFNAME": "ib0"})
    assert added == {"GLOO_SOCKET_IFNAME": "veth-b"}
    assert notes == ["GLOO_SOCKET_IFNAME=veth-b", "NCCL_SOCKET_IFNAME=ib0 (yours, kept)"]


@pytest.mark.parametrize("endpoint", ["node1", "node1:", ":29400", "node1:http", "node1:0", "node1:70000"])
def test_an_endpoint_without_a_valid_port_is_refused_with_an_example(endpoint):
    with pytest.raises(UserError) as info:
        split_endpoint(endpoint)
    assert repr(endpoint) in info.value.message and "HOST:PORT" in info.value.message
    assert "--rdzv-endpoint" in info.value.hint


def test_endpoints_split_into_host_and_port():
    assert split_endpoint("node1:29400") == ("node1", 29400)
    assert split_endpoint("[::1]:5") == ("::1", 5)


# ---------------------------------------------------------------- this machine's real interfaces


def test_this_machines_interfaces_include_loopback():
    assert "127.0.0.1" in ipv4_interfaces().get("lo", [])


def test_an_endpoint_on_a_real_interface_is_never_reached_through_lo():
    """The bug multi-node runs must not have: choosing `lo` (or the host name's address) for an
    endpoint that sits on a real interface (old code: gloo bound the host name's address)."""
    addr = non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    choice = node_address(f"{addr}:29400")
    assert choice.addr == addr
    assert choice.ifname not in (None, "lo") and addr in ipv4_interfaces()[choice.ifname]


def test_an_endpoint_that_does_not_resolve_is_a_user_error():
    with pytest.raises(UserError) as info:
        node_address("no-such-host.invalid:29400")
    assert "'no-such-host.invalid'" in info.value.message
