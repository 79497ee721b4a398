"""`hpcgpu submit slurm`: one task per node, each running the node agent, through submitit."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from hpcgpu.cli.common import (load_with_overrides, materialize_run, remember_launch_dir, reserve_run_dir,
                               return_to_launch_dir, run_location, spec_option)
from hpcgpu.contract.errors import UserError


@click.group()
def submit() -> None:
    """Submit a job to a scheduler."""


@submit.command("slurm", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@spec_option
@click.option("--nodes", type=click.IntRange(min=1), default=None, help="Number of nodes (one node agent each).")
@click.option("--gpus-per-node", type=click.IntRange(min=0), default=None, help="GPUs per node (one rank each); 0 for CPU ranks.")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=None, help="CPU ranks per node (implies --gpus-per-node 0).")
@click.option("--partition", default=None, help="sbatch --partition.")
@click.option("--account", default=None, help="sbatch --account.")
@click.option("--qos", default=None, help="sbatch --qos.")
@click.option("--time", "time_limit", default=None, metavar="[D-]HH:MM:SS", help="Wall-time limit.")
@click.option("--constraint", default=None, help="sbatch --constraint (node features).")
@click.option("--mem", default=None, metavar="SIZE", help="Memory per node, e.g. 64G.")
@click.option("--cpus-per-task", type=click.IntRange(min=1), default=None, help="CPU cores for each node agent and its ranks.")
@click.option("--container", default=None, metavar="IMAGE", help="Run the node agent in IMAGE (runtime from the spec, default apptainer).")
@click.option("--name", default=None, help="Job name.")
@click.option("--dry-run", is_flag=True, help="Print the sbatch script exactly as it will be submitted, and the rank table.")
@click.option("--wait", is_flag=True, help="Wait for the job to end; exit with its status.")
@click.option("--follow", is_flag=True, help="Like --wait, printing rank 0's log as it grows.")
@click.option("--resume", "resume_run", default=None, metavar="RUN",
              help="Submit a new job that continues RUN (cancelled, stopped, timed out) from its newest "
                   "checkpoint, with the spec it was started with. Combines only with --dry-run/--wait/--follow.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- SCRIPT ARGS...]")
def submit_slurm(spec_file, nodes, gpus_per_node, nproc_per_node, partition, account, qos, time_limit,
                 constraint, mem, cpus_per_task, container, name, dry_run, wait, follow, command,
                 resume_run=None) -> int:
    """Submit the spec's job to Slurm: one task per node, each starting that node's ranks.

    \b
    Examples:
      hpcgpu submit slurm --nodes 2 --gpus-per-node 8 --time 04:00:00 --partition gpu
      hpcgpu submit slurm --nodes 2 --nproc-per-node 2 --follow     # CPU ranks (gloo)
      hpcgpu submit slurm --dry-run                                 # print the sbatch script
      hpcgpu submit slurm --resume demo-2026 --follow               # continue a cancelled run

    Before the time limit or a preemption Slurm sends SIGUSR2 (slurm.signal_before_s); the ranks
    agree on a step, checkpoint, and the job is requeued from the host side and resumes there.
    Timeouts requeue at most slurm.max_timeout_requeues times; preemptions always; failures never.
    """
    if resume_run:
        given = [f for f, v in (("-f", spec_file), ("--nodes", nodes), ("--gpus-per-node", gpus_per_node),
                                ("--nproc-per-node", nproc_per_node), ("--partition", partition),
                                ("--account", account), ("--qos", qos), ("--time", time_limit),
                                ("--constraint", constraint), ("--mem", mem), ("--cpus-per-task", cpus_per_task),
                                ("--container", container), ("--name", name), ("-- CMD", command)) if v]
        if given:
            raise UserError(f"--resume continues a run with the spec it was started with; it takes no {', '.join(given)}",
                            hint="start a new run to change the job, or edit nothing and resume")
        return _resume(resume_run, dry_run, wait, follow)
    flags = {"name": name, "resources.nodes": nodes, "resources.cpus_per_task": cpus_per_task,
             "resources.mem": mem, "resources.time": time_limit, "slurm.partition": partition,
             "slurm.account": account, "slurm.qos": qos, "slurm.constraint": constraint}
    if nproc_per_node is not None and gpus_per_node:
        raise UserError("--nproc-per-node runs CPU ranks; it cannot be combined with --gpus-per-node "
                        f"{gpus_per_node}", hint="GPU jobs start one rank per GPU: give --gpus-per-node only")
    if nproc_per_node is not None:
        flags.update({"resources.gpus_per_node": 0, "resources.procs_per_node": nproc_per_node})
    elif gpus_per_node is not None:
        flags["resources.gpus_per_node"] = gpus_per_node
    spec, source = load_with_overrides(spec_file, flags, command)
    if container:
        from hpcgpu.host.spec import apply_overrides

        # only the image changes: the spec's runtime, binds and extra_args stay (apptainer by default)
        spec = apply_overrides(spec, {"container.image": container,
                                      "container.runtime": None if spec.container else "apptainer"})
    plan = _plan(spec)
    if dry_run:
        from hpcgpu.backends.slurm.planner import describe_slurm

        click.echo(f"spec:     {source}")
        click.echo(describe_slurm(plan), nl=False)
        return 0
    from hpcgpu.backends.slurm.backend import SlurmBackend, check_fits, require_slurm, restore_secret_env
    from hpcgpu.host.envvars import withheld_env

    require_slurm()
    check_fits(plan)
    if spec.container:
        from hpcgpu.host.container import check_runtime

        check_runtime(spec.container.runtime, spec.container.image)
    plan = reserve_run_dir(lambda: _plan(spec))
    materialize_run(plan, nodes=spec.resources.nodes)
    remember_launch_dir(plan.run_dir)
    restore_secret_env(withheld_env())
    job_id = SlurmBackend().launch(plan)
    return _submitted(plan, job_id, wait, follow)


def _submitted(plan, job_id: str, wait: bool, follow: bool) -> int:
    spec = plan.spec
    click.echo(f"hpcgpu: submitted {plan.run_id} as Slurm job {job_id} ({spec.resources.nodes} node(s) x {plan.layout.nproc} rank(s))")
    click.echo(f"  run dir: {plan.run_dir}")
    click.echo(f"  follow:  hpcgpu logs {plan.run_id} --follow    status: hpcgpu status {plan.run_id}")
    sys.stdout.flush()
    if wait or follow:
        return _wait(plan, follow)
    return 0


#: how a run ended that `--resume` may continue (FAILED too: the fix may be outside the spec, e.g. a full
#: disk; UNKNOWN: slurmctld, which answered, has forgotten the job, so it ended, before writing result.json)
RESUMABLE = frozenset({"STOPPED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "FAILED", "OUT_OF_MEMORY",
                       "BOOT_FAIL", "DEADLINE", "UNKNOWN"})


def _resume(ref: str, dry_run: bool, wait: bool, follow: bool) -> int:
    """A new job in the run's own run dir: its ranks resume from the newest valid checkpoint there."""
    from hpcgpu.backends.slurm.backend import SlurmBackend, check_fits, require_slurm
    from hpcgpu.host.runs import find_run, read_json, update_record
    from hpcgpu.backends.slurm.planner import describe_slurm
    from hpcgpu.host.spec import load_spec

    record = find_run(ref)
    if record.backend != "slurm":
        raise UserError(f"run {record.id} ran on {record.backend}, not Slurm",
                        hint=f"continue it with: hpcgpu run local --resume {record.id}")
    run_dir = Path(record.run_dir)
    spec, _ = load_spec(run_dir / "spec.yaml")
    return_to_launch_dir(record.run_dir)
    plan = _plan(spec, record.id, record.run_dir)
    if dry_run:
        click.echo(f"spec:     {run_dir / 'spec.yaml'} (resumed)")
        click.echo(describe_slurm(plan), nl=False)
        return 0
    require_slurm()
    backend = SlurmBackend()
    state = backend.status(record)
    if state in ("DONE", "COMPLETED"):
        raise UserError(f"run {record.id} has finished (job {record.job_id}: {state}); there is nothing to continue",
                        hint="to train longer, start a new run with checkpoint.resume set to its last checkpoint")
    if state not in RESUMABLE:
        raise UserError(f"run {record.id} is not over: job {record.job_id} is {state}",
                        hint=f"a requeued job resumes by itself; to resubmit, end it first: hpcgpu cancel {record.id}")
    check_fits(plan)
    if spec.container:
        from hpcgpu.host.container import check_runtime

        check_runtime(spec.container.runtime, spec.container.image)
    # The previous job's result would read as the new job's outcome: keep it under its job id.
    result, kept = run_dir / "result.json", run_dir / f"result-job{record.job_id}.json"
    if result.exists():
        result.replace(kept)
    try:
        job_id = backend.launch(plan, resumed=True)
    except BaseException:
        if kept.exists() and not result.exists():
            kept.replace(result)  # refused: the run is as it was
        raise
    info = read_json(run_dir / "run.json") or {}
    update_record(run_dir, restarts=int(info.get("restarts") or 0) + 1)
    click.echo(f"hpcgpu: resuming {record.id} (job {record.job_id} ended {state})")
    return _submitted(plan, job_id, wait, follow)


