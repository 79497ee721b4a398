"""Rendezvous of node agents: where nodes meet, on a store that stays on loopback for one node.

torch elastic's c10d rendezvous runs underneath; hpcgpu registers its own handler factory so it can
(1) bind single-node stores to 127.0.0.1 (TCPStore binds every interface otherwise), (2) give every
restart a fresh store for the ranks, and (3) record which nodes arrived, so a rendezvous that times
out names the missing nodes. Imports torch lazily (the node agent's layer).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Mapping

from hpcgpu.contract.envnames import RDZV_ENDPOINT
from hpcgpu.contract.errors import UserError


@dataclass(frozen=True)
class NodeRole:
    """Where this node agent sits: how many nodes, its index, and where to rendezvous."""

    nnodes: int
    node_rank: int
    endpoint: str  # host:port; port 0 on a single node lets the store pick a free port
    is_host: bool
    run_id: str


def node_role(nnodes: int, run_id: str, environ: Mapping[str, str]) -> NodeRole:
    """Single node: rendezvous on loopback, free port picked by the OS (never collides).
    Several nodes: the endpoint the head node published (HPCGPU_RDZV_ENDPOINT)."""
    if nnodes == 1:
        return NodeRole(1, 0, "127.0.0.1:0", True, run_id)
    endpoint = environ.get(RDZV_ENDPOINT)
    if not endpoint:
        raise UserError(
            f"the spec asks for {nnodes} nodes but {RDZV_ENDPOINT} is not set",
            hint="multi-node runs are started by `hpcgpu submit slurm`, which sets it on every node",
        )
    node_rank = int(environ.get("SLURM_NODEID", environ.get("HPCGPU_NODE_RANK", "0")))
    job = environ.get("SLURM_JOB_ID", run_id)
    return NodeRole(nnodes, node_rank, endpoint, node_rank == 0, f"{job}-{environ.get('SLURM_RESTART_COUNT', '0')}")


RDZV_BACKEND = "hpcgpu"
#: the store and run id of the rendezvous this process joined (for the message when it fails)
_rdzv: dict = {}


def _tcp_store(host: str, port: int, is_master: bool, loopback: bool, timeout_s: float):
    """A TCPStore; on a single node its server listens on 127.0.0.1 only.

    TCPStore's server binds every interface (`::`) whatever host it is given (torch 2.13, libuv and
    legacy backends alike), so a single-node run would accept connections from the network. Given
    a socket already bound to loopback (master_listen_fd), it listens there instead.
    """
    from datetime import timedelta

    from torch.distributed import TCPStore

    fd = None
    if is_master and loopback:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", port))
        sock.listen(1024)
        port = sock.getsockname()[1]
        fd = sock.detach()  # the store owns the descriptor now and closes it
    return TCPStore(host, port, is_master=is_master, multi_tenant=True, master_listen_fd=fd,
                    timeout=timedelta(seconds=timeout_s))


def _arrival_key(run_id: str, node_rank: int) -> str:
    return f"hpcgpu/{run_id}/arrived/{node_rank}"


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
    try:
        # the connect waits up to the join timeout (the head may start later than this node) ...
        store = _tcp_store(host, port, is_host, loopback, join_s)
    except (RuntimeError, ValueError, TimeoutError) as e:
        what = "could not listen on" if is_host else "could not reach the head node (node 0) at"
        raise RendezvousConnectionError(f"{what} {params.endpoint} within {join_s} s: {e}") from None
    store.set_timeout(timedelta(seconds=params.get_as_int("read_timeout", 60)))  # ... operations: torch's 60 s
    store.set(_arrival_key(params.run_id, node_rank), socket.gethostname())
    _rdzv.update(store=store, run_id=params.run_id)

    class Backend(C10dRendezvousBackend):  # torch checks the handler is named as registered
        name = RDZV_BACKEND

    handler = create_handler(store, Backend(store, params.run_id), params)
    if loopback:
        # the store the ranks share (MASTER_ADDR:MASTER_PORT) is made by the handler: keep it on loopback too
        handler._create_tcp_store_server = lambda addr, port: _tcp_store("127.0.0.1", port, True, True, 300)
    join = handler.next_rendezvous

    def next_rendezvous():
        # torch keeps the ranks' store across restarts, but the ranks assume a fresh one per attempt
        # (torch/distributed/rendezvous.py: "We create a new TCPStore for every retry"): with the old
        # one, restarted gloo ranks read the dead attempt's addresses and fail with "Connection refused".
        handler._shared_tcp_store_server = None
        handler._bootstrap_store_info = None
        return join()

    handler.next_rendezvous = next_rendezvous
    return handler


def register_rendezvous() -> None:
    from torch.distributed.elastic.rendezvous import rendezvous_handler_registry

    rendezvous_handler_registry.register(RDZV_BACKEND, _create_rdzv_handler)  # idempotent for one creator


def describe_rdzv_failure(error: Exception, role: NodeRole, timeout_s: int) -> str:
    """Which nodes arrived and which did not, as far as the rendezvous store knows."""
    store = _rdzv.get("store")
    lines = [f"hpcgpu: rendezvous failed on node {role.node_rank}: {type(error).__name__}: {error}".rstrip(": ")]
    if store is not None:
        arrived = [i for i in range(role.nnodes) if _has_key(store, _arrival_key(_rdzv["run_id"], i))]
        missing = [i for i in range(role.nnodes) if i not in arrived]
        lines.append(f"  {len(arrived)} of {role.nnodes} node(s) arrived at {role.endpoint} within "
                     f"distributed.rdzv_timeout_s ({timeout_s} s); missing: "
                     + (", ".join(f"node {i}" for i in missing) or "none (they left again)"))
    lines.append("  hint: check that every node started (Slurm: the job's output of the missing node) and can "
                 f"reach {role.endpoint}; raise distributed.rdzv_timeout_s if nodes start far apart")
    return "\n".join(lines)


def _has_key(store, key: str) -> bool:
    try:
        return bool(store.check([key]))
    except Exception:  # the head went away: nothing to ask
        return False
