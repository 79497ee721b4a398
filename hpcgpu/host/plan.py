"""build_plan: spec in, plan out. Pure: no processes, no files, no torch.

The plan is everything a backend needs to execute a run (and everything `--dry-run` prints):
the resolved spec, the per-node command, the environment ranks get, and the rank table.
Backends execute plans; they decide nothing.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Mapping, Optional

from hpcgpu.contract import envnames
from hpcgpu.host.envvars import REDACTED, EnvDefault, MergedEnv, debug_defaults, merge_under, redact
from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import Spec


@dataclass(frozen=True)
class RankSlot:
    """One row of the rank -> node -> device table."""

    rank: int
    node: int
    local_rank: int
    device: str


@dataclass(frozen=True)
class NodeLayout:
    """How many ranks one node runs, and on what."""

    nproc: int
    device: str  # "cuda" or "cpu"
    gpus: int  # GPUs the node uses (0 on CPU; all of them, in one process, for dp)


@dataclass(frozen=True)
class Plan:
    """A run, fully decided."""

    run_id: str
    run_dir: str
    backend: str
    spec: Spec
    layout: NodeLayout
    node_argv: tuple[str, ...]
    env: dict[str, str]
    env_notes: tuple[str, ...]
    rank_table: tuple[RankSlot, ...]
    container_prefix: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)  # backend-specific rendered text (e.g. the sbatch script)

    @property
    def world_size(self) -> int:
        return len(self.rank_table)


def node_layout(spec: Spec, visible_gpus: Optional[int]) -> NodeLayout:
    """Ranks per node from the spec and the GPUs a node can see (None: unknown, e.g. a remote node)."""
    res, strategy = spec.resources, spec.train.strategy
    want = res.gpus_per_node
    if want == "all":
        if visible_gpus is None:
            raise UserError(
                "resources.gpus_per_node is 'all', but the GPUs of the compute nodes are not known here",
                hint="give a count: --gpus-per-node 8 (or 0 for CPU ranks)",
            )
        want = visible_gpus
    if want == 0:
        return NodeLayout(nproc=1 if strategy == "dp" else res.procs_per_node, device="cpu", gpus=0)
    if visible_gpus is not None and want > visible_gpus:
        raise UserError(
            f"asked for {want} GPU(s) per node, but this machine has {visible_gpus}",
            hint="use --nproc N to run N CPU ranks instead (gloo), or --gpus all",
        )
    return NodeLayout(nproc=1 if strategy == "dp" else want, device="cuda", gpus=want)


def rank_table(nodes: int, layout: NodeLayout) -> tuple[RankSlot, ...]:
    """Global rank = node * nproc + local rank; each rank owns cuda:<local rank> (or the CPU)."""
    rows = []
    for node in range(nodes):
        for local in range(layout.nproc):
            if layout.device == "cpu":
                device = "cpu"
            elif layout.nproc == 1 and layout.gpus > 1:
                device = ",".join(f"cuda:{i}" for i in range(layout.gpus))  # dp: one process, all GPUs
            else:
                device = f"cuda:{local}"
            rows.append(RankSlot(node * layout.nproc + local, node, local, device))
    return tuple(rows)


def pin_layout(spec: Spec, layout: NodeLayout) -> Spec:
    """The spec with the resolved GPU/proc counts written in, so nodes agree on what was planned."""
    res = spec.resources.model_copy(update={"gpus_per_node": layout.gpus, "procs_per_node": layout.nproc if layout.device == "cpu" else spec.resources.procs_per_node})
    return spec.model_copy(update={"resources": res})


def rank_env(spec: Spec, run_dir: str, user_env: Mapping[str, str]) -> MergedEnv:
    """Variables every rank gets on top of the node's environment (the agent computes the same)."""
    defaults = debug_defaults(spec.debug, run_dir)
    if spec.resources.nodes == 1:
        # gloo listens on the address the host name resolves to (often the LAN); one node needs loopback only
        defaults.append(EnvDefault("GLOO_SOCKET_IFNAME", "lo", "single node: gloo connections stay on loopback"))
    merged = merge_under(defaults, spec.env, user_env)
    ckpt_dir = spec.checkpoint.dir or f"{run_dir}/checkpoints"
    merged.added.update(
        {
            envnames.RUN_DIR: run_dir,
            envnames.SPEC_FILE: f"{run_dir}/spec.yaml",
            envnames.CKPT_DIR: ckpt_dir,
        }
    )
    return merged


def node_command(run_dir: str, python: str = "python3") -> tuple[str, ...]:
    """What each node runs: the node agent, pointed at the run directory."""
    return (python, "-m", "hpcgpu", "train", "--run-dir", run_dir)


def build_plan(
    spec: Spec,
    *,
    backend: str,
    run_id: str,
    run_dir: str,
    visible_gpus: Optional[int],
    user_env: Mapping[str, str],
    python: str = "python3",
    container_prefix: tuple[str, ...] = (),
) -> Plan:
    """Decide everything about a run; raise UserError for requests that cannot be met."""
    layout = node_layout(spec, visible_gpus)
    if layout.device == "cpu" and spec.train.precision != "fp32" and spec.entry.kind == "task":
        raise UserError(
            f"train.precision is {spec.train.precision}, but the ranks run on CPUs",
            hint="use precision: fp32 on CPU, or request GPUs",
        )
    pinned = pin_layout(spec, layout)
    merged = rank_env(pinned, run_dir, user_env)
    return Plan(
        run_id=run_id,
        run_dir=run_dir,
        backend=backend,
        spec=pinned,
        layout=layout,
        node_argv=node_command(run_dir, python),
        env=merged.added,
        env_notes=tuple(merged.notes),
        rank_table=rank_table(spec.resources.nodes, layout),
        container_prefix=container_prefix,
    )


def describe_plan(plan: Plan) -> str:
    """Human-readable dry run: command, added environment (secrets redacted), rank table."""
    argv = list(plan.container_prefix) + list(plan.node_argv)
    lines = [
        f"run:      {plan.run_id} ({plan.backend})",
        f"run dir:  {plan.run_dir}",
        f"nodes:    {plan.spec.resources.nodes} x {plan.layout.nproc} rank(s) on {plan.layout.device}"
        f" = world size {plan.world_size}",
        f"entry:    {_entry_text(plan.spec)}",
        "",
        "node command:",
        f"  {shlex.join(argv)}",
        "",
        "environment added for every rank:",
    ]
    lines += [f"  {k}={v if v == REDACTED else shlex.quote(v)}" for k, v in sorted(redact(plan.env).items())]
    if plan.env_notes:
        lines += ["", "debug variables:"] + [f"  {n}" for n in plan.env_notes]
    lines += ["", "rank  node  local  device"]
    lines += [f"{r.rank:>4}  {r.node:>4}  {r.local_rank:>5}  {r.device}" for r in plan.rank_table]
    return "\n".join(lines) + "\n"


def _entry_text(spec: Spec) -> str:
    e = spec.entry
    target = e.script or e.module or e.task or ""
    return f"{e.kind} {shlex.join([target, *e.args])}"
