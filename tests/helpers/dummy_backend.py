"""A backend in one file, as docs/architecture.md adds one: it plans like the local backend and
"launches" by recording the plan. Registered by tests/backends/test_conformance.py."""

from __future__ import annotations

import socket
from typing import Mapping, Optional

from hpcgpu.backends import LaunchHandle, RunStatus
from hpcgpu.contract.node import NodeFacts
from hpcgpu.contract.plan import Plan
from hpcgpu.contract.runfiles import read_result
from hpcgpu.contract.states import RunState, state_from_exit
from hpcgpu.host.plan import core_plan, describe_plan


class DummyBackend:
    name = "dummy"
    launched: list = []

    def plan(self, spec, facts, *, run_id: str, run_dir: str, created: float = 0.0) -> Plan:
        return core_plan(spec, facts, backend=self.name, run_id=run_id, run_dir=run_dir,
                         visible_gpus=facts.visible_gpus, created=created)

    def preflight(self, plan: Plan, *, resuming: Optional[object] = None) -> None:
        return None

    def launch(self, plan: Plan, withheld: Mapping[str, str]) -> LaunchHandle:
        self.launched.append(plan)
        return LaunchHandle(run_id=plan.run_id, exit_code=0)

    def status(self, record) -> RunStatus:
        result = read_result(record.run_dir)
        return RunStatus(state_from_exit(result["exit_code"]) if result else RunState.UNKNOWN)

    def describe(self, plan: Plan) -> str:
        return describe_plan(plan)

    def cancel(self, record) -> None:
        return None


def node_facts(plan: Plan, environ: Mapping[str, str]) -> NodeFacts:
    """The node half: one node, on loopback."""
    return NodeFacts(nnodes=1, node_rank=0, endpoint="127.0.0.1:0", rdzv_id=plan.run_id, restarts=0,
                     host=socket.gethostname())
