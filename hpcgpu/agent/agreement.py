"""Nodes of one run must run one plan: what must agree, and how two plans differ. Standard library only.

Each node of a run over several nodes is planned on its own node (`run local --nnodes`, or one
Slurm node each); a node started with another spec, --nproc or --rdzv-id would rendezvous and then
hang in its first collective, or train something else. At the rendezvous, node 0 publishes the
view below and every other node compares its own with it before it joins.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from hpcgpu.contract.plan import Plan

#: spec keys that may differ between nodes: where files go on each node's own file system
NODE_LOCAL_KEYS = ("checkpoint.dir", "logging.dir")


def shared_view(plan: Plan) -> dict[str, Any]:
    """The parts of the plan every node must hold alike, flattened to dotted keys."""
    view = _flatten(plan.spec, "spec.")
    for key in NODE_LOCAL_KEYS:
        view.pop(f"spec.{key}", None)
    view.update({"run_id": plan.run_id, "nodes": plan.nodes, "nproc_per_node": plan.nproc_per_node,
                 "device_type": plan.device_type, "process_group_backend": plan.process_group_backend})
    return view


def differences(mine: Mapping[str, Any], head: Mapping[str, Any], limit: int = 8) -> list[str]:
    """`key: value here, value on node 0`, one line per key that differs (at most limit, then a count)."""
    keys = sorted(k for k in set(mine) | set(head) if mine.get(k) != head.get(k))
    lines = [f"{k}: {json.dumps(mine.get(k))} here, {json.dumps(head.get(k))} on node 0" for k in keys[:limit]]
    if len(keys) > limit:
        lines.append(f"... and {len(keys) - limit} more")
    return lines


def _flatten(data: Any, prefix: str) -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}
