"""Backends: one Protocol, a lazy registry, one package per backend (host half + node half).

A backend turns a spec into its plan, checks that the plan can run here, launches it, reports its
state and cancels it. Its node half (`<package>.node`, standard library only) tells a node agent
where it sits. Nothing here imports a backend until it is used, and this module imports only the
contract, because node agents import it too. docs/architecture.md shows how to add one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Protocol, runtime_checkable

from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import Plan
from hpcgpu.contract.states import RunState

if TYPE_CHECKING:
    from hpcgpu.contract.node import NodeFacts
    from hpcgpu.host.facts import HostFacts
    from hpcgpu.host.runs import RunRecord
    from hpcgpu.host.spec import Spec


@dataclass(frozen=True)
class LaunchHandle:
    """What launch returns: the scheduler's job id, or the exit status of a run that ran to its end."""

    run_id: str
    job_id: Optional[str] = None
    exit_code: Optional[int] = None


@dataclass(frozen=True)
class RunStatus:
    """What status returns."""

    state: RunState
    nodes: str = ""
    restarts: int = 0
    reason: str = ""


@runtime_checkable
class Backend(Protocol):
    """What every backend implements (tests/backends/test_conformance.py checks each one)."""

    name: str

    def plan(self, spec: "Spec", facts: "HostFacts", *, run_id: str, run_dir: str, created: float = 0.0) -> Plan:
        """The complete plan. Pure: everything impure came in through facts."""

    def preflight(self, plan: Plan, *, resuming: Optional["RunRecord"] = None) -> None:
        """Raise UserError for what would fail after launch (missing tools, request does not fit,
        a resumed run that is still going). Nothing is created or started."""

    def launch(self, plan: Plan, withheld: Mapping[str, str]) -> LaunchHandle:
        """Start the plan (plan.json is in the run dir). withheld: secret env values, never written."""

    def status(self, record: "RunRecord") -> RunStatus:
        """The run's state from the scheduler, else from the run dir."""

    def describe(self, plan: Plan) -> str:
        """The dry run's text for people."""

    def cancel(self, record: "RunRecord") -> None:
        """Ask the run to checkpoint and stop."""


#: backend name -> "module:Class" (host half) and the module of its node half (node_facts)
REGISTRY: dict[str, str] = {
    "local": "hpcgpu.backends.local.backend:LocalBackend",
    "slurm": "hpcgpu.backends.slurm.backend:SlurmBackend",
}
NODE_HALVES: dict[str, str] = {
    "local": "hpcgpu.backends.local.node",
    "slurm": "hpcgpu.backends.slurm.node",
}


def register(name: str, backend: str, node_half: str) -> None:
    """Add a backend ("pkg.module:Class", "pkg.node_module"): e.g. a site's own scheduler."""
    REGISTRY[name] = backend
    NODE_HALVES[name] = node_half


def _unknown(name: str) -> UserError:
    return UserError(f"unknown backend {name!r}", hint=f"known backends: {', '.join(sorted(REGISTRY))}")


def get_backend(name: str) -> Backend:
    """Instantiate the backend registered under name."""
    if name not in REGISTRY:
        raise _unknown(name)
    module, attr = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)()


def node_facts(plan: Plan, environ: Mapping[str, str]) -> "NodeFacts":
    """This node's facts, from the node half of the plan's backend (agents call this)."""
    if plan.backend not in NODE_HALVES:
        raise _unknown(plan.backend)
    module: Any = importlib.import_module(NODE_HALVES[plan.backend])
    return module.node_facts(plan, environ)