def _plan(spec, run_id: str | None = None, run_dir: str | None = None):
    """Build the Slurm plan: the node layout is the request (the compute nodes' GPUs are not visible here).
    A fresh run id and dir unless given (a resume)."""
    from hpcgpu.backends.slurm.planner import build_slurm_plan

    if run_id is None or run_dir is None:
        run_id, run_dir = run_location(spec)
    prefix, srun_args = [], []
    if spec.container is not None:
        # the container is given the names of the variables the node agent reads (values stay in the env)
        bare = build_slurm_plan(spec, run_id=run_id, run_dir=run_dir, python=sys.executable, user_env=os.environ)
        prefix, srun_args = _container(spec, run_dir, bare.env)
    return build_slurm_plan(spec, run_id=run_id, run_dir=run_dir, python=sys.executable, user_env=os.environ,
                            container_prefix=tuple(prefix), srun_args=tuple(srun_args))


def _container(spec, run_dir: str, env: dict) -> tuple[list[str], list[str]]:
    """(prefix before the node command, extra srun args) for the spec's container."""
    from hpcgpu.contract import envnames
    from hpcgpu.host.container import ContainerSettings, RunContext, container_prefix, pyxis_srun_args
    from hpcgpu.backends.slurm.planner import pyxis_node_prefix

    want = spec.resources.gpus_per_node
    names = {*env, *spec.env, envnames.RDZV_ENDPOINT, envnames.RESTART_COUNT}
    ckpt_dir = os.path.abspath(spec.checkpoint.dir) if spec.checkpoint.dir else None
    # InfiniBand devices are looked for here: login and compute nodes of a cluster usually match
    ctx = RunContext(code_dir=os.getcwd(), run_dir=run_dir, ckpt_dir=ckpt_dir, env_names=tuple(sorted(names)),
                     gpus=isinstance(want, int) and want > 0, uid=os.getuid(), gid=os.getgid(), slurm=True,
                     infiniband=os.path.isdir("/dev/infiniband"))
    settings = ContainerSettings.from_spec(spec.container)
    if settings.runtime == "pyxis":  # a nested step per node, so the requeue stays on the host
        return list(pyxis_node_prefix(tuple(pyxis_srun_args(settings, ctx, os.environ)), sys.executable)), []
    return container_prefix(settings, ctx, os.environ), []


