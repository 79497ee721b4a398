"""Rendezvous of node agents: where nodes meet, on a store that stays on loopback for one node.

torch elastic's c10d rendezvous runs underneath; hpcgpu registers its own handler factory so it can
(1) bind single-node stores to 127.0.0.1, and a multi-node head's stores to the address the other
nodes reach it at (TCPStore binds every interface otherwise), (2) give every
restart a fresh store for the ranks, and (3) record which nodes arrived, so a rendezvous that times
out names the missing nodes. Imports torch lazily (the node agent's layer).
"""

from __future__ import annotations

import json
import os
import socket

from hpcgpu.agent.agreement import differences
from hpcgpu.agent.elastic import bind_rank_store, fresh_rank_store_per_attempt, order_nodes_by_rank, warn_once
from hpcgpu.contract.node import NodeFacts


RDZV_BACKEND = "hpcgpu"
#: the store and run id of the rendezvous this process joined (for the message when it fails)
_rdzv: dict = {}


def _tcp_store(host: str, port: int, is_master: bool, loopback: bool, timeout_s: float, bind: str = ""):
    """A TCPStore; on a single node its server listens on 127.0.0.1 only, else on `bind` if given.

    TCPStore's server binds every interface (`::`) whatever host it is given (torch 2.13, libuv and
    legacy backends alike), so a single-node run would accept connections from the network. Given
    a socket already bound to loopback (master_listen_fd), it listens there instead.
    """
    from datetime import timedelta

    from torch.distributed import TCPStore

    timeout = timedelta(seconds=timeout_s)
    listen = "127.0.0.1" if loopback else bind
    if not (is_master and listen):
        return TCPStore(host, port, is_master=is_master, multi_tenant=True, timeout=timeout)
    try:
        fd, bound = _listener(listen, port)
        return TCPStore(host, bound, is_master=True, multi_tenant=True, master_listen_fd=fd, timeout=timeout)
    except (RuntimeError, ValueError) as e:
        # Before torch 2.8 the libuv store (the default since 2.4) could not take a listening socket
        # (pytorch#150215); the legacy backend always could. A fresh socket: the first may be gone.
        warn_once("TCPStore(master_listen_fd=) with the libuv backend",
                  f"the store uses torch's legacy TCPStore backend ({e})")
        fd, bound = _listener(listen, port)
        return TCPStore(host, bound, is_master=True, multi_tenant=True, master_listen_fd=fd, use_libuv=False,
                        timeout=timeout)


