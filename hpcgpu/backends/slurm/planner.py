"""The Slurm side of a plan: sbatch parameters and the exact sbatch script. Pure and torch-free.

The script is rendered by submitit's own renderer (`_make_sbatch_string`, which shlex-quotes every
#SBATCH value), and the backend submits this very text, so `--dry-run` prints exactly what `sbatch`
gets. One task per node; each runs the node agent through hpcgpu's NodeCommand.

Quoting alone does not make a value safe: a newline inside a quoted #SBATCH value ends that line, and
bash runs the next one as a command. Every value that reaches the script is therefore checked here.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
from typing import Any, Mapping

from hpcgpu.contract import envnames
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import Plan
from hpcgpu.contract.text import has_control_chars
from hpcgpu.host.facts import HostFacts
from hpcgpu.host.plan import agent_command, core_plan, rank_table_text, watchdog_text, with_parts
from hpcgpu.host.spec import Spec

#: Variables Slurm sets that the node agent reads; docker/podman do not inherit the environment,
#: so these are passed by name when the node runs under Slurm (a name that is unset passes nothing).
SLURM_ENV_NAMES = (
    "CUDA_VISIBLE_DEVICES", "SLURMD_NODENAME", "SLURM_ARRAY_JOB_ID", "SLURM_GPUS_ON_NODE",
    "SLURM_GPUS_PER_NODE", "SLURM_JOB_GPUS", "SLURM_JOB_ID", "SLURM_JOB_NODELIST",
    "SLURM_JOB_NUM_NODES", "SLURM_LOCALID", "SLURM_NNODES", "SLURM_NODEID", "SLURM_NTASKS",
    "SLURM_NTASKS_PER_NODE", "SLURM_PROCID", "SLURM_RESTART_COUNT", "SLURM_STEP_ID",
    "SLURM_STEP_NODELIST", "SLURM_TASKS_PER_NODE",
)

#: sbatch options hpcgpu sets itself (or that break its one-task-per-node contract) -> what to use instead
RESERVED_OPTIONS: dict[str, str] = {
    "nodes": "resources.nodes / --nodes",
    "ntasks": "nothing: hpcgpu runs one task per node (the node agent), which starts the ranks",
    "ntasks-per-node": "resources.gpus_per_node or procs_per_node: one task per node starts the ranks",
    "gpus-per-node": "resources.gpus_per_node / --gpus-per-node",
    "cpus-per-task": "resources.cpus_per_task / --cpus-per-task",
    "mem": "resources.mem / --mem",
    "time": "resources.time / --time",
    "partition": "slurm.partition / --partition",
    "account": "slurm.account / --account",
    "qos": "slurm.qos / --qos",
    "constraint": "slurm.constraint / --constraint",
    "job-name": "name / --name",
    "signal": "slurm.signal_before_s",
    "requeue": "nothing: hpcgpu jobs are always requeueable",
    "no-requeue": "slurm.max_timeout_requeues: 0 (preempted jobs must be requeued to resume)",
    "output": "nothing: logs go to <run dir>/logs and <run dir>/submitit",
    "error": "nothing: logs go to <run dir>/logs and <run dir>/submitit",
    "open-mode": "nothing: logs are appended across requeues",
    "array": "separate submissions (hpcgpu submits one job per run)",
    "wrap": "entry.script / entry.module",
}

#: CPUs (as Slurm counts them: cores, or hardware threads with SMT) per GPU rank when the spec does not
#: say (resources.cpus_per_task): the rank's own thread, its DataLoader workers, NCCL's proxy threads and
#: the node agent all need a core; one per rank made them queue on each other. Capped at the fair share
#: of a node (its CPUs / its GPUs) when sinfo told us, so the default never asks for more than the
#: GPUs' share and never makes a job unrunnable.
DEFAULT_CPUS_PER_GPU_RANK = 8

#: submitit's stand-in for "no time limit known" in its timeout accounting (minutes, ~19 years)
UNLIMITED_MIN = 10_000_000


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


def check_value(key: str, value: Any) -> Any:
    """Refuse a value with control characters: a newline would end its #SBATCH line (code injection)."""
    if has_control_chars(value):
        raise UserError(
            f"{key}: {value!r} contains a newline or another control character; in the sbatch script "
            "it would end the #SBATCH line and the rest would run as a shell command",
            hint=f"give {key} a single-line value",
        )
    return value


