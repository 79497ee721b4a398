"""plan.json: the one contract between the host, the node agents and the ranks. Standard library only.

The host decides everything once (`hpcgpu.host.plan.build_plan`, a pure function of the spec and
the host's facts) and writes the result to `<run dir>/plan.json`. `--dry-run --json` prints the
same object. Node agents and ranks read it with `load_plan` (json, dataclasses: no pydantic, no
spec models) and never decide again what it says: the node layout, each rank's device, the
process-group backend, the precision, the environment, the directories. A node adds only facts
that exist only there (its node rank, host name, the head node's address and port, the restart
count); see `hpcgpu.backends.<name>.node`.

Secret values are never in the plan: an `env` value of REDACTED means "take it from the
environment" (docs/security.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from hpcgpu.contract.errors import UserError

#: bumped when a field changes meaning; a node refuses a plan of another format
PLAN_FORMAT = 1
PLAN_FILE = "plan.json"
#: the value an env entry has in files when its name looks like a secret
REDACTED = "<redacted>"


@dataclass(frozen=True)
class RankPlan:
    """One rank: where it runs and on what."""

    rank: int
    node: int
    local_rank: int
    device: str
    """`cpu` or `cuda:N` (N counts the GPUs the node makes visible); dp: the first of its GPUs"""
    backend: str
    """the process-group backend this rank starts (`gloo` or `nccl`), the same on every rank"""


@dataclass(frozen=True)
class Plan:
    """A run, fully decided. Frozen; the mappings in it are never mutated after build_plan."""

    run_id: str
    run_dir: str
    """absolute"""
    ckpt_dir: str
    """absolute; where every rank saves and looks for checkpoints"""
    backend: str
    """which backend executes it (`local`, `slurm`)"""
    nodes: int
    nproc_per_node: int
    device_type: str
    """`cpu` or `cuda`"""
    gpus_per_node: int
    """GPUs one node uses (0 on CPU; all of them, in one process, for dp)"""
    process_group_backend: str
    """`gloo` or `nccl`: what torch.distributed.init_process_group gets, never `auto`"""
    precision: str
    ranks: tuple[RankPlan, ...]
    env: Mapping[str, str]
    """variables every rank gets on top of its node's environment (secrets: REDACTED)"""
    env_notes: tuple[str, ...]
    """one line per debug default: set, kept from the user, or taken from the spec"""
    node_argv: tuple[str, ...]
    """what each node runs (after container_prefix): the node agent pointed at this plan"""
    container_prefix: tuple[str, ...]
    request: Mapping[str, Any]
    """the backend's request as JSON data (Slurm: sbatch parameters, the exact script, time limit)"""
    spec: Mapping[str, Any]
    """the resolved spec (every default filled in; secret env values REDACTED)"""
    created: float = 0.0
    format: int = PLAN_FORMAT

    def __post_init__(self) -> None:
        # frozen all the way down: nothing that reads a plan can change what the next reader sees
        for name in ("env", "request", "spec"):
            object.__setattr__(self, name, _freeze(getattr(self, name)))

    @property
    def world_size(self) -> int:
        return len(self.ranks)

    def device_of(self, local_rank: int) -> str:
        """The planned device of a local rank (every node has the same layout)."""
        for r in self.ranks:
            if r.local_rank == local_rank:
                return r.device
        raise UserError(f"the plan of run {self.run_id} has no local rank {local_rank} "
                        f"(it plans {self.nproc_per_node} rank(s) per node)")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (dicts and lists)."""
        out = {f.name: _thaw(getattr(self, f.name)) for f in fields(self)}
        out["ranks"] = [asdict(r) for r in self.ranks]
        return out

    def spec_data(self) -> dict[str, Any]:
        """The resolved spec as plain dicts and lists (a copy)."""
        return _thaw(self.spec)

    def to_json(self) -> str:
        """The bytes written to plan.json and printed by --dry-run --json."""
        return json.dumps(self.to_dict(), indent=1) + "\n"


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def plan_from_dict(data: Mapping[str, Any]) -> Plan:
    """The Plan in a JSON object; UserError when it is not one of this format."""
    if not isinstance(data, Mapping) or data.get("format") != PLAN_FORMAT:
        found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
        raise UserError(f"not an hpcgpu plan of format {PLAN_FORMAT} (found {found!r})",
                        hint="the run was planned by another hpcgpu version: plan it again with this one")
    names = {f.name for f in fields(Plan)}
    missing = sorted(names - set(data))
    if missing:
        raise UserError(f"the plan lacks {', '.join(missing)}", hint="plan the run again (hpcgpu run/submit)")
    values = {k: data[k] for k in names}
    values["ranks"] = tuple(RankPlan(**r) for r in data["ranks"])
    for key in ("env_notes", "node_argv", "container_prefix"):
        values[key] = tuple(data[key])
    return Plan(**values)


def plan_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / PLAN_FILE


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read plan.json (a path to the file, or to the run directory holding it)."""
    p = Path(path)
    if p.is_dir():
        p = plan_path(p)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read the plan {p}: {e.strerror or e}",
                        hint="node agents run a plan written by `hpcgpu run local` or `hpcgpu submit slurm`") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise UserError(f"{p} is not valid JSON: {e}") from None
    return plan_from_dict(data)


def rank_devices(nodes: int, nproc: int, device_type: str, backend: str) -> tuple[RankPlan, ...]:
    """Global rank = node * nproc + local rank; each rank owns cuda:<local rank> (or the CPU)."""
    return tuple(
        RankPlan(node * nproc + local, node, local, "cpu" if device_type == "cpu" else f"cuda:{local}", backend)
        for node in range(nodes) for local in range(nproc)
    )


__all__ = ["PLAN_FILE", "PLAN_FORMAT", "REDACTED", "Plan", "RankPlan", "load_plan", "plan_from_dict",
           "plan_path", "rank_devices"]