def _wait(plan, follow: bool) -> int:
    """Poll the job until it ends (printing rank 0's log with --follow); exit with its status.
    Ctrl-C stops waiting, not the job."""
    from hpcgpu.backends.slurm.backend import ENDED, HELD, SlurmBackend
    from hpcgpu.host.runs import find_run, read_json

    record = find_run(plan.run_dir)
    backend = SlurmBackend()
    log = Path(plan.run_dir) / "logs" / "rank0.log"
    offset = 0
    try:
        while True:
            state = backend.status(record)
            if follow:
                offset = _print_new(log, offset)  # after the state: a final state never misses the log's tail
            if state in ENDED or state in HELD:
                break
            time.sleep(1)
    except KeyboardInterrupt:
        click.echo(f"\nhpcgpu: stopped waiting; job {record.job_id} goes on (hpcgpu cancel {plan.run_id} ends it)", err=True)
        return 130
    result = read_json(Path(plan.run_dir) / "result.json") or {}
    click.echo(f"hpcgpu: job {record.job_id} ended: {state}")
    return int(result.get("exit_code", 0 if state in ("COMPLETED", "DONE") else 1))


def _print_new(log: Path, offset: int) -> int:
    """Copy what was appended to log since offset to stdout; the new offset."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return offset
    sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
    return offset + len(chunk)