def check_run_dir(run_dir: str) -> str:
    """The run dir appears in #SBATCH --output and the srun line: one line, and no Slurm % patterns."""
    check_value("logging.dir (the run directory)", run_dir)
    if "%" in run_dir:
        raise UserError(f"logging.dir (the run directory) {run_dir!r} contains '%', which Slurm expands in "
                        "log file names (%j = job id)", hint="choose a logging.dir without '%'")
    return run_dir


def _extra_options(extra: Mapping[str, Any]) -> dict[str, Any]:
    """slurm.extra -> sbatch options: reserved names refused, True a bare flag, False left out."""
    out: dict[str, Any] = {}
    for key, value in extra.items():
        option = key.replace("_", "-")
        if option in RESERVED_OPTIONS:
            raise UserError(f"slurm.extra.{key}: hpcgpu sets --{option} itself",
                            hint=f"use {RESERVED_OPTIONS[option]}")
        if value is False:
            continue
        out[option] = check_value(f"slurm.extra.{key}", value)
    return out


def fair_cpus_per_gpu(partition: str | None, rows: tuple[str, ...]) -> int | None:
    """The smallest CPUs-per-GPU share among the partition's GPU nodes (sinfo `%P|%D|%G|%c`);
    None when unknown (no sinfo here, no such partition, no GPU nodes, or '4+'-style counts)."""
    shares = []
    for row in rows:
        cols = row.split("|")
        if cols[0].rstrip("*") != partition or len(cols) < 4 or not cols[3].strip().isdigit():
            continue
        gpus = _gpus_in_gres(cols[2])
        if gpus:
            shares.append(int(cols[3]) // gpus)
    return max(1, min(shares)) if shares else None


def cpus_per_task(spec: Spec, ranks_per_node: int, gpus_per_node: int, fair_per_gpu: int | None = None) -> int:
    """--cpus-per-task of the node's one task: resources.cpus_per_task when given; else
    DEFAULT_CPUS_PER_GPU_RANK per GPU rank (at most the node's fair share per GPU), one per CPU rank.
    With task/affinity or cgroups a task gets only the CPUs it asks for."""
    if spec.resources.cpus_per_task:
        return spec.resources.cpus_per_task
    if gpus_per_node <= 0:
        return ranks_per_node  # CPU ranks: OMP_NUM_THREADS=1 each
    per_rank = min(DEFAULT_CPUS_PER_GPU_RANK, fair_per_gpu or DEFAULT_CPUS_PER_GPU_RANK)
    return per_rank * ranks_per_node


def sbatch_parameters(spec: Spec, ranks_per_node: int, gpus_per_node: int,
                      srun_args: tuple[str, ...] = (), cpus: int | None = None) -> dict[str, Any]:
    """`_make_sbatch_string` keywords for the spec: one task per node, warning signal, requeue.
    cpus: the task's CPUs (cpus_per_task()); without it, the default with no partition cap.

    Raises UserError naming the key for a value that could break out of its #SBATCH line.
    """
    res, slurm = spec.resources, spec.slurm
    cpus = cpus or cpus_per_task(spec, ranks_per_node, gpus_per_node)
    params: dict[str, Any] = {
        "job_name": spec.name,
        "nodes": res.nodes,
        "ntasks_per_node": 1,  # one node agent per node; it starts the ranks (torchrun's model)
        "cpus_per_task": cpus,
        # None leaves --time out (the partition's default applies); submitit would write --time=5
        "time": time_to_minutes(res.time) if res.time else None,
        "signal_delay_s": slurm.signal_before_s,
        "stderr_to_stdout": True,
        # --cpus-per-task on the step too: Slurm 22.05 to 23.02 srun does not inherit it from sbatch
        # (it reads SRUN_CPUS_PER_TASK, not the SLURM_CPUS_PER_TASK sbatch exports), so the step would
        # get one CPU and the agent, every rank, the loader workers and NCCL's threads would share it.
        # --kill-on-bad-exit: if a node agent fails, end the other nodes' tasks now instead of at
        # their collective timeout.
        "srun_args": ["--kill-on-bad-exit=1", f"--cpus-per-task={cpus}",
                      *(check_value("container (srun argument)", a) for a in srun_args)],
        "additional_parameters": {"requeue": True},
    }
    if gpus_per_node > 0:
        params["gpus_per_node"] = gpus_per_node
    if res.mem:
        params["additional_parameters"]["mem"] = res.mem  # submitit's own `mem` expects GB as a float
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(slurm, key):
            params[key] = check_value(f"slurm.{key}", getattr(slurm, key))
    params["additional_parameters"].update(_extra_options(slurm.extra))
    return params


def node_grace_s(spec: Spec) -> int:
    """How long NodeCommand lets the node agent checkpoint after the warning signal before it requeues
    anyway: distributed.stop_grace_s, capped so the requeue happens before Slurm's kill at the limit."""
    return max(5, min(spec.distributed.stop_grace_s, spec.slurm.signal_before_s - 15))


def pyxis_node_prefix(pyxis_args: tuple[str, ...], python: str = "python3", cpus: int | None = None) -> tuple[str, ...]:
    """The argv prefix that runs the node agent in a pyxis container: a nested job step on this node.

    Given to the outer srun, --container-image would put NodeCommand inside the image too, where
    scontrol (for the requeue) and the submitting interpreter are usually missing. So NodeCommand
    stays on the host and starts `srun --overlap` (sharing the task's CPUs, memory and GPUs) with
    the pyxis options on this node only, through hpcgpu.backends.slurm.node_step (no shell).
    cpus: the task's --cpus-per-task, given to the nested step too (srun does not inherit it on
    Slurm 22.05 to 23.02; see sbatch_parameters).
    """
    for arg in pyxis_args:
        check_value("container (pyxis srun argument)", arg)
    cpu_args = (f"--cpus-per-task={cpus}",) if cpus else ()
    return (python, "-m", "hpcgpu.backends.slurm.node_step", *cpu_args, *pyxis_args, "--")


def submit_command(python: str, folder: str) -> str:
    """The command after srun: submitit's runner, which unpickles and calls the NodeCommand."""
    return " ".join([shlex.quote(python), "-u -m submitit.core._submit", shlex.quote(folder)])


def render_sbatch(params: dict[str, Any], folder: str, python: str) -> str:
    """The sbatch script exactly as it will be submitted."""
    from submitit.slurm.slurm import _make_sbatch_string  # torch-free; imported only here

    check_value("python", python)
    return _make_sbatch_string(command=submit_command(python, folder), folder=folder, **params)


def container_parts(spec: Spec, facts: HostFacts, plan: Plan, cpus: int | None = None) -> tuple[str, ...]:
    """The prefix that runs the node agent in the spec's container (pyxis: a nested step per node)."""
    from hpcgpu.host.container import ContainerSettings, RunContext, container_prefix, pyxis_srun_args

    # the container is given the names of the variables the node agent reads (values stay in the env)
    names = {*plan.env, *spec.env, envnames.RDZV_ENDPOINT, envnames.JOB_RESTARTS}
    ctx = RunContext(code_dir=facts.cwd, run_dir=plan.run_dir,
                     ckpt_dir=plan.ckpt_dir, env_names=tuple(sorted(names)),
                     gpus=plan.gpus_per_node > 0, uid=facts.uid, gid=facts.gid,
                     infiniband=facts.infiniband, scheduler_env_names=SLURM_ENV_NAMES)
    settings = ContainerSettings.from_spec(spec.container)
    if settings.runtime == "pyxis":  # a nested step per node, so the requeue stays on the host
        return pyxis_node_prefix(tuple(pyxis_srun_args(settings, ctx, facts.environ)), facts.python, cpus)
    if settings.runtime in ("docker", "podman") and ctx.gpus:
        # `--gpus all` would give the container every GPU of the node, other jobs' too (it is not in
        # the job's cgroup); the job's GPUs are known only on the node, so node_gpus adds them there
        prefix = container_prefix(settings, dataclasses.replace(ctx, gpus=False), facts.environ)
        return (facts.python, "-m", "hpcgpu.backends.slurm.node_gpus", "--", *prefix)
    return tuple(container_prefix(settings, ctx, facts.environ))


def slurm_plan(spec: Spec, facts: HostFacts, *, run_id: str, run_dir: str, created: float = 0.0) -> Plan:
    """The plan of a Slurm run: the node layout is the request (compute nodes' GPUs are not visible
    here); its request holds the sbatch parameters, the exact script and the time limit. Pure.

    facts.python runs submitit's runner on the nodes (the submitting interpreter, on a shared file
    system) and the node agent; inside a container the agent runs with the image's python3.
    """
    check_run_dir(run_dir)
    partition = check_value("slurm.partition", spec.slurm.partition) if spec.slurm.partition \
        else default_partition(facts.partitions)
    node_gpus, assumed = None, ""
    if spec.resources.gpus_per_node == "all":
        node_gpus, assumed = gpus_of_every_node(partition, facts.partitions)
    plan = core_plan(spec, facts, backend="slurm", run_id=run_id, run_dir=run_dir, visible_gpus=node_gpus,
                     created=created)
    cpus = cpus_per_task(spec, plan.nproc_per_node, plan.gpus_per_node,
                         fair_cpus_per_gpu(partition, facts.partitions))
    if spec.container is not None:
        plan = with_parts(plan, node_argv=agent_command("python3", run_dir))
        plan = with_parts(plan, container_prefix=container_parts(spec, facts, plan, cpus))
    params = sbatch_parameters(spec, plan.nproc_per_node, plan.gpus_per_node, cpus=cpus)
    request = {
        "sbatch_parameters": params,
        "python": check_value("python", facts.python),
        "sbatch": render_sbatch(params, submitit_folder(run_dir), facts.python),
        "partition": partition,
        # submitit's timeout-vs-preemption accounting; None: Slurm's tools are not here (dry run elsewhere)
        "time_limit_min": time_limit_minutes(params, partition, facts.partitions),
        "fit_problem": partition_fit_problem(spec.resources.nodes, plan.gpus_per_node, partition, list(facts.partitions),
                                             cpus_per_task=params.get("cpus_per_task") or 0,
                                             mem=spec.resources.mem) if partition and facts.partitions else "",
        "grace_s": node_grace_s(spec),
        "rdzv_timeout_s": spec.distributed.rdzv_timeout_s,
        "max_timeout_requeues": spec.slurm.max_timeout_requeues,
        # after a hang: requeues without the hung node(s) (backends/slurm/node_hangs.py)
        "hang_requeues": spec.watchdog.requeues if spec.watchdog.stall_s else 0,
        # set when gpus_per_node 'all' was a guess (no sinfo here): fine for a dry run, refused by a submission
        "assumed": assumed,
    }
    return with_parts(plan, request=request)


#: GPUs per node a dry run assumes for gpus_per_node 'all' when sinfo cannot say (no Slurm here)
ASSUMED_GPUS_PER_NODE = 8


def gpus_of_every_node(partition: str | None, rows: tuple[str, ...]) -> tuple[int, str]:
    """gpus_per_node 'all' on Slurm: the fewest GPUs a node of the partition has, so that every node
    the job may get has them (0 on a partition without GPUs: CPU ranks); without sinfo, an assumption
    of ASSUMED_GPUS_PER_NODE, said in the second value (a submission refuses it, a dry run shows it)."""
    mine = [r.split("|") for r in rows if r.strip() and r.split("|")[0].rstrip("*") == partition]
    if partition and mine and all(len(r) > 2 for r in mine):
        return min(_gpus_in_gres(r[2]) for r in mine), ""
    return ASSUMED_GPUS_PER_NODE, (f"resources.gpus_per_node 'all' taken as {ASSUMED_GPUS_PER_NODE} GPUs per node: "
                                   "the compute nodes' GPUs are not known here (no sinfo answer for the partition); "
                                   "give --gpus-per-node N")


def default_partition(rows: tuple[str, ...]) -> str | None:
    """The partition sinfo marks with '*' (None when there is none or sinfo was not asked)."""
    return next((r.split("|")[0].rstrip("*") for r in rows if r.split("|")[0].endswith("*")), None)


def time_limit_minutes(params: Mapping[str, Any], partition: str | None, rows: tuple[str, ...]) -> int | None:
    """The job's time limit: resources.time, else the partition's default (or maximum) time,
    UNLIMITED_MIN when it has none; None when the partitions are unknown here."""
    if params.get("time"):
        return int(params["time"])
    if not rows:
        return None
    for row in rows:
        name, *rest = row.split("|")
        default_time, max_time = (rest + ["", "", "", "", "", ""])[4:6]
        if name.rstrip("*") == partition:
            return limit_to_minutes(default_time) or limit_to_minutes(max_time) or UNLIMITED_MIN
    return UNLIMITED_MIN


def describe_slurm(plan: Plan) -> str:
    """Dry run for Slurm: the script, then the rank -> node -> device table."""
    spec, request = plan.spec, plan.request
    notes = []
    grace, stop_grace = request["grace_s"], spec["distributed"]["stop_grace_s"]
    if grace < stop_grace:
        notes.append(f"note: after the warning signal the node agent gets {grace} s to checkpoint "
                     f"(distributed.stop_grace_s {stop_grace} s, capped at "
                     f"slurm.signal_before_s {spec['slurm']['signal_before_s']} s - 15 s so the requeue comes first)")
    limit = request["time_limit_min"]
    if not spec["resources"]["time"]:
        notes.append("note: no resources.time: the partition's default time limit applies"
                     + (f" ({limit} min)" if limit and limit != UNLIMITED_MIN else " (none)" if limit else ""))
    if request["fit_problem"]:
        notes.append(f"note: the job cannot run: {request['fit_problem']}")
    if request.get("assumed"):
        notes.append(f"note: assumed {request['assumed']}")
    return (
        f"run:      {plan.run_id} (slurm)\nrun dir:  {plan.run_dir}\n"
        f"nodes:    {plan.nodes} x {plan.nproc_per_node} rank(s) on {plan.device_type} = world size {plan.world_size}"
        f", {plan.process_group_backend}, {plan.precision}\n"
        f"watchdog: {watchdog_text(spec, slurm=True)}\n"
        f"each node runs: {shlex.join([*plan.container_prefix, *plan.node_argv])}\n\n"
        f"--- sbatch script ---\n{request['sbatch']}--- end ---\n\n" + rank_table_text(plan) + "\n"
        + "".join(f"{n}\n" for n in notes)
    )


_JOB_ID = re.compile(r"\d+(_\d+)?")


def valid_job_id(job_id: str) -> str:
    """Job ids reach scontrol/scancel only when they look like one (12345 or 12345_7)."""
    if not _JOB_ID.fullmatch(str(job_id)):
        raise UserError(f"{job_id!r} is not a Slurm job id")
    return str(job_id)


def partition_fit_problem(nodes: int, gpus_per_node: int, partition: str, sinfo_rows: list[str],
                          cpus_per_task: int = 0, mem: str | None = None) -> str:
    """Why the request cannot fit the partition ('' if it can). Rows: `sinfo -h -o '%P|%D|%G|%c|%m'`
    (the CPU and memory columns may be missing)."""
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
    max_cpus = _largest(mine, 3)
    if max_cpus and cpus_per_task > max_cpus:
        return (f"asked for {cpus_per_task} CPUs per node (resources.cpus_per_task; by default "
                f"{DEFAULT_CPUS_PER_GPU_RANK} per GPU rank, one per CPU rank), "
                f"nodes of partition {partition!r} have at most {max_cpus}")
    max_mem = _largest(mine, 4)
    if max_mem and mem and _mem_mb(mem) > max_mem:
        return f"asked for {mem} of memory per node, nodes of partition {partition!r} have at most {max_mem}M"
    return ""


def _largest(rows: list[list[str]], column: int) -> int | None:
    """The largest per-node count in a sinfo column; None when a row lacks it or says '4+' (nodes
    of several sizes: the largest is unknown), so the check is left to sbatch."""
    values = [r[column].strip() if len(r) > column else "" for r in rows]
    if not values or not all(v.isdigit() for v in values):
        return None
    return max(int(v) for v in values)


def _mem_mb(mem: str) -> int:
    """resources.mem (64G, 512M, 8000) -> MB, as Slurm counts it (1G = 1024M)."""
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 ** 2}
    return math.ceil(int(mem.rstrip("KMGT")) * units.get(mem[-1], 1))


def _gpus_in_gres(gres: str) -> int:
    """'gpu:h100:8(S:0-1),shard:4' -> 8; '(null)' -> 0."""
    m = re.search(r"gpu(?::[\w.-]+)?:(\d+)", gres)
    return int(m.group(1)) if m else 0


def limit_to_minutes(text: str) -> int | None:
    """A partition's time limit as sinfo prints it (%l, %L) -> minutes; UNLIMITED_MIN for infinite,
    None when unset ('n/a', 'NONE')."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited"):
        return UNLIMITED_MIN
    if not re.fullmatch(r"(\d+-)?\d+(:\d+){0,2}", text):
        return None
    return time_to_minutes(text)