def _listener(addr: str, port: int) -> tuple[int, int]:
    """A socket listening on addr:port (port 0: a free one), detached (the store owns and closes it),
    and the port it listens on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # as TCPStore's own listener: a fixed port (the endpoint of the last run) may still hold TIME_WAIT
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((addr, port))
    sock.listen(1024)
    bound = sock.getsockname()[1]
    return sock.detach(), bound


def _arrival_key(run_id: str, node_rank: int) -> str:
    return f"hpcgpu/{run_id}/arrived/{node_rank}"


#: node 0's shared plan view (agent/agreement.py); not under the run id: a node with another run id is refused too
PLAN_KEY = "hpcgpu/plan"


def _refused_key(node_rank: int) -> str:
    return f"hpcgpu/refused/{node_rank}"


def _agree_on_plan(store, is_host: bool, node_rank: int, view_json: str) -> None:
    """Node 0 publishes its plan view; another node compares its own and refuses to join a run whose
    plan differs (leaving the reason for node 0's failure report)."""
    from torch.distributed.elastic.rendezvous.api import RendezvousError

    if is_host:
        store.set(PLAN_KEY, view_json)
        return
    diff = differences(json.loads(view_json), json.loads(store.get(PLAN_KEY)))
    if diff:
        why = (f"node {node_rank} was started with another plan than node 0 (the same spec, flags and --rdzv-id "
               "must start every node): " + "; ".join(diff))
        store.set(_refused_key(node_rank), why)
        raise RendezvousError(why)


def _arrive(store, run_id: str, node_rank: int) -> None:
    """Record this node's arrival; refuse a node rank that already arrived (two nodes started with one --node-rank)."""
    from torch.distributed.elastic.rendezvous.api import RendezvousError

    me = f"{socket.gethostname()} (pid {os.getpid()})"
    first = store.compare_set(_arrival_key(run_id, node_rank), "", me).decode(errors="replace")
    if first != me:
        raise RendezvousError(f"node rank {node_rank} is taken: {first} arrived with it first; give every node "
                              "its own --node-rank (0 to N-1)")


def _create_rdzv_handler(params):
    """torch elastic's c10d rendezvous, on a store made by _tcp_store, recording which nodes arrived."""
    from datetime import timedelta

    from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import C10dRendezvousBackend
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import create_handler
    from torch.distributed.elastic.rendezvous.utils import parse_rendezvous_endpoint

    host, port = parse_rendezvous_endpoint(params.endpoint, default_port=29400)
    is_host = bool(params.get_as_bool("is_host", False))
    loopback = bool(params.get_as_bool("loopback", False))
    node_rank = params.get_as_int("node_rank", 0)
    join_s = params.get_as_int("join_timeout", 600)
    #: several nodes: the head's address toward the endpoint ("" unknown: every interface, torch's way)
    bind = params.get("bind", "") or ""
    try:
        # the connect waits up to the join timeout (the head may start later than this node) ...
        store = _tcp_store(host, port, is_host, loopback, join_s, bind=bind)
    except (RuntimeError, ValueError, OSError) as e:  # TimeoutError is an OSError
        what = "could not listen on" if is_host else "could not reach the head node (node 0) at"
        raise RendezvousConnectionError(f"{what} {params.endpoint} within {join_s} s: {e}") from None
    store.set_timeout(timedelta(seconds=params.get_as_int("read_timeout", 60)))  # ... operations: torch's 60 s
    _rdzv.update(store=store, run_id=params.run_id)
    if params.get("plan") is not None:
        _agree_on_plan(store, is_host, node_rank, params.get("plan"))
    _arrive(store, params.run_id, node_rank)

    class Backend(C10dRendezvousBackend):  # torch checks the handler is named as registered
        name = RDZV_BACKEND

    handler = create_handler(store, Backend(store, params.run_id), params)
    if loopback or bind:
        # the ranks' store (MASTER_ADDR:MASTER_PORT) where the node agents' store listens
        bind_rank_store(handler, lambda addr, port: _tcp_store(addr, port, True, loopback, 300, bind=bind))
    fresh_rank_store_per_attempt(handler)
    order_nodes_by_rank(handler, node_rank)
    return handler


def joined_store():
    """The rendezvous store this agent joined (the node agents' meeting place)."""
    return _rdzv["store"]


def _left_key(run_id: str, node_rank: int) -> str:
    return f"hpcgpu/{run_id}/left/{node_rank}"


def leave(role: NodeFacts, wait_s: float = 5) -> None:
    """After torch elastic closed this node's rendezvous: another node says so; the head waits (at most
    wait_s) until every other node did, since its store ends with its process, and a node still closing
    its rendezvous then fails its last store call with a C++ stack trace ("Connection reset by peer")."""
    from datetime import timedelta

    store = _rdzv.get("store")
    if store is None or role.nnodes == 1:
        return
    try:
        if not role.is_head:
            store.set(_left_key(_rdzv["run_id"], role.node_rank), "1")
            return
        store.wait([_left_key(_rdzv["run_id"], i) for i in range(1, role.nnodes)], timedelta(seconds=wait_s))
    except Exception:  # a node gone, or the head gone: nothing left to wait for
        pass


def register_rendezvous() -> None:
    from torch.distributed.elastic.rendezvous import rendezvous_handler_registry

    rendezvous_handler_registry.register(RDZV_BACKEND, _create_rdzv_handler)  # idempotent for one creator


def describe_rdzv_failure(error: Exception, role: NodeFacts, timeout_s: int) -> str:
    """Which nodes arrived and which did not, as far as the rendezvous store knows."""
    store = _rdzv.get("store")
    lines = [f"hpcgpu: rendezvous failed on node {role.node_rank}: {type(error).__name__}: {error}".rstrip(": ")]
    if store is not None:
        arrived = [i for i in range(role.nnodes) if _has_key(store, _arrival_key(_rdzv["run_id"], i))]
        missing = [i for i in range(role.nnodes) if i not in arrived]
        lines.append(f"  {len(arrived)} of {role.nnodes} node(s) arrived at {role.endpoint} within "
                     f"distributed.rdzv_timeout_s ({timeout_s} s); missing: "
                     + (", ".join(f"node {i}" for i in missing) or "none (they left again)"))
        lines += [f"  refused: {_get(store, _refused_key(i))}" for i in missing if _has_key(store, _refused_key(i))]
    lines.append("  hint: check that every node started (Slurm: the job's output of the missing node) and can "
                 f"reach {role.endpoint}; raise distributed.rdzv_timeout_s if nodes start far apart")
    return "\n".join(lines)


def _get(store, key: str) -> str:
    try:
        return store.get(key).decode(errors="replace")
    except Exception:
        return "?"


def _has_key(store, key: str) -> bool:
    try:
        return bool(store.check([key]))
    except Exception:  # the head went away: nothing to ask
        return False
