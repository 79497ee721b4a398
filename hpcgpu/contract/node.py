"""What a node adds to the plan: the facts that exist only on the node. Standard library only.

Each backend's node half (`hpcgpu.backends.<name>.node.node_facts`) computes them from the node's
environment; the node agent uses nothing else of the environment to place itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from hpcgpu.contract import envnames


@dataclass(frozen=True)
class NodeFacts:
    """Where this node agent sits in the run."""

    nnodes: int
    node_rank: int
    endpoint: str
    """host:port where the node agents meet; port 0 on a single node lets the store pick one"""
    rdzv_id: str
    """the rendezvous id, fresh for every scheduler restart (a requeue must not meet its dead twin)"""
    restarts: int
    """times the scheduler restarted this job (requeues); torch elastic's own restarts come on top"""
    host: str

    @property
    def is_head(self) -> bool:
        return self.node_rank == 0


def attempt_restarts(environ: Mapping[str, str]) -> int:
    """The restart count a rank reports (HPCGPU_RESTART_COUNT): the job's scheduler restarts, as its
    node agent exported them, plus torch elastic's restarts of the ranks within this node agent."""
    return int(environ.get(envnames.JOB_RESTARTS) or 0) + int(environ.get("TORCHELASTIC_RESTART_COUNT") or 0)
