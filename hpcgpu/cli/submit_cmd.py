"""`hpcgpu submit slurm`: one task per node, each running the node agent, through submitit."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from hpcgpu.cli.common import (allow_restart_option, check_allow_restart_flag, check_json_flag, console_option, print_plan,
                               refuse_options_with_resume, set_option, spec_option, with_set_items)
from hpcgpu.cli.sweep_cmd import no_sweep_option, parallel_option, sweep_option
from hpcgpu.contract.errors import UserError


@click.group()
def submit() -> None:
    """Submit a job to a scheduler."""


@submit.command("slurm", context_settings={"allow_interspersed_args": False})
@spec_option
@set_option
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
@click.option("--json", "as_json", is_flag=True,
              help="With --dry-run: print the plan as JSON, the very object written to <run dir>/plan.json.")
@click.option("--wait", is_flag=True, help="Wait for the job to end; exit with its status.")
@click.option("--follow", is_flag=True, help="Like --wait, printing rank 0's log as it grows.")
@click.option("--resume", "resume_run", default=None, metavar="RUN",
              help="Submit a new job that continues RUN (cancelled, stopped, timed out) from its newest "
                   "checkpoint, with the spec it was started with. Combines only with --dry-run/--wait/--follow "
                   "(and --allow-restart-from-zero).")
@console_option
@allow_restart_option
@sweep_option
@parallel_option
@no_sweep_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- SCRIPT ARGS...]")
def submit_slurm(spec_file, set_items, nodes, gpus_per_node, nproc_per_node, partition, account, qos, time_limit,
                 constraint, mem, cpus_per_task, container, name, dry_run, wait, follow, command,
                 resume_run=None, as_json=False, allow_restart=False, console=None, sweep_items=(), parallel=None,
                 no_sweep=False) -> int:
    """Submit the spec's job to Slurm: one task per node, each starting that node's ranks.

    \b
    Examples:
      hpcgpu submit slurm --nodes 2 --gpus-per-node 8 --time 04:00:00 --partition gpu
      hpcgpu submit slurm --nodes 2 --nproc-per-node 2 --follow     # CPU ranks (gloo)
      hpcgpu submit slurm --nodes 4 --console all   # node logs hold every rank, [rank N] prefixed
      hpcgpu submit slurm --dry-run                                 # print the sbatch script
      hpcgpu submit slurm --dry-run --json                          # ... inside the plan.json it runs
      hpcgpu submit slurm --resume demo-2026 --follow               # continue a cancelled run

    \b
    Sweeps: one job array, one task per combination (docs/sweeps.md):
      hpcgpu submit slurm --sweep train.lr=1e-3,3e-4 --sweep train.seed=1,2 --parallel 2
      hpcgpu submit slurm --sweep train.lr=1e-3,3e-4 --dry-run      # the tasks and the array script
      hpcgpu submit slurm --resume SWEEP    # a new array of the tasks that did not finish

    Before the time limit or a preemption Slurm sends SIGUSR2 (slurm.signal_before_s); the ranks
    agree on a step, checkpoint, and the job is requeued from the host side and resumes there.
    Timeouts requeue at most slurm.max_timeout_requeues times; preemptions always; failures never.
    """
    from hpcgpu.backends import get_backend
    from hpcgpu.host import launch

    check_json_flag(as_json, dry_run)
    check_allow_restart_flag(allow_restart, resume_run)
    if resume_run:
        refuse_options_with_resume()
        from hpcgpu.cli.sweep_cmd import find_sweep_for, resume_slurm_sweep

        swept = find_sweep_for(resume_run, "slurm")
        if swept is not None:
            from hpcgpu.cli.sweep_cmd import refuse_with_sweep

            refuse_with_sweep(wait=wait, follow=follow, json=as_json)
            return resume_slurm_sweep(swept, dry_run)
        if dry_run:
            _, plan = launch.resume_plan(resume_run, "slurm", allow_restart)
            return print_plan(plan, get_backend("slurm"), f"{plan.run_dir}/spec.yaml (resumed)", as_json)
        launched = launch.resume(resume_run, "slurm", allow_restart=allow_restart)
        click.echo(f"hpcgpu: resuming {launched.plan.run_id}")
        return _submitted(launched, wait, follow)
    flags = {"name": name, "resources.nodes": nodes, "resources.cpus_per_task": cpus_per_task,
             "resources.mem": mem, "resources.time": time_limit, "slurm.partition": partition,
             "slurm.account": account, "slurm.qos": qos, "slurm.constraint": constraint,
             "logging.console": console}
    if nproc_per_node is not None and gpus_per_node:
        raise UserError("--nproc-per-node runs CPU ranks; it cannot be combined with --gpus-per-node "
                        f"{gpus_per_node}", hint="GPU jobs start one rank per GPU: give --gpus-per-node only")
    if nproc_per_node is not None:
        flags.update({"resources.gpus_per_node": 0, "resources.procs_per_node": nproc_per_node})
    elif gpus_per_node is not None:
        flags["resources.gpus_per_node"] = gpus_per_node
    spec, source = launch.load_with_overrides(spec_file, with_set_items(flags, set_items), command,
                                              (container, "apptainer"))
    from hpcgpu.cli.sweep_cmd import refuse_with_sweep, submit_slurm_sweep, sweep_request

    request = sweep_request(spec, sweep_items, parallel, no_sweep)
    if request is not None:
        refuse_with_sweep(wait=wait, follow=follow, json=as_json)
        return submit_slurm_sweep(request, dry_run)
    if dry_run:
        return print_plan(launch.plan_new(spec, "slurm"), get_backend("slurm"), source, as_json)
    return _submitted(launch.start(spec, "slurm"), wait, follow)


def _submitted(launched, wait: bool, follow: bool) -> int:
    plan, job_id = launched.plan, launched.handle.job_id
    click.echo(f"hpcgpu: submitted {plan.run_id} as Slurm job {job_id} ({plan.nodes} node(s) x {plan.nproc_per_node} rank(s))")
    click.echo(f"  run dir: {plan.run_dir}")
    click.echo(f"  follow:  hpcgpu logs {plan.run_id} --follow    status: hpcgpu status {plan.run_id}")
    sys.stdout.flush()
    if wait or follow:
        return _wait(launched, follow)
    return 0


def _wait(launched, follow: bool) -> int:
    """Poll the job until it ends (printing rank 0's log with --follow); exit with its status.
    Ctrl-C stops waiting, not the job."""
    from hpcgpu.contract.runfiles import read_result
    from hpcgpu.contract.states import RunState
    from hpcgpu.host.runs import find_run

    plan = launched.plan
    record = find_run(plan.run_dir)
    log = Path(plan.run_dir) / "logs" / "rank0.log"
    offset = 0
    try:
        while True:
            state = launched.backend.status(record).state
            if follow:
                offset = _print_new(log, offset)  # after the state: a final state never misses the log's tail
            if state.ended or state is RunState.HELD:
                break
            time.sleep(1)
    except KeyboardInterrupt:
        click.echo(f"\nhpcgpu: stopped waiting; job {record.job_id} goes on (hpcgpu cancel {plan.run_id} ends it)", err=True)
        return 130
    result = read_result(Path(plan.run_dir)) or {}
    click.echo(f"hpcgpu: job {record.job_id} ended: {state}")
    return int(result.get("exit_code", 0 if state is RunState.DONE else 1))


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
