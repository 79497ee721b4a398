"""The node agents' rendezvous: a single node's store listens on loopback only (checked on the real
listening socket), the handler hpcgpu registers carries its adjustments, and a failed rendezvous
names the nodes that arrived and those that did not (read from a real TCPStore)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from torch.distributed.elastic.rendezvous import RendezvousParameters
from torch.distributed.elastic.rendezvous.api import RendezvousTimeoutError

from hpcgpu.agent import rendezvous
from hpcgpu.agent.rendezvous import _arrival_key, _create_rdzv_handler, _tcp_store, describe_rdzv_failure
from hpcgpu.contract.node import NodeFacts


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on TCP port (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            addr, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            if len(addr) == 8:  # IPv4, little-endian
                found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]))
            else:  # IPv6: four little-endian 32-bit words
                raw = b"".join(bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, 32, 8))
                found.add(socket.inet_ntop(socket.AF_INET6, raw))
    return found


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("203.0.113.1", 9))
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


needs_proc = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="no /proc/net/tcp here")


@needs_proc
def test_a_single_node_store_listens_on_loopback_only():
    store = _tcp_store("127.0.0.1", 0, is_master=True, loopback=True, timeout_s=30)
    port = store.port
    assert port > 0
    assert listening_addresses(port) == {"127.0.0.1"}
    assert connects("127.0.0.1", port)
    other = non_loopback_address()
    if other is not None:
        assert not connects(other, port), f"the loopback store answered on {other}"
    # a node agent (not the master) reaches it
    client = _tcp_store("127.0.0.1", port, is_master=False, loopback=True, timeout_s=30)
    store.set("k", "v")
    assert client.get("k") == b"v"


@needs_proc
def test_a_torch_whose_libuv_store_refuses_a_listening_socket_falls_back_to_the_legacy_backend(monkeypatch, capsys):
    # torch 2.4-2.7: TCPStore's default (libuv) backend could not take master_listen_fd
    # (pytorch#150215); simulated at the constructor, the one place hpcgpu meets it
    import torch.distributed

    real = torch.distributed.TCPStore
    calls = []

    def older_tcpstore(*args, master_listen_fd=None, use_libuv=True, **kwargs):
        calls.append(use_libuv)
        if master_listen_fd is not None and use_libuv:
            raise RuntimeError("the libuv TCPStore backend does not support master_listen_fd")
        return real(*args, master_listen_fd=master_listen_fd, use_libuv=use_libuv, **kwargs)

    monkeypatch.setattr(torch.distributed, "TCPStore", older_tcpstore)
    from hpcgpu.agent import elastic

    monkeypatch.setattr(elastic, "_warned", set())  # warned once per process: not by an earlier test
    store = _tcp_store("127.0.0.1", 0, is_master=True, loopback=True, timeout_s=30)
    assert calls == [True, False]
    assert listening_addresses(store.port) == {"127.0.0.1"}  # still on loopback only
    store.set("k", "v")
    assert store.get("k") == b"v"
    err = capsys.readouterr().err
    assert "TCPStore(master_listen_fd=) with the libuv backend" in err and "legacy TCPStore backend" in err


@needs_proc
def test_without_loopback_the_store_listens_everywhere():
    # the control for the test above: the /proc check sees a store that is not on loopback
    store = _tcp_store("127.0.0.1", 0, is_master=True, loopback=False, timeout_s=30)
    found = listening_addresses(store.port)
    assert found, "the listening socket was not found in /proc/net"
    if found <= {"127.0.0.1", "::1"}:
        pytest.skip(f"this torch binds the host it is given ({found}): nothing to contrast")
    assert found & {"0.0.0.0", "::"}


@needs_proc
def test_a_multi_node_heads_stores_listen_on_its_address_toward_the_other_nodes_only(monkeypatch):
    """Several nodes: the node agents' store and the ranks' store listen on the address the agent
    chose (contract/netaddr.py), not on loopback and not on every interface."""
    addr = non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    monkeypatch.setattr(rendezvous, "_rdzv", {})
    params = RendezvousParameters(backend="hpcgpu", endpoint=f"{addr}:0", run_id="job-2n", min_nodes=2,
                                  max_nodes=2, is_host=True, loopback=False, node_rank=0, join_timeout=30,
                                  bind=addr)
    handler = _create_rdzv_handler(params)
    agents_store = rendezvous._rdzv["store"]
    assert listening_addresses(agents_store.port) == {addr}
    assert not connects("127.0.0.1", agents_store.port)
    ranks_store = handler._create_tcp_store_server(addr, 0)
    assert listening_addresses(ranks_store.port) == {addr}


def test_the_registered_handler_is_torchs_c10d_handler_with_hpcgpus_adjustments(monkeypatch):
    monkeypatch.setattr(rendezvous, "_rdzv", {})
    params = RendezvousParameters(backend="hpcgpu", endpoint="127.0.0.1:0", run_id="job-0", min_nodes=1,
                                  max_nodes=1, is_host=True, loopback=True, node_rank=0, join_timeout=30)
    handler = _create_rdzv_handler(params)
    store = rendezvous._rdzv["store"]
    assert rendezvous._rdzv["run_id"] == "job-0"
    assert store.get(_arrival_key("job-0", 0)) == f"{socket.gethostname()} (pid {os.getpid()})".encode()
    assert handler.get_backend() == "hpcgpu"
    # the ranks' store factory and the per-attempt reset are in place on the real handler
    assert "_create_tcp_store_server" in vars(handler) and "next_rendezvous" in vars(handler)
    if Path("/proc/net/tcp").exists():
        ranks_store = handler._create_tcp_store_server("0.0.0.0", 0)
        assert listening_addresses(ranks_store.port) == {"127.0.0.1"}


# ---------------------------------------------------------------- describe_rdzv_failure


@pytest.fixture
def store(monkeypatch):
    s = _tcp_store("127.0.0.1", 0, is_master=True, loopback=True, timeout_s=30)
    monkeypatch.setattr(rendezvous, "_rdzv", {"store": s, "run_id": "job-3"})
    return s


def role(nnodes: int, node_rank: int = 0) -> NodeFacts:
    return NodeFacts(nnodes=nnodes, node_rank=node_rank, endpoint="n0:29400", rdzv_id="job-3", restarts=0, host="n0")


def test_it_names_the_nodes_that_arrived_and_those_missing(store):
    for node in (0, 2):
        store.set(_arrival_key("job-3", node), "host")
    store.set(_arrival_key("other-run", 1), "host")  # another rendezvous's arrival does not count
    text = describe_rdzv_failure(RendezvousTimeoutError("timed out"), role(4, node_rank=2), 300)
    lines = text.splitlines()
    assert lines[0] == "hpcgpu: rendezvous failed on node 2: RendezvousTimeoutError: timed out"
    assert lines[1] == ("  2 of 4 node(s) arrived at n0:29400 within distributed.rdzv_timeout_s (300 s); "
                        "missing: node 1, node 3")
    assert lines[2].startswith("  hint: check that every node started") and "n0:29400" in lines[2]


def test_when_every_node_arrived_none_is_missing(store):
    for node in range(2):
        store.set(_arrival_key("job-3", node), "host")
    text = describe_rdzv_failure(RendezvousTimeoutError(), role(2), 60)
    assert "2 of 2 node(s) arrived" in text and "missing: none (they left again)" in text
    assert text.splitlines()[0] == "hpcgpu: rendezvous failed on node 0: RendezvousTimeoutError"


def test_without_a_store_it_still_explains(monkeypatch):
    monkeypatch.setattr(rendezvous, "_rdzv", {})
    text = describe_rdzv_failure(RuntimeError("could not reach the head node"), role(2, 1), 60)
    assert "arrived" not in text and "could not reach the head node" in text and "hint:" in text
