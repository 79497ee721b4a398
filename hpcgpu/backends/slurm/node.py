"""The Slurm backend's node half: where a node agent inside a Slurm job sits. Stdlib only.

NodeCommand (node_command.py) runs on every node of the job, publishes or reads the rendezvous
endpoint, and starts the node agent with HPCGPU_RDZV_ENDPOINT and HPCGPU_JOB_RESTARTS set; the
agent reads them back here. This module owns the job's restart-count formula.
"""

from __future__ import annotations

import os
import socket
from typing import Mapping, Optional

from hpcgpu.contract import envnames
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.node import NodeFacts
from hpcgpu.contract.plan import Plan


def job_key(environ: Optional[Mapping[str, str]] = None) -> str:
    """The job's id as Slurm names it (array jobs: ARRAYID_TASKID), 'local' outside Slurm."""
    environ = os.environ if environ is None else environ
    array_id = environ.get("SLURM_ARRAY_JOB_ID")
    if array_id:
        return f"{array_id}_{environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return environ.get("SLURM_JOB_ID", "local")


def job_restarts(requeues: int, environ: Optional[Mapping[str, str]] = None) -> int:
    """How many times this job was restarted: the requeues NodeCommand counted itself (carried in
    its pickle), or Slurm's SLURM_RESTART_COUNT (unset on the first run), whichever is larger."""
    environ = os.environ if environ is None else environ
    return max(requeues, int(environ.get("SLURM_RESTART_COUNT") or 0))


def node_facts(plan: Plan, environ: Mapping[str, str]) -> NodeFacts:
    """Node rank from SLURM_NODEID; endpoint and restarts as NodeCommand exported them."""
    node_rank = int(environ.get("SLURM_NODEID") or 0)
    restarts = int(environ.get(envnames.JOB_RESTARTS) or job_restarts(0, environ))
    host = environ.get("SLURMD_NODENAME") or socket.gethostname()
    rdzv_id = f"{job_key(environ)}-{restarts}"
    if plan.nodes == 1:
        return NodeFacts(nnodes=1, node_rank=0, endpoint="127.0.0.1:0", rdzv_id=rdzv_id, restarts=restarts, host=host)
    endpoint = environ.get(envnames.RDZV_ENDPOINT)
    if not endpoint:
        raise UserError(
            f"the plan asks for {plan.nodes} nodes but {envnames.RDZV_ENDPOINT} is not set",
            hint="Slurm nodes run the node agent through hpcgpu's NodeCommand, which sets it (hpcgpu submit slurm)",
        )
    return NodeFacts(nnodes=plan.nodes, node_rank=node_rank, endpoint=endpoint, rdzv_id=rdzv_id,
                     restarts=restarts, host=host)
