"""The hpcgpu rendezvous handler reads torch elastic's rendezvous parameters (endpoint, is_host,
loopback, node_rank, join_timeout, read_timeout), makes its stores with the timeouts they name, and
says which side failed when the store cannot be opened. The store factory is replaced by a recorder
where only the arguments matter; real TCPStores (on loopback, port 0) everywhere else."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import pytest
from torch.distributed.elastic.rendezvous import RendezvousParameters
from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError

from hpcgpu.agent import rendezvous
from hpcgpu.agent.rendezvous import (RDZV_BACKEND, _arrival_key, _create_rdzv_handler, _tcp_store,
                                     describe_rdzv_failure, register_rendezvous)
from hpcgpu.contract.node import NodeFacts


def params(endpoint: str = "127.0.0.1:0", **conf) -> RendezvousParameters:
    return RendezvousParameters(backend="hpcgpu", endpoint=endpoint, run_id="job-7", min_nodes=1, max_nodes=1,
                                **conf)


@pytest.fixture
def calls(monkeypatch):
    """Record _tcp_store's arguments; hand back a real store on a free loopback port."""
    monkeypatch.setattr(rendezvous, "_rdzv", {})
    made = []
    real = rendezvous._tcp_store

    def recording(host, port, is_master, loopback, timeout_s, bind=""):
        made.append(dict(host=host, port=port, is_master=is_master, loopback=loopback, timeout_s=timeout_s))
        return real("127.0.0.1", 0, True, True, 30)

    monkeypatch.setattr(rendezvous, "_tcp_store", recording)
    return made


def test_the_store_is_opened_at_the_endpoint_with_the_join_timeout(calls):
    _create_rdzv_handler(params("node0:12345", is_host=True, loopback=True, node_rank=0, join_timeout=7))
    assert calls[0] == dict(host="node0", port=12345, is_master=True, loopback=True, timeout_s=7)


def test_an_endpoint_without_a_port_means_torchs_29400(calls):
    _create_rdzv_handler(params("node0", is_host=False, loopback=False, node_rank=1, join_timeout=7))
    assert (calls[0]["host"], calls[0]["port"]) == ("node0", 29400)


def test_the_node_rank_is_the_arrival_this_node_records(calls):
    _create_rdzv_handler(params(is_host=True, loopback=True, node_rank=1, join_timeout=7))
    store = rendezvous._rdzv["store"]
    assert store.get(_arrival_key("job-7", 1)) == f"{socket.gethostname()} (pid {os.getpid()})".encode()
    assert not store.check([_arrival_key("job-7", 0)])


def test_store_operations_wait_torchs_60_s_by_default_or_the_read_timeout(calls):
    _create_rdzv_handler(params(is_host=True, loopback=True, node_rank=0, join_timeout=7))
    assert rendezvous._rdzv["store"].timeout == timedelta(seconds=60)
    _create_rdzv_handler(params(is_host=True, loopback=True, node_rank=0, join_timeout=7, read_timeout=5))
    assert rendezvous._rdzv["store"].timeout == timedelta(seconds=5)


def failing(monkeypatch):
    monkeypatch.setattr(rendezvous, "_rdzv", {})

    def refuse(*_args, **_kw):
        raise RuntimeError("connection refused")

    monkeypatch.setattr(rendezvous, "_tcp_store", refuse)


def test_a_head_that_cannot_listen_says_so_with_the_endpoint_and_timeout(monkeypatch):
    failing(monkeypatch)
    with pytest.raises(RendezvousConnectionError) as info:
        _create_rdzv_handler(params("n0:29411", is_host=True, loopback=False, node_rank=0, join_timeout=7))
    assert str(info.value) == "could not listen on n0:29411 within 7 s: connection refused"


def test_a_node_that_cannot_reach_the_head_says_so_with_the_endpoint_and_timeout(monkeypatch):
    failing(monkeypatch)
    with pytest.raises(RendezvousConnectionError) as info:
        _create_rdzv_handler(params("n0:29411", is_host=False, loopback=False, node_rank=1, join_timeout=7))
    assert str(info.value) == "could not reach the head node (node 0) at n0:29411 within 7 s: connection refused"


def test_a_one_node_rendezvous_completes_and_its_store_works(monkeypatch):
    monkeypatch.setattr(rendezvous, "_rdzv", {})
    handler = _create_rdzv_handler(params(is_host=True, loopback=True, node_rank=0, join_timeout=30))
    info = handler.next_rendezvous()
    assert (info.rank, info.world_size) == (0, 1)
    info.store.set("k", "v")
    assert info.store.get("k") == b"v"


def test_the_ranks_store_of_a_single_node_keeps_torchs_default_timeout(monkeypatch):
    monkeypatch.setattr(rendezvous, "_rdzv", {})
    handler = _create_rdzv_handler(params(is_host=True, loopback=True, node_rank=0, join_timeout=30))
    assert handler._create_tcp_store_server("0.0.0.0", 0).timeout == timedelta(seconds=300)


