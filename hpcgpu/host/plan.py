"""build_plan: spec and host facts in, plan out. Pure: no processes, no files, no torch.

The plan (hpcgpu.contract.plan.Plan) is everything a backend, a node agent and a rank need, and
it is what `--dry-run` prints and what runs. This module decides the parts every backend shares
(layout, devices, process-group backend, environment, directories); each backend's `plan` method
adds its own (node command, container prefix, its request) on top of `core_plan`.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from hpcgpu.contract import envnames
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import PLAN_FILE, REDACTED, Plan, rank_devices
from hpcgpu.contract.specview import entry_kind
from hpcgpu.host.envvars import EnvDefault, MergedEnv, debug_defaults, merge_under
from hpcgpu.host.facts import HostFacts
from hpcgpu.host.secrets import redact
from hpcgpu.host.spec import Spec, resolved_data


@dataclass(frozen=True)
class NodeLayout:
    """How many ranks one node runs, and on what."""

    nproc: int
    device: str  # "cuda" or "cpu"
    gpus: int  # GPUs the node uses (0 on CPU; all of them, in one process, for dp)


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


def process_group_backend(requested: str, device: str) -> str:
    """`auto` -> nccl on GPUs, gloo on CPUs; an explicit choice is kept (and checked)."""
    if requested == "auto":
        return "nccl" if device == "cuda" else "gloo"
    if requested == "nccl" and device == "cpu":
        raise UserError("distributed.backend is nccl, but the ranks run on CPUs (nccl needs GPUs)",
                        hint="use distributed.backend: auto (gloo on CPUs), or request GPUs")
    return requested


def checkpoint_dir(spec: Spec, cwd: str, run_dir: str) -> str:
    """The one place the checkpoint directory is decided: checkpoint.dir (relative to where hpcgpu
    was started), else <run dir>/checkpoints; always absolute."""
    if spec.checkpoint.dir:
        return os.path.normpath(os.path.join(cwd, spec.checkpoint.dir))
    return os.path.join(run_dir, "checkpoints")


def pin_layout(spec: Spec, layout: NodeLayout, ckpt_dir: str) -> Spec:
    """The spec with the resolved GPU/proc counts and the absolute checkpoint dir written in."""
    res = spec.resources.model_copy(update={
        "gpus_per_node": layout.gpus,
        "procs_per_node": layout.nproc if layout.device == "cpu" else spec.resources.procs_per_node})
    return spec.model_copy(update={"resources": res,
                                   "checkpoint": spec.checkpoint.model_copy(update={"dir": ckpt_dir})})


def rank_defaults(spec: Spec, run_dir: str) -> list[EnvDefault]:
    """Every default hpcgpu sets for the ranks of this spec (the user's values win over them)."""
    defaults = debug_defaults(spec.debug, run_dir, watchdog=spec.watchdog.stall_s > 0)
    if spec.resources.nodes == 1:
        # gloo listens on the address the host name resolves to (often the LAN); one node needs loopback only
        defaults.append(EnvDefault("GLOO_SOCKET_IFNAME", "lo", "single node: gloo connections stay on loopback",
                                   "https://docs.pytorch.org/docs/stable/distributed.html#common-environment-variables"))
    return defaults


def rank_env(spec: Spec, run_dir: str, ckpt_dir: str, user_env: Mapping[str, str]) -> MergedEnv:
    """Variables every rank gets on top of the node's environment."""
    merged = merge_under(rank_defaults(spec, run_dir), spec.env, user_env, spec.secret_env)
    merged.added.update({
        envnames.RUN_DIR: run_dir,
        envnames.PLAN_FILE: f"{run_dir}/{PLAN_FILE}",
        envnames.SPEC_FILE: f"{run_dir}/spec.yaml",
        envnames.CKPT_DIR: ckpt_dir,
    })
    return merged


def agent_command(python: str, run_dir: str) -> tuple[str, ...]:
    """What each node runs: the node agent, pointed at the plan."""
    return (python, "-m", "hpcgpu", "train", "--plan", f"{run_dir}/{PLAN_FILE}")


def core_plan(spec: Spec, facts: HostFacts, *, backend: str, run_id: str, run_dir: str,
              visible_gpus: Optional[int], created: float = 0.0) -> Plan:
    """Everything backends share; raise UserError for requests that cannot be met."""
    if not os.path.isabs(run_dir):
        raise ValueError(f"run_dir must be absolute, got {run_dir!r}")
    layout = node_layout(spec, visible_gpus)
    if layout.device == "cpu" and spec.train.precision == "fp16" and spec.entry.kind == "task":
        raise UserError(
            "train.precision is fp16, but the ranks run on CPUs (fp16 autocast needs CUDA's gradient scaler)",
            hint="use precision: bf16 (autocast on CPUs) or fp32 on CPU, or request GPUs",
        )
    detail_on_cpu = layout.device == "cpu" and spec.debug.torch_distributed == "detail"
    if detail_on_cpu and spec.entry.kind == "task" and spec.train.strategy != "dp":
        raise UserError(
            f"debug.torch_distributed is detail, but the ranks run on CPUs: torch crashes (SIGSEGV) setting up "
            f"{spec.train.strategy.upper()} over gloo in DETAIL mode, under plain torchrun too",
            hint="use debug.torch_distributed: info on CPU, or detail with GPUs")
    ckpt_dir = checkpoint_dir(spec, facts.cwd, run_dir)
    pinned = pin_layout(spec, layout, ckpt_dir)
    merged = rank_env(pinned, run_dir, ckpt_dir, facts.environ)
    if detail_on_cpu and spec.entry.kind != "task":
        merged.notes.append("warning: TORCH_DISTRIBUTED_DEBUG=DETAIL on CPU ranks: torch crashes (SIGSEGV) when a "
                            "script wraps a model in DDP over gloo in this mode; use debug.torch_distributed: info")
    pg_backend = process_group_backend(spec.distributed.backend, layout.device)
    return Plan(
        run_id=run_id, run_dir=run_dir, ckpt_dir=ckpt_dir, backend=backend,
        nodes=spec.resources.nodes, nproc_per_node=layout.nproc, device_type=layout.device,
        gpus_per_node=layout.gpus,
        process_group_backend=pg_backend, precision=spec.train.precision,
        ranks=rank_devices(spec.resources.nodes, layout.nproc, layout.device, pg_backend),
        env=redact(merged.added, spec.secret_env), env_notes=tuple(merged.notes),
        node_argv=agent_command(facts.python, run_dir), container_prefix=(), request={},
        spec=resolved_data(pinned), created=created,
    )


def with_parts(plan: Plan, **parts: Any) -> Plan:
    """The plan with a backend's own parts (node_argv, container_prefix, request) filled in."""
    return dataclasses.replace(plan, **parts)


def describe_plan(plan: Plan) -> str:
    """Human-readable dry run: command, added environment (secrets redacted), rank table."""
    argv = list(plan.container_prefix) + list(plan.node_argv)
    lines = [
        f"run:      {plan.run_id} ({plan.backend})",
        f"run dir:  {plan.run_dir}",
        f"nodes:    {plan.nodes} x {plan.nproc_per_node} rank(s) on {plan.device_type}"
        f" = world size {plan.world_size}, {plan.process_group_backend}, {plan.precision}",
        f"entry:    {entry_text(plan.spec)}",
        f"watchdog: {watchdog_text(plan.spec)}",
        "",
        "node command:",
        f"  {shlex.join(argv)}",
        "",
        "environment added for every rank:",
    ]
    lines += [f"  {k}={v if v == REDACTED else shlex.quote(v)}" for k, v in sorted(plan.env.items())]
    if plan.env_notes:
        lines += ["", "debug variables:"] + [f"  {n}" for n in plan.env_notes]
    lines += ["", rank_table_text(plan)]
    return "\n".join(lines) + "\n"


def rank_table_text(plan: Plan) -> str:
    """The rank -> node -> device table (with the process-group backend of every rank)."""
    rows = ["rank  node  local  device   backend"]
    rows += [f"{r.rank:>4}  {r.node:>4}  {r.local_rank:>5}  {r.device:<8} {r.backend}"
             for r in plan.ranks]
    return "\n".join(rows)


def watchdog_text(spec: Mapping[str, Any], slurm: bool = False) -> str:
    """What the hang watchdog will do (docs/troubleshooting.md)."""
    w = spec.get("watchdog") or {}
    if not w.get("stall_s"):
        return "off (watchdog.stall_s 0): a hang ends only at distributed.timeout_s"
    then = (f"restart the ranks (distributed.max_restarts {spec['distributed']['max_restarts']})"
            if spec["distributed"]["max_restarts"] else "end the run with status 76")
    if slurm and w.get("requeues"):
        then += f"; a job requeues without the hung node, up to {w['requeues']} times (watchdog.requeues)"
    return f"hang report after {w['stall_s']} s without progress on any rank, then {then}"


def entry_text(spec: Mapping[str, Any]) -> str:
    e = spec["entry"]
    target = e.get("script") or e.get("module") or e.get("task") or ""
    return f"{entry_kind(e.get('script'), e.get('module'))} {shlex.join([target, *e.get('args', [])])}"
