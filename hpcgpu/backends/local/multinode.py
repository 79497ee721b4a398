"""Several nodes without a scheduler (`run local --nnodes N --node-rank R --rdzv-endpoint HOST:PORT
--rdzv-id ID`, one command per node, started by the user): the flags checked, and what they make.

Every node plans the same run: the run id is `<name>-<rdzv id>` on all of them (it is also the
rendezvous id), node 0's run directory is `<logging.dir>/<run id>`, node R's `<run id>-node<R>`
(they never collide on a shared file system). The node's part of the plan (node rank, endpoint)
goes into the plan's request, so `--dry-run` shows it and `--resume` finds it again. Torch-free.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from hpcgpu.contract import envnames
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.netaddr import split_endpoint

#: what an --rdzv-id may hold: it names directories and store keys
RDZV_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
EXAMPLE = "--nnodes 2 --node-rank 0 --rdzv-endpoint HEAD:29400 --rdzv-id exp1"


@dataclass(frozen=True)
class MultiNode:
    """This node's place in a run over several nodes."""

    nnodes: int
    node_rank: int
    endpoint: str
    rdzv_id: str

    def run_id(self, name: str) -> str:
        return f"{name}-{self.rdzv_id}"

    def dir_name(self, name: str) -> str:
        return self.run_id(name) + (f"-node{self.node_rank}" if self.node_rank else "")

    def environ(self) -> dict[str, str]:
        """The variables the local backend plans this node's part from (facts.environ)."""
        return {envnames.NODE_RANK: str(self.node_rank), envnames.RDZV_ENDPOINT: self.endpoint}


def parse_nnodes(text: Optional[str]) -> Optional[int]:
    """--nnodes N (or N:N, torchrun's form); MIN:MAX with MIN < MAX is refused: hpcgpu's plan fixes
    the world size (rank table, data shards, checkpoints, LR scaling), so nodes cannot come and go."""
    if text is None:
        return None
    low, sep, high = text.partition(":")
    if not low.isdigit() or (sep and not high.isdigit()):
        raise UserError(f"--nnodes must be a number of nodes (or N:N), got {text!r}", hint=f"e.g. {EXAMPLE}")
    if sep and int(low) != int(high):
        raise UserError(
            f"--nnodes {text}: elastic membership (nodes joining and leaving a running job) is not supported: "
            "the plan fixes the world size, which the rank table, data sharding, checkpoints and LR scaling "
            "depend on", hint=f"give one number, e.g. --nnodes {high}; restarts after failures: --max-restarts N")
    if int(low) < 1:
        raise UserError(f"--nnodes must be at least 1, got {text!r}")
    return int(low)


def multinode_options(nnodes: Optional[int], node_rank: Optional[int], endpoint: Optional[str],
                      rdzv_id: Optional[str]) -> Optional[MultiNode]:
    """The flags checked together: None for one node; UserError naming the flag and the fix."""
    given = [flag for flag, value in (("--node-rank", node_rank), ("--rdzv-endpoint", endpoint),
                                      ("--rdzv-id", rdzv_id)) if value is not None]
    if not nnodes or nnodes == 1:
        if given:
            raise UserError(f"{', '.join(given)} {'goes' if len(given) == 1 else 'go'} with --nnodes 2 or more "
                            "(a run over several nodes)",
                            hint=f"e.g. {EXAMPLE}; on one node, drop {', '.join(given)}")
        return None
    missing = [flag for flag, value in (("--node-rank", node_rank), ("--rdzv-endpoint", endpoint),
                                        ("--rdzv-id", rdzv_id)) if value is None]
    if missing:
        raise UserError(
            f"--nnodes {nnodes} needs {', '.join(missing)}: each node is started by hand, with the same "
            "--nnodes, --rdzv-endpoint (node 0's address and a free port) and --rdzv-id (the run's name on "
            "every node), and its own --node-rank (0 on the node at the endpoint, 1..N-1 on the others)",
            hint=f"e.g. {EXAMPLE} (on the head), then the same with --node-rank 1 on the next node")
    if not 0 <= node_rank < nnodes:
        raise UserError(f"--node-rank {node_rank} is outside 0..{nnodes - 1} (--nnodes {nnodes})",
                        hint="number the nodes 0 (the head, at --rdzv-endpoint) to N-1")
    try:
        split_endpoint(endpoint)
    except UserError as e:
        raise UserError(f"--rdzv-endpoint: {e.message}", hint=e.hint) from None
    if not RDZV_ID.fullmatch(rdzv_id):
        raise UserError(f"--rdzv-id {rdzv_id!r}: use 1 to 64 letters, digits, '.', '_' or '-' (it names the run "
                        "directory), starting with a letter or digit", hint="e.g. --rdzv-id exp1 or a job number")
    return MultiNode(nnodes, node_rank, endpoint, rdzv_id)


def node_request(nodes: int, environ: Mapping[str, str], previous: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The plan's request for a node of a run over `nodes` nodes: node rank and endpoint, from the
    environment (the run flags put them there), else from the run's previous plan (a resume)."""
    endpoint = environ.get(envnames.RDZV_ENDPOINT) or (previous or {}).get("rdzv_endpoint")
    rank = environ.get(envnames.NODE_RANK) or (previous or {}).get("node_rank")
    if not endpoint or rank is None:
        raise UserError(f"resources.nodes is {nodes}, but this node does not know where it sits",
                        hint=f"start each node with `hpcgpu run local {EXAMPLE}` (--node-rank 0..{nodes - 1}), "
                             "or use `hpcgpu submit slurm`")
    if not str(rank).isdigit() or not int(rank) < nodes:
        raise UserError(f"{envnames.NODE_RANK}={rank} is not a node rank of a run over {nodes} nodes (0..{nodes - 1})")
    split_endpoint(endpoint)
    return {"node_rank": int(rank), "rdzv_endpoint": endpoint}


def describe_node_part(plan) -> str:
    """The dry run's lines for this node of a run over several nodes: where it sits, and the
    network its ranks would use (the node agent's rule, evaluated here, on this node)."""
    from hpcgpu.contract.netaddr import ifname_defaults, node_address

    rank, endpoint = plan.request["node_rank"], plan.request["rdzv_endpoint"]
    lines = [f"this node: node {rank} of {plan.nodes}" + (" (the head: it serves the rendezvous)" if rank == 0 else ""),
             f"  rendezvous: {endpoint}, id {plan.run_id} (the same on every node)",
             f"  its ranks:  {', '.join(str(r.rank) for r in plan.ranks if r.node == rank)}"]
    try:
        choice = node_address(endpoint)
        _, notes = ifname_defaults(choice, {**os.environ, **plan.env})
        lines.append(f"  network:    {choice.reason}" + (f"; {', '.join(notes)}" if notes else ""))
        if rank == 0 and not choice.is_endpoint_here():
            lines.append(f"  error:      {choice.endpoint_addr} is not an address of this node: node 0 must run at the "
                         "endpoint (the run would stop here)")
    except UserError as e:
        lines.append(f"  network:    cannot be chosen on this node now: {e.message}")
    return "\n".join(lines) + "\n"