def test_registering_makes_torch_build_hpcgpus_handler(monkeypatch):
    from torch.distributed.elastic.rendezvous import rendezvous_handler_registry

    monkeypatch.setattr(rendezvous, "_rdzv", {})
    register_rendezvous()
    handler = rendezvous_handler_registry.create_handler(params(is_host=True, loopback=True, node_rank=0,
                                                                join_timeout=30))
    assert handler.get_backend() == RDZV_BACKEND
    assert rendezvous._rdzv["run_id"] == "job-7"  # made by hpcgpu's factory


# --- the stores themselves ------------------------------------------------------------------------


@pytest.mark.parametrize("loopback", [True, False])
def test_a_stores_timeout_is_the_one_asked_for(loopback):
    assert _tcp_store("127.0.0.1", 0, True, loopback, 7).timeout == timedelta(seconds=7)


@pytest.mark.parametrize("loopback", [True, False])
def test_the_head_store_is_shared_by_another_multi_tenant_store_in_this_process(loopback):
    # torch's own c10d code opens its stores multi_tenant: in one process they share one server
    from torch.distributed import TCPStore

    head = _tcp_store("127.0.0.1", 0, True, loopback, 30)
    other = TCPStore("127.0.0.1", head.port, is_master=True, multi_tenant=True, timeout=timedelta(seconds=5))
    other.set("k", "v")
    assert head.get("k") == b"v"


def test_the_legacy_fallback_keeps_the_timeout_and_multi_tenancy(monkeypatch):
    import torch.distributed

    from hpcgpu.agent import elastic

    real = torch.distributed.TCPStore

    def older_tcpstore(*args, master_listen_fd=None, use_libuv=True, **kwargs):
        if master_listen_fd is not None and use_libuv:
            raise RuntimeError("the libuv TCPStore backend does not support master_listen_fd")
        return real(*args, master_listen_fd=master_listen_fd, use_libuv=use_libuv, **kwargs)

    monkeypatch.setattr(torch.distributed, "TCPStore", older_tcpstore)
    monkeypatch.setattr(elastic, "_warned", set())
    head = _tcp_store("127.0.0.1", 0, True, True, 7)
    assert head.timeout == timedelta(seconds=7)
    other = real("127.0.0.1", head.port, is_master=True, multi_tenant=True, timeout=timedelta(seconds=5))
    other.set("k", "v")
    assert head.get("k") == b"v"


# --- describe_rdzv_failure ------------------------------------------------------------------------


def role(nnodes: int, node_rank: int = 0) -> NodeFacts:
    return NodeFacts(nnodes=nnodes, node_rank=node_rank, endpoint="n0:29400", rdzv_id="job-7", restarts=0, host="n0")


def test_the_errors_own_text_is_kept_whole(monkeypatch):
    monkeypatch.setattr(rendezvous, "_rdzv", {})
    first = describe_rdzv_failure(RuntimeError("no route to NODEX"), role(2, 1), 60).splitlines()[0]
    assert first == "hpcgpu: rendezvous failed on node 1: RuntimeError: no route to NODEX"


def test_the_hint_points_at_the_missing_nodes_slurm_output(monkeypatch):
    monkeypatch.setattr(rendezvous, "_rdzv", {})
    text = describe_rdzv_failure(RuntimeError("x"), role(2, 1), 60)
    assert "(Slurm: the job's output of the missing node)" in text


class GoneStore:
    """A store whose head went away: every question fails."""

    def check(self, keys):
        raise RuntimeError("connection reset by peer")


def test_when_the_head_is_gone_no_node_counts_as_arrived(monkeypatch):
    monkeypatch.setattr(rendezvous, "_rdzv", {"store": GoneStore(), "run_id": "job-7"})
    text = describe_rdzv_failure(RuntimeError("x"), role(2, 1), 60)
    assert "0 of 2 node(s) arrived" in text and "missing: node 0, node 1" in text


def torch_at_least(major: int, minor: int) -> bool:
    import torch

    return tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (major, minor)


@pytest.mark.skipif(not torch_at_least(2, 8), reason="torch < 2.8: libuv cannot take a listening socket")
def test_a_torch_that_takes_a_listening_socket_keeps_its_default_libuv_store_without_a_warning(monkeypatch, capsys):
    from hpcgpu.agent import elastic

    monkeypatch.setattr(elastic, "_warned", set())
    store = _tcp_store("127.0.0.1", 0, True, True, 30)
    assert store.libuvBackend
    assert "warning" not in capsys.readouterr().err


def test_the_fallback_warning_says_what_this_torch_lacks(monkeypatch, capsys):
    import torch.distributed

    from hpcgpu.agent import elastic

    real = torch.distributed.TCPStore

    def older_tcpstore(*args, master_listen_fd=None, use_libuv=True, **kwargs):
        if master_listen_fd is not None and use_libuv:
            raise RuntimeError("not supported")
        return real(*args, master_listen_fd=master_listen_fd, use_libuv=use_libuv, **kwargs)

    monkeypatch.setattr(torch.distributed, "TCPStore", older_tcpstore)
    monkeypatch.setattr(elastic, "_warned", set())
    _tcp_store("127.0.0.1", 0, True, True, 30)
    err = capsys.readouterr().err
    assert " has no TCPStore(master_listen_fd=) with the libuv backend; " in err
    assert "legacy TCPStore backend (not supported)" in err
