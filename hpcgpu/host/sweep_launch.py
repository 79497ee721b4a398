"""The one sweep flow behind `run local --sweep` and `submit slurm --sweep`: expand the spec into
tasks, check every task's spec and plan before anything is created, then hand the tasks to the
backend's queue (local: hpcgpu.backends.local.sweep_queue; Slurm: one job array,
hpcgpu.backends.slurm.array). Torch-free.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import Plan
from hpcgpu.contract.runfiles import make_private_dir, write_private_text
from hpcgpu.host.runs import new_run_id
from hpcgpu.host.spec import Spec, apply_overrides, dump_spec
from hpcgpu.host.sweep import SweepTask, expand, merge_grid, task_specs
from hpcgpu.host.sweep_record import SweepRecord, register_sweep


@dataclass(frozen=True)
class SweepRequest:
    """A checked sweep: the base spec (no sweep section), its tasks and their specs, and how to run them."""

    base: Spec
    tasks: list[SweepTask]
    specs: list[Spec]
    parallel: int
    metric: str
    goal: str


def sweep_request(spec: Spec, flag_grid: Mapping[str, Sequence[Any]], parallel: Optional[int] = None) -> Optional[SweepRequest]:
    """The sweep the spec's sweep: section and the --sweep flags ask for (None: neither does; one run).
    Every task's spec is validated here: a bad one raises UserError naming its index and key."""
    section = spec.sweep
    if section is None and not flag_grid:
        return None
    grid = merge_grid(section.grid if section else {}, flag_grid)
    base = spec.model_copy(update={"sweep": None})
    tasks = expand(grid, section.sets if section else [])
    return SweepRequest(base=base, tasks=tasks, specs=task_specs(base, tasks),
                        parallel=parallel if parallel is not None else (section.parallel if section else 0),
                        metric=section.metric if section else "final_loss",
                        goal=section.goal if section else "min")


def request_from_record(record: SweepRecord) -> SweepRequest:
    """The request a sweep was started with, from its sweep dir (for --resume)."""
    from hpcgpu.host.spec import load_spec

    base, _ = load_spec(Path(record.sweep_dir) / "spec.yaml")
    tasks = [SweepTask(t["index"], dict(t["overrides"])) for t in record.tasks]
    return SweepRequest(base=base, tasks=tasks, specs=task_specs(base, tasks), parallel=record.parallel,
                        metric=record.metric, goal=record.goal)


def sweep_location(base: Spec, cwd: str) -> tuple[str, str]:
    """A fresh sweep id and the absolute sweep dir it will get (nothing is created yet)."""
    sweep_id = new_run_id(base.name)
    return sweep_id, os.path.join(os.path.normpath(os.path.join(cwd, base.logging.dir)), sweep_id)


def task_run_id(sweep_id: str, index: int) -> str:
    return f"{sweep_id}-t{index}"


def task_run_spec(spec: Spec, sweep_dir: str) -> Spec:
    """A task's spec as its run records it: its run dir lies in the sweep dir."""
    return apply_overrides(spec, {"logging.dir": sweep_dir})


def task_entries(request: SweepRequest, sweep_id: str, sweep_dir: str) -> list[dict[str, Any]]:
    """sweep.json's task list."""
    return [{"index": t.index, "overrides": dict(t.overrides), "label": t.label(),
             "run_id": task_run_id(sweep_id, t.index), "run_dir": os.path.join(sweep_dir, t.dir_name())}
            for t in request.tasks]


def check_private_checkpoints(plans: Sequence[Plan], tasks: Sequence[SweepTask]) -> None:
    """Two tasks writing one checkpoint directory would resume from each other's state."""
    seen: dict[str, int] = {}
    for plan, task in zip(plans, tasks):
        if plan.ckpt_dir in seen:
            raise UserError(f"sweep tasks {seen[plan.ckpt_dir]} and {task.index} would share the checkpoint "
                            f"directory {plan.ckpt_dir} (checkpoint.dir)",
                            hint="drop checkpoint.dir from the spec: each task then keeps its checkpoints in its own run dir")
        seen[plan.ckpt_dir] = task.index


def create_sweep_dir(request: SweepRequest, sweep_id: str, sweep_dir: str, backend: str) -> SweepRecord:
    """The sweep dir with the base spec and sweep.json, registered in the sweep index."""
    from hpcgpu.host.launch import check_runs_base, make_dirs

    check_runs_base(request.base.logging.dir, os.path.dirname(sweep_dir))
    make_dirs(os.path.dirname(sweep_dir))
    try:
        os.mkdir(sweep_dir, 0o700)
    except FileExistsError:
        raise UserError(f"{sweep_dir} exists already", hint="start the sweep again: it gets a new id") from None
    write_private_text(Path(sweep_dir) / "spec.yaml", dump_spec(request.base))
    record = SweepRecord(id=sweep_id, sweep_dir=sweep_dir, backend=backend, created=time.time(),
                         tasks=task_entries(request, sweep_id, sweep_dir), metric=request.metric,
                         goal=request.goal, parallel=request.parallel, cwd=os.getcwd())
    register_sweep(record)
    make_private_dir(Path(sweep_dir) / "tasks")
    return record


def remove_sweep_dir(sweep_dir: str) -> None:
    """A refused submission leaves no trace but the error (index lines whose dir is gone are skipped)."""
    shutil.rmtree(sweep_dir, ignore_errors=True)


def describe_tasks(record_tasks: Sequence[dict[str, Any]], parallel_text: str) -> str:
    """The dry run's task list: index, overrides, run dir name."""
    lines = [f"sweep:    {len(record_tasks)} task(s), {parallel_text}"]
    for t in record_tasks:
        lines.append(f"  task {t['index']:>3}  {t['label'] or '(base spec)':<40}  {os.path.basename(t['run_dir'])}")
    return "\n".join(lines) + "\n"
