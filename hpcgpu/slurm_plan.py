"""The Slurm side of a plan: sbatch parameters and the exact sbatch script. Pure and torch-free.

The script is rendered by submitit's own renderer (`_make_sbatch_string`, which shlex-quotes every
#SBATCH value), with the same command submitit's executor uses, so `--dry-run` prints exactly what
`sbatch` will get. One task per node; each runs the node agent through hpcgpu's NodeCommand.
"""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from typing import Any

from hpcgpu.errors import UserError
from hpcgpu.plan import Plan
from hpcgpu.spec import Spec


def time_to_minutes(text: str) -> int:
    """Slurm time syntax (MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) -> whole minutes, rounded up."""
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
        parts = [int(p) for p in text.split(":")] + [0, 0]
        hours, minutes, seconds = parts[0], parts[1], parts[2]
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts
    return days * 1440 + hours * 60 + minutes + math.ceil(seconds / 60)


def submitit_folder(run_dir: str) -> str:
    """Where submitit keeps the job's pickles and per-node logs (%j = job id, %t = node)."""
    return f"{run_dir}/submitit"


def sbatch_parameters(spec: Spec, srun_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """submitit SlurmExecutor parameters for the spec: one task per node, warning signal, requeue."""
    res, slurm = spec.resources, spec.slurm
    params: dict[str, Any] = {
        "job_name": spec.name,
        "nodes": res.nodes,
        "ntasks_per_node": 1,  # one node agent per node; it starts the ranks (torchrun's model)
        "signal_delay_s": slurm.signal_before_s,
        "stderr_to_stdout": True,
        # if a node agent fails, end the other nodes' tasks now instead of at their collective timeout
        "srun_args": ["--kill-on-bad-exit=1", *srun_args],
        "additional_parameters": {"requeue": True},
    }
    if isinstance(res.gpus_per_node, int) and res.gpus_per_node > 0:
        params["gpus_per_node"] = res.gpus_per_node
    if res.cpus_per_task:
        params["cpus_per_task"] = res.cpus_per_task
    if res.time:
        params["time"] = time_to_minutes(res.time)
    if res.mem:
        params["additional_parameters"]["mem"] = res.mem  # submitit's own `mem` expects GB as a float
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(slurm, key):
            params[key] = getattr(slurm, key)
    for key, value in slurm.extra.items():
        params["additional_parameters"][key.replace("_", "-")] = value
    return params


def submit_command(python: str, folder: str) -> str:
    """The command submitit's SlurmExecutor puts after srun (see _submitit_command_str)."""
    return " ".join([shlex.quote(python), "-u -m submitit.core._submit", shlex.quote(folder)])


def render_sbatch(params: dict[str, Any], folder: str, python: str) -> str:
    """The sbatch script exactly as submitit will write it."""
    from submitit.slurm.slurm import _make_sbatch_string  # torch-free; imported only here

    return _make_sbatch_string(command=submit_command(python, folder), folder=folder, **params)


def describe_slurm(plan: Plan) -> str:
    """Dry run for Slurm: the script, then the rank -> node -> device table."""
    table = ["rank  node        local  device"]
    table += [f"{r.rank:>4}  node-index {r.node:<2} {r.local_rank:>3}  {r.device}" for r in plan.rank_table]
    return (
        f"run:      {plan.run_id} (slurm)\nrun dir:  {plan.run_dir}\n"
        f"nodes:    {plan.spec.resources.nodes} x {plan.layout.nproc} rank(s) on {plan.layout.device} = world size {plan.world_size}\n"
        f"each node runs: {shlex.join([*plan.container_prefix, *plan.node_argv])}\n\n"
        f"--- sbatch script ---\n{plan.extra['sbatch']}--- end ---\n\n" + "\n".join(table) + "\n"
    )


_JOB_ID = re.compile(r"\d+(_\d+)?")


def valid_job_id(job_id: str) -> str:
    """Job ids reach scontrol/scancel only when they look like one (12345 or 12345_7)."""
    if not _JOB_ID.fullmatch(str(job_id)):
        raise UserError(f"{job_id!r} is not a Slurm job id")
    return str(job_id)


def partition_fit_problem(nodes: int, gpus_per_node: int, partition: str, sinfo_rows: list[str]) -> str:
    """Why the request cannot fit the partition ('' if it can). Rows: `sinfo -h -o '%P|%D|%G'`."""
    rows = [r.split("|") for r in sinfo_rows if r.strip()]
    mine = [r for r in rows if r[0].rstrip("*") == partition]
    if not mine:
        known = ", ".join(sorted({r[0].rstrip("*") for r in rows})) or "none"
        return f"partition {partition!r} does not exist (partitions: {known})"
    total_nodes = sum(int(r[1]) for r in mine)
    if nodes > total_nodes:
        return f"asked for {nodes} nodes, partition {partition!r} has {total_nodes}"
    max_gpus = max((_gpus_in_gres(r[2]) for r in mine), default=0)
    if gpus_per_node > max_gpus:
        return f"asked for {gpus_per_node} GPUs per node, nodes of partition {partition!r} have at most {max_gpus}"
    return ""


def _gpus_in_gres(gres: str) -> int:
    """'gpu:h100:8(S:0-1),shard:4' -> 8; '(null)' -> 0."""
    m = re.search(r"gpu(?::[\w.-]+)?:(\d+)", gres)
    return int(m.group(1)) if m else 0


def folder_path(run_dir: str) -> Path:
    return Path(submitit_folder(run_dir))
