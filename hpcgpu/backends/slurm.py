"""The Slurm backend: submit a plan through submitit (one NodeCommand per node), then track it.

Without slurmdbd there is no sacct, so state comes from squeue / scontrol while Slurm remembers the
job, and from the run directory (result.json, written by node 0's agent) after.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from hpcgpu import exitcodes
from hpcgpu.errors import UserError
from hpcgpu.plan import Plan
from hpcgpu.runs import RunRecord, read_json, update_record
from hpcgpu.slurm_plan import folder_path, partition_fit_problem, valid_job_id


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def require_slurm() -> None:
    """Slurm's client tools must be on PATH and the controller must answer."""
    if shutil.which("sbatch") is None:
        raise UserError("Slurm is not available here: no `sbatch` on PATH",
                        hint="run this on a login node of your cluster, or use `hpcgpu run local`")
    try:
        out = _run(["sinfo", "-h", "-o", "%P"], timeout=20)
    except subprocess.TimeoutExpired:
        out = None
    if out is None or out.returncode != 0:
        detail = out.stderr.strip() if out is not None else "sinfo timed out"
        raise UserError(f"the Slurm controller does not answer: {detail}", hint="check `sinfo`; is slurmctld up?")


def check_fits(nodes: int, gpus_per_node: int, partition: str | None) -> None:
    """Refuse, before submitting, a request the partition can never run."""
    out = _run(["sinfo", "-h", "-o", "%P|%D|%G"])
    rows = out.stdout.splitlines()
    if partition is None:
        default = [r.split("|")[0] for r in rows if r.split("|")[0].endswith("*")]
        if not default:
            return  # no default partition: sbatch will say what it wants
        partition = default[0].rstrip("*")
    problem = partition_fit_problem(nodes, gpus_per_node, partition, rows)
    if problem:
        raise UserError(f"the job cannot run: {problem}", hint="see `sinfo -o '%P %D %G'`; change --nodes/--gpus-per-node/--partition")


class SlurmBackend:
    """Submits with submitit; status through squeue/scontrol; cancel with scancel."""

    name = "slurm"

    def launch(self, plan: Plan) -> str:
        """Submit; return the job id (also recorded in run.json)."""
        import submitit

        from hpcgpu.backends.slurm_job import NodeCommand
        from hpcgpu.envvars import is_secret

        params = dict(plan.extra["sbatch_parameters"])
        executor = submitit.SlurmExecutor(folder=folder_path(plan.run_dir), max_num_timeout=plan.spec.slurm.max_timeout_requeues,
                                          python=plan.extra["python"])
        executor.update_parameters(**params)
        env = {k: v for k, v in plan.env.items() if not is_secret(k)}  # secrets travel via sbatch's --export=ALL
        command = NodeCommand(list(plan.container_prefix) + list(plan.node_argv), env=env,
                              rdzv_dir=Path(plan.run_dir) / "rdzv", grace_s=plan.spec.distributed.stop_grace_s,
                              rdzv_timeout_s=plan.spec.distributed.rdzv_timeout_s)
        job = executor.submit(command)
        update_record(Path(plan.run_dir), job_id=str(job.job_id))
        return str(job.job_id)

    def status(self, record: RunRecord) -> str:
        info = self.job_info(record)
        return info.get("JobState", "UNKNOWN")

    def job_info(self, record: RunRecord) -> dict[str, str]:
        """JobState, NodeList, Restarts from scontrol while Slurm knows the job; else from the run dir."""
        if record.job_id and shutil.which("scontrol"):
            out = _run(["scontrol", "show", "job", "-o", valid_job_id(record.job_id)])
            if out.returncode == 0 and out.stdout.strip():
                fields = dict(kv.split("=", 1) for kv in out.stdout.split() if "=" in kv)
                state = fields.get("JobState", "UNKNOWN")
                if state == "COMPLETED":
                    state = _state_from_result(record) or state
                return {"JobState": state, "NodeList": fields.get("NodeList", ""), "Restarts": fields.get("Restarts", "0")}
        return {"JobState": _state_from_result(record) or "UNKNOWN"}

    def cancel(self, record: RunRecord) -> None:
        """scancel: ranks get SIGTERM, checkpoint within KillWait, and the job ends (not requeued)."""
        if not record.job_id:
            raise UserError(f"run {record.id} has no Slurm job id yet")
        out = _run(["scancel", valid_job_id(record.job_id)])
        if out.returncode != 0:
            raise UserError(f"scancel {record.job_id} failed: {out.stderr.strip()}")


def _state_from_result(record: RunRecord) -> str:
    result = read_json(Path(record.run_dir) / "result.json")
    if result is None:
        return ""
    return {exitcodes.OK: "DONE", exitcodes.STOPPED_RESUMABLE: "STOPPED"}.get(result.get("exit_code"), "FAILED")


def restore_secret_env(withheld: dict[str, str]) -> None:
    """Put the spec's secret env values into this process's environment so sbatch exports them
    (--export=ALL) without their values ever being written to the run dir or the script."""
    os.environ.update(withheld)
