"""A sweep on Slurm: one job array, array index = task index, one NodeCommand per task.

Every task is a whole run (its own run dir, plan.json, checkpoints and rendezvous files), so the
preemption chain works per task: USR2 to task 3 makes its node 0 checkpoint and submitit requeue
`JOBID_3` alone (`scontrol requeue` of an array task), which resumes from task 3's checkpoint.
The script is rendered by submitit's renderer like a single job's (`--array`, logs named
%A_%a_...), and is submitted byte for byte as the dry run prints it. A `--resume` of a sweep
submits a new array of the unfinished tasks' indices only (`--array=1,3`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from hpcgpu.backends.slurm.planner import render_sbatch
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import Plan


def array_range(indices: Sequence[int]) -> str:
    """[0, 1, 2, 3, 5, 7, 8] -> '0-3,5,7-8' (sbatch --array syntax)."""
    parts: list[str] = []
    ordered = sorted(set(indices))
    start = prev = ordered[0]
    for i in [*ordered[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


def array_parameters(params: Mapping[str, Any], indices: Sequence[int], parallel: int) -> dict[str, Any]:
    """The tasks' common sbatch parameters as an array of `indices`, at most `parallel` at once
    (0: no throttle). map_count makes submitit name logs %A_%a; --array itself is set explicitly,
    so a resumed sweep's array holds only its unfinished task indices."""
    out = dict(params)
    out["map_count"] = len(indices)
    throttle = f"%{parallel}" if parallel and parallel < len(indices) else ""
    out["additional_parameters"] = {**dict(params.get("additional_parameters") or {}),
                                    "array": array_range(indices) + throttle}
    return out


def common_parameters(plans: Sequence[Plan], labels: Sequence[str]) -> dict[str, Any]:
    """The sbatch parameters every task shares (an array job has one request); UserError naming the
    first parameter a task changes."""
    first = plans[0].request["sbatch_parameters"]
    for plan, label in zip(plans[1:], labels[1:]):
        params = plan.request["sbatch_parameters"]
        for key in sorted(set(first) | set(params)):
            if first.get(key) != params.get(key):
                raise UserError(
                    f"sweep task {label} changes the Slurm request ({key}: {first.get(key)!r} -> {params.get(key)!r}); "
                    "the tasks of one job array share one request",
                    hint="sweep only values that leave nodes, GPUs, CPUs, memory, time and partition alone, "
                         "or submit one sweep per request")
    return dict(first)


def array_script(plans: Sequence[Plan], labels: Sequence[str], indices: Sequence[int], parallel: int, folder: str) -> str:
    """The array job's sbatch script, exactly as submitted."""
    params = array_parameters(common_parameters(plans, labels), indices, parallel)
    return render_sbatch(params, folder, plans[0].request["python"])


def submit_array(plans: Sequence[Plan], indices: Sequence[int], script: str, folder: str,
                 withheld: Mapping[str, str]) -> str:
    """Submit one array job whose task `indices[k]` runs plans[k]'s nodes; the array's job id.
    As submitit's own array submission (slurm.py, _internal_process_submissions), with the planned
    script: one pickle per task, one sbatch, then each pickle renamed for its JOBID_INDEX."""
    from submitit.core.utils import DelayedSubmission, JobPaths
    from submitit.slurm.slurm import SlurmJob

    from hpcgpu.backends.slurm.backend import _executor, node_command, submitting

    executor = _executor(plans[0], script=script, folder=folder)
    executor.update_parameters(nodes=plans[0].nodes, ntasks_per_node=1, time=plans[0].request["time_limit_min"])
    staging = JobPaths.get_first_id_independent_folder(executor.folder)
    staging.mkdir(parents=True, exist_ok=True)
    pickles = []
    for plan, index in zip(plans, indices):
        delayed = DelayedSubmission(node_command(plan))
        delayed.set_timeout(plan.request["time_limit_min"] or 5, plan.request["max_timeout_requeues"])
        path = staging / f".task{index}.pkl"
        delayed.dump(path)
        pickles.append(path)
    try:
        with submitting(withheld):
            first = executor._submit_command(executor._submitit_command_str)
    except BaseException:
        for path in pickles:
            path.unlink(missing_ok=True)
        raise
    for index, path in zip(indices, pickles):
        SlurmJob(folder=executor.folder, job_id=f"{first.job_id}_{index}", tasks=[0]).paths.move_temporary_file(
            path, "submitted_pickle")
    return str(first.job_id)
