"""The local backend's node half: where a node agent started on this machine sits. Stdlib only."""

from __future__ import annotations

import socket
from typing import Mapping

from hpcgpu.contract import envnames
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.node import NodeFacts
from hpcgpu.contract.plan import Plan


def node_facts(plan: Plan, environ: Mapping[str, str]) -> NodeFacts:
    """One node: rendezvous on loopback, a port the OS picks (it never collides). Several nodes
    without a scheduler: node rank and endpoint from the plan's request (`run local --nnodes N
    --node-rank R --rdzv-endpoint HOST:PORT`), else HPCGPU_NODE_RANK/HPCGPU_RDZV_ENDPOINT."""
    host = socket.gethostname()
    if plan.nodes == 1:
        return NodeFacts(nnodes=1, node_rank=0, endpoint="127.0.0.1:0", rdzv_id=plan.run_id, restarts=0, host=host)
    endpoint = plan.request.get("rdzv_endpoint") or environ.get(envnames.RDZV_ENDPOINT)
    if not endpoint:
        raise UserError(
            f"the plan asks for {plan.nodes} nodes but {envnames.RDZV_ENDPOINT} is not set",
            hint="start each node with `hpcgpu run local --nnodes N --node-rank R --rdzv-endpoint HOST:PORT "
                 "--rdzv-id ID`, or use `hpcgpu submit slurm`",
        )
    node_rank = int(plan.request.get("node_rank", environ.get(envnames.NODE_RANK) or 0))
    return NodeFacts(nnodes=plan.nodes, node_rank=node_rank, endpoint=endpoint, rdzv_id=plan.run_id,
                     restarts=0, host=host)
