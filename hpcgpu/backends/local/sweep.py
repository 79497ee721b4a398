"""`run local --sweep`: check every task's plan, then queue the tasks here (sweep_queue.py).

Every task gets the same slot: resources.gpus_per_node GPUs (`all` counts as 1 in a sweep,
--gpus-per-task sets it), or procs_per_node CPU ranks. Torch-free.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

from hpcgpu.backends.local.backend import LocalBackend
from hpcgpu.backends.local.sweep_queue import gpu_ids, gpu_slots, run_sweep, slot_count, sweep_exit_code
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import Plan
from hpcgpu.host.facts import HostFacts, gather_facts
from hpcgpu.host.sweep_launch import (SweepRequest, check_private_checkpoints, create_sweep_dir, describe_tasks,
                                      sweep_location, task_entries, task_run_spec)
from hpcgpu.host.sweep_record import SweepRecord


def gpus_per_task(request: SweepRequest) -> int:
    """GPUs each task runs on: resources.gpus_per_node, `all` taken as 1 (a sweep shares the GPUs)."""
    value = request.specs[0].resources.gpus_per_node
    return 1 if value == "all" else int(value)


def layout(request: SweepRequest, environ: Optional[dict] = None) -> tuple[list[tuple[str, ...]], HostFacts]:
    """The GPU sets tasks run on (none: CPU tasks), and the facts a task's plan sees in its slot."""
    environ = dict(os.environ if environ is None else environ)
    facts = gather_facts("local", environ)
    per_task = gpus_per_task(request)
    if not facts.visible_gpus or not per_task:
        return [], gather_facts("local", {**environ, "CUDA_VISIBLE_DEVICES": ""}) if per_task else facts
    sets = gpu_slots(gpu_ids(environ, facts.visible_gpus), per_task)
    if not sets:
        raise UserError(f"each sweep task asks for {per_task} GPUs (--gpus-per-task / resources.gpus_per_node); "
                        f"this machine shows {facts.visible_gpus}", hint="give --gpus-per-task 1, or fewer")
    return sets, gather_facts("local", {**environ, "CUDA_VISIBLE_DEVICES": ",".join(sets[0])})


def task_plans(request: SweepRequest, sweep_id: str, sweep_dir: str, facts: HostFacts) -> list[Plan]:
    """Every task's plan as it will run in a slot (facts: the slot's view); UserError for one that
    cannot, or for tasks that differ in size (a sweep's slots are all alike)."""
    backend, now = LocalBackend(), time.time()
    per_task = gpus_per_task(request)
    plans = []
    for spec, entry, task in zip(request.specs, task_entries(request, sweep_id, sweep_dir), request.tasks):
        if spec.resources.gpus_per_node == "all" and facts.visible_gpus:
            spec = spec.model_copy(update={"resources": spec.resources.model_copy(update={"gpus_per_node": per_task})})
        if spec.resources.nodes > 1:
            raise UserError(f"sweep task {task.index}: a local sweep runs each task on this machine (resources.nodes 1)",
                            hint="submit multi-node sweeps to Slurm: hpcgpu submit slurm --sweep ...")
        plans.append(backend.plan(task_run_spec(spec, sweep_dir), facts, run_id=entry["run_id"],
                                  run_dir=entry["run_dir"], created=now))
    sizes = {(p.device_type, p.nproc_per_node) for p in plans}
    if len(sizes) > 1:
        raise UserError("the tasks of a local sweep must all have the same size: they differ in "
                        + ", ".join(f"{n} rank(s) on {d}" for d, n in sorted(sizes)),
                        hint="do not sweep resources.* locally")
    check_private_checkpoints(plans, request.tasks)
    return plans


def describe(request: SweepRequest) -> str:
    """The dry run: the tasks, the slots, and task 0's plan."""
    sets, facts = layout(request)
    sweep_id, sweep_dir = sweep_location(request.base, facts.cwd)
    plans = task_plans(request, sweep_id, sweep_dir, facts)
    slots = slot_count(request.parallel, len(plans), len(sets), facts.cpus, plans[0].nproc_per_node)
    where = f"GPU sets {', '.join('+'.join(s) for s in sets[:slots])}" if sets else f"{plans[0].nproc_per_node} CPU rank(s) each"
    return (f"sweep id: {sweep_id} (local: queued on this machine)\nsweep dir: {sweep_dir}\n"
            + describe_tasks(task_entries(request, sweep_id, sweep_dir), f"{slots} at a time ({where})")
            + "\ntask 0's run (each task runs alike, with its own overrides, run dir and rendezvous):\n"
            + LocalBackend().describe(plans[0]))


def start(request: SweepRequest, say: Callable[[str], None]) -> tuple[SweepRecord, int]:
    """Create the sweep, run every task here; (record, exit status)."""
    sets, facts = layout(request)
    sweep_id, sweep_dir = sweep_location(request.base, facts.cwd)
    plans = task_plans(request, sweep_id, sweep_dir, facts)
    LocalBackend().preflight(plans[0])
    slots = slot_count(request.parallel, len(plans), len(sets), facts.cpus, plans[0].nproc_per_node)
    record = create_sweep_dir(request, sweep_id, sweep_dir, "local")
    say(f"sweep {sweep_id}: {len(plans)} task(s), {slots} at a time; sweep dir {sweep_dir}")
    codes = run_sweep(record, [t.index for t in request.tasks], slots, sets[:slots], say)
    return record, sweep_exit_code(codes)


def resume(record: SweepRecord, request: SweepRequest, indices: list[int], say: Callable[[str], None]) -> int:
    """Run the tasks `indices` (those that did not finish) of an existing sweep; exit status."""
    sets, facts = layout(request)
    plans = task_plans(request, record.id, record.sweep_dir, facts)
    slots = slot_count(record.parallel or request.parallel, len(indices), len(sets), facts.cpus, plans[0].nproc_per_node)
    say(f"sweep {record.id}: resuming {len(indices)} of {len(record.tasks)} task(s), {slots} at a time")
    return sweep_exit_code(run_sweep(record, indices, slots, sets[:slots], say))
