"""`submit slurm --sweep`: plan every task, create their run dirs, submit one job array.

Task i is array index i: `JOBID_i` in squeue, `hpcgpu status SWEEP` per task. `--resume SWEEP`
continues the tasks that did not finish (resumed plans, same run dirs) in a new array of their
indices. Torch-free.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional, Sequence

from hpcgpu.backends.slurm.array import array_script, submit_array
from hpcgpu.backends.slurm.backend import SlurmBackend
from hpcgpu.backends.slurm.planner import describe_slurm
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import Plan
from hpcgpu.host.facts import HostFacts, gather_facts
from hpcgpu.host.launch import create_run
from hpcgpu.host.runs import find_run, update_record
from hpcgpu.host.secrets import withheld
from hpcgpu.host.sweep_launch import (SweepRequest, check_private_checkpoints, create_sweep_dir, describe_tasks,
                                      remove_sweep_dir, sweep_location, task_entries, task_run_spec)
from hpcgpu.host.sweep_record import SweepRecord, update_sweep


def submitit_folder(sweep_dir: str) -> str:
    """The array's submitit folder: its script, one pickle per task, per-node logs %A_%a_%t."""
    return f"{sweep_dir}/submitit"


def task_plans(request: SweepRequest, sweep_id: str, sweep_dir: str, facts: HostFacts) -> list[Plan]:
    backend, now = SlurmBackend(), time.time()
    entries = task_entries(request, sweep_id, sweep_dir)
    plans = [backend.plan(task_run_spec(spec, sweep_dir), facts, run_id=e["run_id"], run_dir=e["run_dir"], created=now)
             for spec, e in zip(request.specs, entries)]
    check_private_checkpoints(plans, request.tasks)
    return plans


def _labels(request: SweepRequest) -> list[str]:
    return [f"{t.index} ({t.label()})" for t in request.tasks]


def parallel_text(parallel: int, tasks: int) -> str:
    return f"at most {parallel} at once (--array %{parallel})" if parallel and parallel < tasks else "all at once"


def describe(request: SweepRequest, facts: Optional[HostFacts] = None) -> str:
    """The dry run: the tasks, the one array script, and task 0's plan (every task's is alike)."""
    facts = facts or gather_facts("slurm")
    sweep_id, sweep_dir = sweep_location(request.base, facts.cwd)
    plans = task_plans(request, sweep_id, sweep_dir, facts)
    indices = [t.index for t in request.tasks]
    script = array_script(plans, _labels(request), indices, request.parallel, submitit_folder(sweep_dir))
    return (f"sweep id: {sweep_id} (slurm: one job array)\nsweep dir: {sweep_dir}\n"
            + describe_tasks(task_entries(request, sweep_id, sweep_dir), parallel_text(request.parallel, len(indices)))
            + f"\n--- array sbatch script ---\n{script}--- end ---\n\n"
            + "task 0's run (each task runs alike, with its own overrides, run dir and rendezvous):\n"
            + describe_slurm(plans[0]).split("\n--- sbatch script ---")[0] + "\n")


def submit(request: SweepRequest) -> tuple[SweepRecord, str]:
    """Create the sweep dir and every task's run dir, submit the array; (record, array job id).
    A refused submission leaves nothing behind."""
    backend = SlurmBackend()
    facts = gather_facts("slurm")
    sweep_id, sweep_dir = sweep_location(request.base, facts.cwd)
    plans = task_plans(request, sweep_id, sweep_dir, facts)
    backend.preflight(plans[0])  # one request for all: Slurm answers, it fits, the container runtime is there
    indices = [t.index for t in request.tasks]
    script = array_script(plans, _labels(request), indices, request.parallel, submitit_folder(sweep_dir))
    record = create_sweep_dir(request, sweep_id, sweep_dir, "slurm")
    try:
        created = [create_run(plan, task_run_spec(spec, sweep_dir), facts, lambda: plan, fixed=True)
                   for plan, spec in zip(plans, request.specs)]
        job_id = submit_array(created, indices, script, submitit_folder(sweep_dir),
                              withheld(request.base.env, request.base.secret_env))
    except BaseException:
        remove_sweep_dir(sweep_dir)
        raise
    _record_job(record, created, indices, job_id)
    return record, job_id


def _record_job(record: SweepRecord, plans: Sequence[Plan], indices: Sequence[int], job_id: str) -> None:
    for plan, index in zip(plans, indices):
        update_record(Path(plan.run_dir), job_id=f"{job_id}_{index}")
    update_sweep(record.sweep_dir, job_ids=[*record.job_ids, job_id])


def unfinished(record: SweepRecord) -> list[dict]:
    """The tasks that did not finish: stopped, cancelled, timed out, failed. UserError while any
    task is still pending or running (resubmitting it would run it twice)."""
    from hpcgpu.contract.states import RunState

    backend, out = SlurmBackend(), []
    for task in record.tasks:
        state = backend.status(find_run(task["run_dir"])).state
        if state is RunState.DONE:
            continue
        if not state.resumable:
            raise UserError(f"sweep {record.id}: task {task['index']} is not over ({state})",
                            hint=f"a requeued task resumes by itself; to resubmit, end it first: "
                                 f"hpcgpu cancel {record.id} --task {task['index']}")
        out.append(task)
    return out


def resume(record: SweepRecord, dry_run: bool = False) -> Optional[str]:
    """Submit a new array of the unfinished tasks, each resuming its own run; its job id (None when
    every task finished). dry_run: print it instead."""
    from hpcgpu.host.launch import begin_resumed_attempt, resume_plan, write_plan

    tasks = unfinished(record)
    if not tasks:
        return None
    cwd = os.getcwd()
    plans = []
    for task in tasks:
        _, plan = resume_plan(task["run_dir"], "slurm")
        plans.append(plan)
    os.chdir(cwd)
    indices = [t["index"] for t in tasks]
    script = array_script(plans, [f"{t['index']} ({t['label']})" for t in tasks], indices, record.parallel,
                          submitit_folder(record.sweep_dir))
    if dry_run:
        print(describe_tasks(tasks, parallel_text(record.parallel, len(tasks)))
              + f"\n--- array sbatch script ---\n{script}--- end ---", flush=True)
        return None
    SlurmBackend().preflight(plans[0])
    spec_env = _base_env(record)
    undo = []
    for plan in plans:
        undo.append(begin_resumed_attempt(find_run(plan.run_dir)))
        write_plan(plan)
    try:
        job_id = submit_array(plans, indices, script, submitit_folder(record.sweep_dir), withheld(*spec_env))
    except UserError:  # sbatch refused: every task as it was
        for put_back in undo:
            put_back()
        raise
    _record_job(record, plans, indices, job_id)
    return job_id


def _base_env(record: SweepRecord):
    from hpcgpu.host.spec import load_spec

    base, _ = load_spec(Path(record.sweep_dir) / "spec.yaml")
    return base.env, base.secret_env
