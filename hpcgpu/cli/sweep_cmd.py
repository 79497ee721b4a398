"""The sweep half of `run local` and `submit slurm`: --sweep/--parallel, and --resume of a sweep."""

from __future__ import annotations

import os
from typing import Any, Optional

import click

from hpcgpu.contract.errors import UserError

sweep_option = click.option(
    "--sweep", "sweep_items", multiple=True, metavar="KEY=V1,V2,...",
    help="Run one task per value (repeat for a grid: every combination), e.g. --sweep train.lr=1e-3,3e-4 "
         "--sweep train.seed=1,2 (4 tasks). Replaces that key of the spec's sweep: section. See docs/sweeps.md.")
parallel_option = click.option(
    "--parallel", type=click.IntRange(min=1), default=None, metavar="N",
    help="With a sweep: at most N tasks at once (sweep.parallel).")
no_sweep_option = click.option(
    "--no-sweep", is_flag=True, help="Ignore the spec's sweep: section: one run with its base values.")


def sweep_request(spec, sweep_items: tuple[str, ...], parallel: Optional[int], no_sweep: bool):
    """The sweep asked for (None: one run)."""
    from hpcgpu.host.sweep import parse_sweep_options
    from hpcgpu.host.sweep_launch import sweep_request as make

    if no_sweep:
        if sweep_items:
            raise UserError("--no-sweep and --sweep contradict each other", hint="give one of them")
        return None
    request = make(spec, parse_sweep_options(sweep_items), parallel)
    if request is None and parallel is not None:
        raise UserError("--parallel applies to a sweep, and there is none",
                        hint="add --sweep KEY=V1,V2 (or a sweep: section to the spec)")
    return request


def refuse_with_sweep(**given: Any) -> None:
    """Options that name one run cannot combine with a sweep."""
    for flag, value in given.items():
        if value:
            raise UserError(f"--{flag.replace('_', '-')} applies to one run; a sweep has many",
                            hint="--dry-run lists the tasks and shows task 0's plan; run without --sweep for one run")


def say(text: str) -> None:
    click.echo(f"hpcgpu: {text}")


def finish_local(record, code: int) -> None:
    """The ranked table and how to go on."""
    from hpcgpu.cli.sweep_view import results_text, sweep_rows
    from hpcgpu.host.sweep_record import load_sweep

    record = load_sweep(record.sweep_dir)
    rows = sweep_rows(record)
    table = results_text(record, rows)
    if table:
        click.echo("\n" + table)
    click.echo(f"\nhpcgpu: sweep {record.id}: " + {0: "every task finished"}.get(
        code, f"not every task finished; continue with: hpcgpu run local --resume {record.id}"))
    click.echo(f"  status:      hpcgpu status {record.id}    logs: hpcgpu logs {record.id} --task N")
    click.echo(f"  tensorboard: tensorboard --logdir {record.sweep_dir}")


def run_local_sweep(request, dry_run: bool) -> int:
    from hpcgpu.backends.local import sweep as local_sweep

    if dry_run:
        click.echo(local_sweep.describe(request), nl=False)
        return 0
    record, code = local_sweep.start(request, say)
    finish_local(record, code)
    return code


def resume_local_sweep(record, dry_run: bool) -> int:
    from hpcgpu.backends.local import sweep as local_sweep
    from hpcgpu.host.sweep_launch import request_from_record

    indices = unfinished_local(record)
    if not indices:
        click.echo(f"hpcgpu: sweep {record.id}: every task has finished; nothing to resume")
        return 0
    if dry_run:
        from hpcgpu.host.sweep_launch import describe_tasks

        click.echo(describe_tasks([record.task(i) for i in indices], "to resume"), nl=False)
        return 0
    code = local_sweep.resume(record, request_from_record(record), indices, say)
    finish_local(record, code)
    return code


def unfinished_local(record) -> list[int]:
    """Tasks of a local sweep that did not finish; UserError while its runner still runs."""
    from hpcgpu.cli.sweep_view import task_row
    from hpcgpu.contract.procs import is_process

    if record.pid and record.host == os.uname().nodename and is_process(record.pid, record.pid_start):
        raise UserError(f"sweep {record.id} is still running (pid {record.pid})",
                        hint=f"wait for it, or stop it first: hpcgpu cancel {record.id}")
    return [t["index"] for t in record.tasks if task_row(record, t)["state"] != "DONE"]


def submit_slurm_sweep(request, dry_run: bool) -> int:
    from hpcgpu.backends.slurm import sweep as slurm_sweep

    if dry_run:
        click.echo(slurm_sweep.describe(request), nl=False)
        return 0
    record, job_id = slurm_sweep.submit(request)
    click.echo(f"hpcgpu: submitted sweep {record.id} as Slurm array job {job_id} ({len(record.tasks)} task(s), "
               f"{slurm_sweep.parallel_text(record.parallel, len(record.tasks))})")
    click.echo(f"  sweep dir: {record.sweep_dir}")
    click.echo(f"  status:    hpcgpu status {record.id}    logs: hpcgpu logs {record.id} --task N")
    return 0


def resume_slurm_sweep(record, dry_run: bool) -> int:
    from hpcgpu.backends.slurm import sweep as slurm_sweep

    job_id = slurm_sweep.resume(record, dry_run=dry_run)
    if dry_run:
        return 0
    if job_id is None:
        click.echo(f"hpcgpu: sweep {record.id}: every task has finished; nothing to resume")
        return 0
    click.echo(f"hpcgpu: resubmitted the unfinished tasks of sweep {record.id} as Slurm array job {job_id}")
    return 0


def find_sweep_for(ref: str, backend: str):
    """The sweep `ref` names, checked to be of this backend; None when it names none."""
    from hpcgpu.host.sweep_record import find_sweep

    record = find_sweep(ref)
    if record is not None and record.backend != backend:
        how = {"local": "hpcgpu run local --resume", "slurm": "hpcgpu submit slurm --resume"}[record.backend]
        raise UserError(f"sweep {record.id} ran on {record.backend}, not {backend}", hint=f"continue it with: {how} {record.id}")
    return record
